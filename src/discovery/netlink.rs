//! Route netlink for links: the dump, the link-event subscription, and the
//! pure translation of link messages into inventory [`Link`]s.
//!
//! Sockets are driven here rather than through rtnetlink's connection,
//! which parses every attribute of every message and buffers a whole dump
//! before handing any of it over (about 16 KiB a link: 30 MiB for 2000
//! links). Here each datagram is parsed as it arrives, only the attributes
//! the inventory uses are decoded, and one that fails to decode is skipped
//! instead of ending the stream.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;

use rtnetlink::packet_core::ParseableParametrized;
use rtnetlink::packet_core::{
    DecodeError, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage,
    NlasIterator,
};
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkExtentMask, LinkFlags, LinkHeader, LinkInfo, LinkLayerType,
    LinkMessage, Prop, State,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use crate::inventory::{Interface, Link, LinkKind, OperState, format_mac};

/// Receive buffer asked for the event socket: room for a burst of a few
/// thousand link messages before the kernel reports an overrun.
pub const EVENT_RCVBUF: usize = 8 << 20;

/// Large enough for any datagram the kernel sends on a route socket.
const DATAGRAM: usize = 64 << 10;

const RTNLGRP_LINK: u32 = 1;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
/// The link header precedes the attributes in every link message.
const LINK_HEADER_LEN: usize = 16;
/// A dump the kernel flags as inconsistent (links changed under it) is
/// retried this many times; after that the event stream corrects it.
const DUMP_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("the kernel refused the link dump: {0}")]
    Refused(io::Error),
    #[error("malformed netlink datagram: {0}")]
    Decode(String),
}

/// What one netlink message means for the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link exists with these facts (dump reply or RTM_NEWLINK).
    New(Box<Link>),
    /// The link with this index is gone.
    Removed(u32),
    /// Messages were lost: only a fresh dump tells the truth now.
    Overrun,
}

/// One message of a datagram, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Event(LinkEvent),
    /// End of a dump.
    Done,
    /// An error (or, with 0, an ack) answering a request.
    Error(i32),
    /// Anything else: bridge-family link messages, other types.
    Skip,
}

/// Classifies every message in one datagram. Bridge-family link messages
/// share the link group but describe bridge port state, not links, so they
/// are skipped (a bridge-family DELLINK only means "left the bridge").
/// Returns whether the kernel flagged the messages as an interrupted dump.
pub fn parse_datagram(mut buf: &[u8], mut f: impl FnMut(Frame)) -> Result<bool, DecodeError> {
    let mut interrupted = false;
    while !buf.is_empty() {
        let msg = NetlinkBuffer::new_checked(buf)?;
        let len = msg.length() as usize;
        interrupted |= msg.flags() & NLM_F_DUMP_INTR != 0;
        let payload = msg.payload();
        f(match msg.message_type() {
            RTM_NEWLINK => match link_from_payload(payload) {
                Some((AddressFamily::Unspec, link)) => Frame::Event(LinkEvent::New(Box::new(link))),
                _ => Frame::Skip,
            },
            RTM_DELLINK => match LinkHeader::parse(payload) {
                Ok(h) if h.interface_family == AddressFamily::Unspec => {
                    Frame::Event(LinkEvent::Removed(h.index))
                }
                _ => Frame::Skip,
            },
            NLMSG_DONE => Frame::Done,
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                Frame::Error(code)
            }
            NLMSG_OVERRUN => Frame::Event(LinkEvent::Overrun),
            _ => Frame::Skip,
        });
        // Messages are 4-byte aligned within a datagram.
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or_default();
    }
    Ok(interrupted)
}

/// The facts of a link message (header + attributes). Only the attributes
/// the inventory uses are decoded; one that fails to decode is left out.
/// The kind is provisional for links without a kernel kind: `Other` until
/// sysfs shows a device. `None` without a header or a name.
pub fn link_from_payload(payload: &[u8]) -> Option<(AddressFamily, Link)> {
    let header = LinkHeader::parse(payload).ok()?;
    let mut facts = Facts::new(&header);
    for nla in NlasIterator::new(payload.get(LINK_HEADER_LEN..)?) {
        let Ok(nla) = nla else { break };
        if !WANTED.contains(&nla.kind()) {
            continue;
        }
        if let Ok(attr) = LinkAttribute::parse_with_param(&nla, header.interface_family) {
            facts.apply(&attr);
        }
    }
    Some((header.interface_family, facts.finish(&header)?))
}

