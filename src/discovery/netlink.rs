//! Route netlink sockets: the dump of links and addresses, and the event
//! subscription that keeps them current.
//!
//! Sockets are driven here rather than through rtnetlink's connection,
//! which parses every attribute of every message and buffers a whole dump
//! before handing any of it over (about 16 KiB a link: 30 MiB for 2000
//! links). Here each datagram is parsed as it arrives ([`super::wire`]).

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use super::wire::{self, Event, Frame};
use crate::inventory::Link;

/// Receive buffer asked for the event socket: room for a burst of a few
/// thousand link messages before the kernel reports an overrun.
pub const EVENT_RCVBUF: usize = 8 << 20;

/// Large enough for any datagram the kernel sends on a route socket.
const DATAGRAM: usize = 64 << 10;

/// A dump the kernel flags as inconsistent (links changed under it) is
/// retried this many times; after that the event stream corrects it.
const DUMP_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("the kernel refused the dump: {0}")]
    Refused(io::Error),
    #[error("malformed netlink datagram: {0}")]
    Decode(String),
}

/// Everything one dump saw.
#[derive(Debug, Default)]
pub struct Dumped {
    pub links: Vec<Link>,
    /// (link index, address)
    pub addresses: Vec<(u32, IpNet)>,
}

/// Dumps every link, then every address, of the calling thread's
/// namespace. Uses sockets of its own, so a dump abandoned half way leaves
/// nothing behind.
pub async fn dump() -> Result<Dumped, NetlinkError> {
    let mut dumped = Dumped::default();
    let links = wire::getlink_request(LinkMessage::default(), NLM_F_REQUEST | NLM_F_DUMP);
    dump_consistent(&links, |e| {
        if let Event::New(link) = e {
            dumped.links.push(*link);
        }
    })
    .await?;
    let addresses = wire::getaddr_request(NLM_F_REQUEST | NLM_F_DUMP);
    dump_consistent(&addresses, |e| {
        if let Event::Address { index, net, .. } = e {
            dumped.addresses.push((index, net));
        }
    })
    .await?;
    Ok(dumped)
}

/// One dump request, retried while the kernel flags it interrupted.
async fn dump_consistent(request: &[u8], mut f: impl FnMut(Event)) -> Result<(), NetlinkError> {
    let mut events = Vec::new();
    for attempt in 1..=DUMP_ATTEMPTS {
        events.clear();
        let interrupted = dump_attempt(request, &mut |e| events.push(e)).await?;
        if !interrupted {
            break;
        }
        tracing::debug!("netlink dump interrupted by changes (attempt {attempt})");
    }
    events.into_iter().for_each(&mut f);
    Ok(())
}

async fn dump_attempt(request: &[u8], f: &mut impl FnMut(Event)) -> Result<bool, NetlinkError> {
    let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
    sock.socket_mut().bind_auto()?;
    sock.send_to(request, &SocketAddr::new(0, 0)).await?;

    let mut buf = Vec::with_capacity(DATAGRAM);
    let mut interrupted = false;
    loop {
        buf.clear();
        sock.recv(&mut buf).await?;
        let mut done = false;
        let mut refused = None;
        interrupted |= wire::parse_datagram(&buf, |frame| match frame {
            Frame::Event(e) => f(e),
            Frame::Done => done = true,
            Frame::Error(code) if code < 0 => refused = Some(code),
            _ => {}
        })
        .map_err(|e| NetlinkError::Decode(e.to_string()))?;
        if let Some(code) = refused {
            return Err(NetlinkError::Refused(io::Error::from_raw_os_error(-code)));
        }
        if done {
            return Ok(interrupted);
        }
    }
}

/// A socket subscribed to link and address events.
pub struct EventSocket {
    sock: TokioSocket,
    buf: Vec<u8>,
}

impl EventSocket {
    /// Joins the link and address multicast groups with a receive buffer
    /// of `rcvbuf` bytes (past `rmem_max` when we have CAP_NET_ADMIN).
    pub fn subscribe(rcvbuf: usize) -> Result<Self, NetlinkError> {
        let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
        sock.socket_mut()
            .bind(&SocketAddr::new(0, wire::EVENT_GROUPS))?;
        set_rcvbuf(&sock, rcvbuf);
        Ok(EventSocket {
            sock,
            buf: Vec::with_capacity(DATAGRAM),
        })
    }

    /// Waits for one datagram and appends its events. An overrun (ENOBUFS)
    /// becomes [`Event::Overrun`]. Cancel-safe: a datagram is either fully
    /// read and queued, or not read at all.
    pub async fn recv(&mut self, out: &mut VecDeque<Event>) -> Result<(), NetlinkError> {
        self.buf.clear();
        match self.sock.recv(&mut self.buf).await {
            Ok(()) => {
                self.queue(out);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                out.push_back(Event::Overrun);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Appends the events of every datagram already waiting, without
    /// blocking: a burst is applied as one batch.
    pub fn drain(&mut self, out: &mut VecDeque<Event>) -> Result<(), NetlinkError> {
        loop {
            self.buf.clear();
            match self
                .sock
                .socket_ref()
                .recv(&mut self.buf, nix::libc::MSG_DONTWAIT)
            {
                Ok(_) => self.queue(out),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    out.push_back(Event::Overrun)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn queue(&self, out: &mut VecDeque<Event>) {
        let parsed = wire::parse_datagram(&self.buf, |frame| {
            if let Frame::Event(e) = frame {
                out.push_back(e);
            }
        });
        if let Err(e) = parsed {
            // Whatever was lost, a dump recovers it.
            tracing::warn!("undecodable netlink event ({e}); re-reading every link");
            out.push_back(Event::Overrun);
        }
    }
}

/// Sets the receive buffer, forcing past `rmem_max` when allowed, else as
/// far as the limit allows; either way overruns are handled.
fn set_rcvbuf(sock: &TokioSocket, size: usize) {
    use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
    let fd = sock.as_raw_fd();
    // SAFETY: `sock` owns `fd` and outlives this borrow, used only here.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if setsockopt(&borrowed, RcvBufForce, &size).is_err() {
        let capped = i32::try_from(size).unwrap_or(i32::MAX);
        if let Err(e) = sock.socket_ref().set_rx_buf_sz(capped) {
            tracing::debug!("could not set the netlink receive buffer: {e}");
        }
    }
}
