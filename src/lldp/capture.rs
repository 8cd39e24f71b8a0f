//! AF_PACKET capture of neighbor protocol frames: per listened interface a
//! socket for LLDP's ethertype and, when CDP, EDP, FDP or SONMP are
//! listened for, one for 802.2 (LLC) frames, filtered in the kernel to
//! those protocols' group addresses (so STP and the like never wake us);
//! both read by one task per interface, all feeding one channel.
//!
//! A socket whose link goes down reports ENETDOWN once and resumes when the
//! link is up again, so that error is ridden out. Any other read error ends
//! the listener and says so ([`Received::Ended`]); the owner reopens it.

use std::collections::HashMap;
use std::io::{self, Read as _};
use std::mem::size_of;
use std::os::fd::AsRawFd;

use nix::libc;
use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::decode::{self, Decoded, Protocols};
use super::frame::ETHERTYPE_LLDP;
use crate::inventory::Protocol::Lldp;

/// PACKET_IGNORE_OUTGOING (Linux 4.20): our own transmissions, such as a
/// co-located lldpd's, are not delivered back to us.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Frames with a length instead of a type (802.3 with an LLC header).
const ETH_P_802_2: u16 = 0x0004;
/// Largest frame read; LLDPDUs fit a standard MTU, jumbo room is cheap.
const FRAME_MAX: usize = 9216;

/// One frame of a protocol listened for, heard on an interface.
#[derive(Debug)]
pub struct Heard {
    pub ifindex: u32,
    pub decoded: Decoded,
}

/// What the listeners report.
#[derive(Debug)]
pub enum Received {
    Frame(Box<Heard>),
    /// The listener on `ifindex` failed and stopped.
    Ended {
        ifindex: u32,
        error: String,
    },
}

/// A listener's task, tagged so that a report from a socket closed since
/// is not taken for its successor's.
struct Listener {
    generation: u64,
    task: JoinHandle<()>,
}

type Tagged = (u64, Received);

/// The listening sockets, keyed by interface index.
pub struct Capture {
    protocols: Protocols,
    listeners: HashMap<u32, Listener>,
    generation: u64,
    tx: mpsc::Sender<Tagged>,
    rx: mpsc::Receiver<Tagged>,
}

impl Default for Capture {
    fn default() -> Self {
        Self::new(Protocols::all())
    }
}

impl Capture {
    pub fn new(protocols: Protocols) -> Self {
        // Frames wait here only while the loop is busy; a neighbor sends one
        // frame per protocol per tx interval, so this never fills in
        // practice.
        let (tx, rx) = mpsc::channel(1024);
        Capture {
            protocols,
            listeners: HashMap::new(),
            generation: 0,
            tx,
            rx,
        }
    }

    /// Interfaces being listened on.
    pub fn listening(&self) -> impl Iterator<Item = u32> + '_ {
        self.listeners.keys().copied()
    }

    pub fn is_listening(&self, ifindex: u32) -> bool {
        self.listeners.contains_key(&ifindex)
    }

    /// Starts listening on `ifindex` (no-op when already listening).
    pub fn listen(&mut self, ifindex: u32, name: &str) -> io::Result<()> {
        if self.listeners.contains_key(&ifindex) {
            return Ok(());
        }
        let protocols = self.protocols;
        let register = |socket: Socket| {
            // SAFETY: the socket owns a valid descriptor that stays open,
            // and is never replaced, for as long as the AsyncFd holds it.
            unsafe { AsyncFd::register(socket) }
        };
        let lldp = match protocols.contains(Lldp) {
            true => Some(register(open(ifindex, name, ETHERTYPE_LLDP, protocols)?)?),
            false => None,
        };
        let llc = match protocols.any_llc() {
            true => Some(register(open(ifindex, name, ETH_P_802_2, protocols)?)?),
            false => None,
        };
        self.generation += 1;
        let generation = self.generation;
        let tx = self.tx.clone();
        tracing::debug!("listening for {protocols} on {name}");
        let task = tokio::spawn(async move {
            let report = loop {
                let frame = tokio::select! {
                    f = read_opt(lldp.as_ref()) => f,
                    f = read_opt(llc.as_ref()) => f,
                };
                let frame = match frame {
                    Ok(frame) => frame,
                    // The link went down; the socket hears again once it is up.
                    Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => continue,
                    Err(e) => {
                        break Received::Ended {
                            ifindex,
                            error: e.to_string(),
                        };
                    }
                };
                // Not a protocol listened for (no kernel filter): nothing.
                let Some(decoded) = decode::decode(&frame, protocols) else {
                    continue;
                };
                let heard = Heard { ifindex, decoded };
                if tx
                    .send((generation, Received::Frame(Box::new(heard))))
                    .await
                    .is_err()
                {
                    return;
                }
            };
            let _ = tx.send((generation, report)).await;
        });
        self.listeners
            .insert(ifindex, Listener { generation, task });
        Ok(())
    }

    /// Stops listening on `ifindex`; returns whether it was.
    pub fn close(&mut self, ifindex: u32) -> bool {
        match self.listeners.remove(&ifindex) {
            Some(listener) => {
                listener.task.abort();
                true
            }
            None => false,
        }
    }

    /// The next report of a current listener. Cancel-safe.
    pub async fn recv(&mut self) -> Received {
        // We hold a sender, so the channel never closes.
        loop {
            let Some((generation, received)) = self.rx.recv().await else {
                continue;
            };
            let ifindex = match &received {
                Received::Frame(heard) => heard.ifindex,
                Received::Ended { ifindex, .. } => *ifindex,
            };
            let current = self
                .listeners
                .get(&ifindex)
                .is_some_and(|l| l.generation == generation);
            if !current {
                continue; // from a socket closed since
            }
            if matches!(received, Received::Ended { .. }) {
                self.listeners.remove(&ifindex);
            }
            return received;
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        for listener in self.listeners.values() {
            listener.task.abort();
        }
    }
}