/// The same translation from an already parsed message.
pub fn link_from_message(msg: &LinkMessage) -> Option<Link> {
    let mut facts = Facts::new(&msg.header);
    for attr in &msg.attributes {
        facts.apply(attr);
    }
    facts.finish(&msg.header)
}

/// IFLA_ADDRESS, IFNAME, MTU, MASTER, OPERSTATE, LINKINFO, IFALIAS,
/// PROP_LIST, PERM_ADDRESS.
const WANTED: [u16; 9] = [1, 3, 4, 10, 16, 18, 20, 52, 54];

struct Facts {
    iface: Interface,
    name: Option<String>,
    master_index: Option<u32>,
    info_kind: Option<String>,
}

impl Facts {
    fn new(header: &LinkHeader) -> Self {
        let mut iface = Interface::new("", header.index, LinkKind::Other);
        // IFF_LOWER_UP is "running with carrier": IFLA_CARRIER alone stays
        // set on some links that are administratively down.
        iface.carrier = header.flags.contains(LinkFlags::LowerUp);
        Facts {
            iface,
            name: None,
            master_index: None,
            info_kind: None,
        }
    }

    fn apply(&mut self, attr: &LinkAttribute) {
        let iface = &mut self.iface;
        match attr {
            LinkAttribute::IfName(n) => self.name = Some(n.clone()),
            LinkAttribute::Address(a) if !a.is_empty() => iface.mac = Some(format_mac(a)),
            LinkAttribute::PermAddress(a) if a.iter().any(|b| *b != 0) => {
                iface.permanent_mac = Some(format_mac(a))
            }
            LinkAttribute::Mtu(m) => iface.mtu = *m,
            LinkAttribute::OperState(s) => iface.oper_state = oper_state(*s),
            LinkAttribute::Controller(m) if *m != 0 => self.master_index = Some(*m),
            LinkAttribute::IfAlias(a) if !a.is_empty() => iface.alias = Some(a.clone()),
            LinkAttribute::PropList(props) => {
                iface.alt_names = props
                    .iter()
                    .filter_map(|p| match p {
                        Prop::AltIfName(n) => Some(n.clone()),
                        _ => None,
                    })
                    .collect();
            }
            LinkAttribute::LinkInfo(infos) => {
                self.info_kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(kind_name(k)),
                    _ => None,
                });
            }
            _ => {}
        }
    }

    fn finish(mut self, header: &LinkHeader) -> Option<Link> {
        self.iface.name = self.name?;
        self.iface.kind = match self.info_kind {
            Some(kind) => LinkKind::Virtual(kind),
            None if header.link_layer_type == LinkLayerType::Loopback => LinkKind::Loopback,
            None => LinkKind::Other,
        };
        Some(Link {
            interface: self.iface,
            master_index: self.master_index,
        })
    }
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Other(s) => s.clone(),
        k => k.to_string(),
    }
}

fn oper_state(s: State) -> OperState {
    match s {
        State::Up => OperState::Up,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Dormant => OperState::Dormant,
        State::Testing => OperState::Testing,
        State::NotPresent => OperState::NotPresent,
        _ => OperState::Unknown,
    }
}

/// Dumps every link of the calling thread's namespace, handing each to `f`
/// as it is parsed. Uses a socket of its own, so a dump abandoned half way
/// leaves nothing behind.
pub async fn dump(mut f: impl FnMut(Link)) -> Result<(), NetlinkError> {
    let mut links = Vec::new();
    for attempt in 1..=DUMP_ATTEMPTS {
        links.clear();
        let interrupted = dump_attempt(&mut |l| links.push(l)).await?;
        if !interrupted {
            break;
        }
        tracing::debug!("link dump interrupted by changes (attempt {attempt})");
    }
    links.into_iter().for_each(&mut f);
    Ok(())
}

/// An RTM_GETLINK request without statistics (large, never published).
fn getlink_request(mut request: LinkMessage, flags: u16) -> Vec<u8> {
    request
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetLink(request));
    msg.header.flags = flags;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut out = vec![0; msg.buffer_len()];
    msg.serialize(&mut out);
    out
}

async fn dump_attempt(f: &mut impl FnMut(Link)) -> Result<bool, NetlinkError> {
    let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
    sock.socket_mut().bind_auto()?;
    let request = getlink_request(LinkMessage::default(), NLM_F_REQUEST | NLM_F_DUMP);
    sock.send_to(&request, &SocketAddr::new(0, 0)).await?;

    let mut buf = Vec::with_capacity(DATAGRAM);
    let mut interrupted = false;
    loop {
        buf.clear();
        sock.recv(&mut buf).await?;
        let mut done = false;
        let mut refused = None;
        interrupted |= parse_datagram(&buf, |frame| match frame {
            Frame::Event(LinkEvent::New(link)) => f(*link),
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

/// Which link [`lookup`] asks for.
#[derive(Clone, Copy, Debug)]
pub enum LinkKey<'a> {
    Index(u32),
    Name(&'a str),
}

/// Looks up one link, blocking: one request, one reply. For the CNI plugin,
/// which runs no async runtime. `None` when there is no such link.
pub fn lookup(key: LinkKey<'_>) -> Result<Option<Link>, NetlinkError> {
    let mut sock = rtnetlink::sys::Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    let mut request = LinkMessage::default();
    match key {
        LinkKey::Index(index) => request.header.index = index,
        LinkKey::Name(name) => request.attributes.push(LinkAttribute::IfName(name.into())),
    }
    sock.send_to(
        &getlink_request(request, NLM_F_REQUEST),
        &SocketAddr::new(0, 0),
        0,
    )?;
    loop {
        let (buf, _) = sock.recv_from_full()?;
        let mut found = None;
        let mut refused = None;
        parse_datagram(&buf, |frame| match frame {
            Frame::Event(LinkEvent::New(link)) => found = Some(*link),
            Frame::Error(code) if code < 0 => refused = Some(-code),
            _ => {}
        })
        .map_err(|e| NetlinkError::Decode(e.to_string()))?;
        match (found, refused) {
            (Some(link), _) => return Ok(Some(link)),
            (None, Some(nix::libc::ENODEV)) => return Ok(None),
            (None, Some(errno)) => {
                return Err(NetlinkError::Refused(io::Error::from_raw_os_error(errno)));
            }
            (None, None) => continue,
        }
    }
}

/// A socket subscribed to link events.
pub struct EventSocket {
    sock: TokioSocket,
    buf: Vec<u8>,
}

impl EventSocket {
    /// Joins the link multicast group with a receive buffer of `rcvbuf`
    /// bytes (past `rmem_max` when we have CAP_NET_ADMIN).
    pub fn subscribe(rcvbuf: usize) -> Result<Self, NetlinkError> {
        let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
        sock.socket_mut()
            .bind(&SocketAddr::new(0, 1 << (RTNLGRP_LINK - 1)))?;
        set_rcvbuf(&sock, rcvbuf);
        Ok(EventSocket {
            sock,
            buf: Vec::with_capacity(DATAGRAM),
        })
    }

    /// Waits for one datagram and appends its events. An overrun (ENOBUFS)
    /// becomes [`LinkEvent::Overrun`]. Cancel-safe: a datagram is either
    /// fully read and queued, or not read at all.
    pub async fn recv(&mut self, out: &mut VecDeque<LinkEvent>) -> Result<(), NetlinkError> {
        self.buf.clear();
        match self.sock.recv(&mut self.buf).await {
            Ok(()) => self.queue(out),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                out.push_back(LinkEvent::Overrun);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Appends the events of every datagram already waiting, without
    /// blocking: a burst is applied as one batch.
    pub fn drain(&mut self, out: &mut VecDeque<LinkEvent>) -> Result<(), NetlinkError> {
        loop {
            self.buf.clear();
            match self
                .sock
                .socket_ref()
                .recv(&mut self.buf, nix::libc::MSG_DONTWAIT)
            {
                Ok(_) => self.queue(out)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    out.push_back(LinkEvent::Overrun)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn queue(&self, out: &mut VecDeque<LinkEvent>) -> Result<(), NetlinkError> {
        let parsed = parse_datagram(&self.buf, |frame| {
            if let Frame::Event(e) = frame {
                out.push_back(e);
            }
        });
        if let Err(e) = parsed {
            // Whatever was lost, a dump recovers it.
            tracing::warn!("undecodable link event ({e}); re-reading every link");
            out.push_back(LinkEvent::Overrun);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(family: AddressFamily) -> LinkHeader {
        LinkHeader {
            interface_family: family,
            index: 5,
            link_layer_type: LinkLayerType::Ether,
            flags: LinkFlags::Up | LinkFlags::LowerUp,
            ..Default::default()
        }
    }

    /// A datagram as the kernel would send it.
    fn datagram(msgs: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            let mut m = NetlinkMessage::from(m);
            m.finalize();
            let mut buf = vec![0; m.buffer_len()];
            m.serialize(&mut buf);
            buf.resize((buf.len() + 3) & !3, 0);
            out.extend(buf);
        }
        out
    }

    fn sv_a(family: AddressFamily) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.header = header(family);
        msg.attributes = vec![
            LinkAttribute::IfName("sv-a".into()),
            LinkAttribute::Address(vec![2, 0xaa, 0, 0, 0, 1]),
            LinkAttribute::PermAddress(vec![0; 6]),
            LinkAttribute::Mtu(9000),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Controller(9),
            LinkAttribute::IfAlias("green-uplink".into()),
            LinkAttribute::PropList(vec![Prop::AltIfName("alt0".into())]),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
            LinkAttribute::TxQueueLen(1000),
        ];
        msg
    }

    fn frames(buf: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        parse_datagram(buf, |f| out.push(f)).unwrap();
        out
    }

    #[test]
    fn facts_come_from_the_wire_bytes() {
        let buf = datagram(vec![RouteNetlinkMessage::NewLink(sv_a(
            AddressFamily::Unspec,
        ))]);
        let [Frame::Event(LinkEvent::New(link))] = &frames(&buf)[..] else {
            panic!("{:?}", frames(&buf));
        };
        let i = &link.interface;
        assert_eq!(i.name, "sv-a");
        assert_eq!(i.index, 5);
        assert_eq!(i.mac.as_deref(), Some("02:aa:00:00:00:01"));
        assert_eq!(i.permanent_mac, None, "an all-zero permanent MAC is no MAC");
        assert_eq!(i.mtu, 9000);
        assert!(i.carrier);
        assert_eq!(i.oper_state, OperState::Up);
        assert_eq!(i.alias.as_deref(), Some("green-uplink"));
        assert_eq!(i.alt_names, vec!["alt0".to_string()]);
        assert_eq!(i.kind, LinkKind::Virtual("veth".into()));
        assert_eq!(link.master_index, Some(9));
        // Both translations agree.
        assert_eq!(
            Some(&**link),
            link_from_message(&sv_a(AddressFamily::Unspec)).as_ref()
        );
    }

    #[test]
    fn kindless_links_are_provisional_and_nameless_ones_dropped() {
        let mut msg = LinkMessage::default();
        msg.header = header(AddressFamily::Unspec);
        msg.attributes = vec![LinkAttribute::IfName("ens4".into())];
        assert_eq!(
            link_from_message(&msg).unwrap().interface.kind,
            LinkKind::Other
        );
        msg.header.link_layer_type = LinkLayerType::Loopback;
        assert_eq!(
            link_from_message(&msg).unwrap().interface.kind,
            LinkKind::Loopback
        );
        msg.attributes.clear();
        assert!(link_from_message(&msg).is_none());
    }

    #[test]
    fn bridge_family_messages_are_skipped() {
        let buf = datagram(vec![
            RouteNetlinkMessage::DelLink(sv_a(AddressFamily::Bridge)),
            RouteNetlinkMessage::NewLink(sv_a(AddressFamily::Bridge)),
            RouteNetlinkMessage::DelLink(sv_a(AddressFamily::Unspec)),
        ]);
        assert_eq!(
            frames(&buf),
            vec![
                Frame::Skip,
                Frame::Skip,
                Frame::Event(LinkEvent::Removed(5))
            ]
        );
    }

    #[test]
    fn truncated_and_garbage_datagrams_never_panic() {
        let buf = datagram(vec![RouteNetlinkMessage::NewLink(sv_a(
            AddressFamily::Unspec,
        ))]);
        for cut in 0..buf.len() {
            let _ = parse_datagram(&buf[..cut], |_| {});
        }
        // A link whose attribute area is cut mid-attribute keeps what parsed.
        let payload = &buf[16..];
        for cut in 0..payload.len() {
            let _ = link_from_payload(&payload[..cut]);
        }
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            let len = (seed % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = parse_datagram(&bytes, |_| {});
            let _ = link_from_payload(&bytes);
        }
    }
}