/// Reads one frame from `socket`; without one, never.
async fn read_opt(socket: Option<&AsyncFd<Socket>>) -> io::Result<Vec<u8>> {
    match socket {
        Some(s) => read(s).await,
        None => std::future::pending().await,
    }
}

/// Reads one frame. The buffer exists only once the socket is readable:
/// an idle listener (most of them, most of the time) holds no memory for
/// it, which matters with a thousand interfaces.
async fn read(socket: &AsyncFd<Socket>) -> io::Result<Vec<u8>> {
    loop {
        let mut guard = socket.readable().await?;
        let mut buf = vec![0u8; FRAME_MAX];
        match guard.try_io(|inner| inner.get_ref().read(&mut buf)) {
            Ok(result) => {
                buf.truncate(result?);
                return Ok(buf);
            }
            Err(_would_block) => continue,
        }
    }
}

/// Opens a packet socket receiving frames of `ethertype` on one interface
/// only, a member of the group addresses of `protocols`.
fn open(ifindex: u32, name: &str, ethertype: u16, protocols: Protocols) -> io::Result<Socket> {
    let protocol = ethertype.to_be();
    // Created with protocol 0 so that nothing is queued before the bind
    // narrows it to this interface and ethertype.
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
    // This socket's protocols: LLDP's, or those framed with LLC.
    let groups: Vec<[u8; 6]> = protocols
        .iter()
        .filter(|p| (*p == Lldp) == (ethertype == ETHERTYPE_LLDP))
        .map(decode::group)
        .collect();
    if ethertype == ETH_P_802_2 {
        if let Err(e) = socket.attach_filter(&only_to(&groups)) {
            // Decoding drops what is not ours anyway; only wake-ups cost.
            tracing::debug!("{name}: no socket filter ({e}); filtering frames here");
        }
    }
    let ifindex_c =
        libc::c_int::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `try_init` hands us zeroed storage large enough for any
    // address; we write a sockaddr_ll into it and report its size.
    let ((), address) = unsafe {
        SockAddr::try_init(|storage, len| {
            let sll = storage.cast::<libc::sockaddr_ll>();
            (*sll).sll_family = libc::AF_PACKET as libc::sa_family_t;
            (*sll).sll_protocol = protocol;
            (*sll).sll_ifindex = ifindex_c;
            *len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }?;
    socket.bind(&address)?;
    // Real NICs filter multicast: join the protocols' groups.
    for group in groups {
        let mut address = [0u8; 8];
        address[..6].copy_from_slice(&group);
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex_c,
            mr_type: libc::PACKET_MR_MULTICAST as libc::c_ushort,
            mr_alen: 6,
            mr_address: address,
        };
        if let Err(e) = setsockopt(&socket, libc::PACKET_ADD_MEMBERSHIP, &mreq) {
            // Every kernel has it; qemu's user-mode emulation does not. A
            // NIC that filters multicast then passes only what it lets
            // through.
            tracing::warn!(
                "{name}: cannot join the multicast group {} ({e}); hearing what the NIC passes unfiltered",
                crate::inventory::format_mac(&group)
            );
        }
    }
    if let Err(e) = setsockopt(&socket, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int) {
        // Older kernels: outgoing frames are then dropped by source MAC.
        tracing::debug!("PACKET_IGNORE_OUTGOING unavailable: {e}");
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A classic BPF program passing frames whose destination is one of
/// `groups` (whole, 256 KiB at most) and dropping the rest: per group,
/// load the first 4 bytes and compare, then the next 2.
fn only_to(groups: &[[u8; 6]]) -> Vec<SockFilter> {
    const LD_W_ABS: u16 = 0x20;
    const LD_H_ABS: u16 = 0x28;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let n = groups.len();
    let mut prog = Vec::with_capacity(4 * n + 2);
    for (i, g) in groups.iter().enumerate() {
        let hi = u32::from_be_bytes([g[0], g[1], g[2], g[3]]);
        let lo = u32::from(u16::from_be_bytes([g[4], g[5]]));
        // From this group's last jump to "accept", past the later groups
        // and "reject".
        let to_accept = u8::try_from(4 * (n - i - 1) + 1).unwrap_or(u8::MAX);
        prog.push(SockFilter::new(LD_W_ABS, 0, 0, 0));
        prog.push(SockFilter::new(JEQ_K, 0, 2, hi));
        prog.push(SockFilter::new(LD_H_ABS, 0, 0, 4));
        prog.push(SockFilter::new(JEQ_K, to_accept, 0, lo));
    }
    prog.push(SockFilter::new(RET_K, 0, 0, 0));
    prog.push(SockFilter::new(RET_K, 0, 0, 0x40000));
    prog
}

fn setsockopt<T>(socket: &Socket, option: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, properly typed option value of the given
    // size for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            option,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
