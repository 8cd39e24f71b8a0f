//! AF_PACKET capture of LLDP frames: one socket per listened interface,
//! each read by a task of its own, all feeding one channel.
//!
//! A socket whose link goes down reports ENETDOWN once and resumes when the
//! link is up again, so that error is ridden out. Any other read error ends
//! the listener and says so ([`Received::Ended`]); the owner reopens it.

use std::collections::HashMap;
use std::io::{self, Read as _};
use std::mem::size_of;
use std::os::fd::AsRawFd;

use nix::libc;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frame::{self, ETHERTYPE_LLDP, FrameError, Lldpdu, NEAREST_BRIDGE};

/// PACKET_IGNORE_OUTGOING (Linux 4.20): our own transmissions, such as a
/// co-located lldpd's, are not delivered back to us.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Largest frame read; LLDPDUs fit a standard MTU, jumbo room is cheap.
const FRAME_MAX: usize = 9216;

/// One frame heard on an interface.
#[derive(Debug)]
pub struct Heard {
    pub ifindex: u32,
    pub source: [u8; 6],
    pub pdu: Result<Lldpdu, FrameError>,
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
    listeners: HashMap<u32, Listener>,
    generation: u64,
    tx: mpsc::Sender<Tagged>,
    rx: mpsc::Receiver<Tagged>,
}

impl Default for Capture {
    fn default() -> Self {
        Self::new()
    }
}

impl Capture {
    pub fn new() -> Self {
        // Frames wait here only while the loop is busy; LLDP is one frame
        // per neighbor per tx interval, so this never fills in practice.
        let (tx, rx) = mpsc::channel(1024);
        Capture {
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
        // SAFETY: the socket owns a valid descriptor that stays open, and is
        // never replaced, for as long as the AsyncFd holds it.
        let socket = unsafe { AsyncFd::register(open(ifindex, name)?) }?;
        self.generation += 1;
        let generation = self.generation;
        let tx = self.tx.clone();
        tracing::debug!("listening for LLDP on {name}");
        let task = tokio::spawn(async move {
            let report = loop {
                let frame = match read(&socket).await {
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
                let heard = match frame::parse_frame(&frame) {
                    Ok((source, pdu)) => Heard {
                        ifindex,
                        source,
                        pdu: Ok(pdu),
                    },
                    Err(e) => {
                        let source = frame
                            .get(6..12)
                            .and_then(|s| s.try_into().ok())
                            .unwrap_or_default();
                        Heard {
                            ifindex,
                            source,
                            pdu: Err(e),
                        }
                    }
                };
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

/// Opens a packet socket receiving LLDP frames on one interface only.
fn open(ifindex: u32, name: &str) -> io::Result<Socket> {
    let protocol = ETHERTYPE_LLDP.to_be();
    // Created with protocol 0 so that nothing is queued before the bind
    // narrows it to this interface and ethertype.
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
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
    // Real NICs filter multicast: join the nearest-bridge group.
    let mut address = [0u8; 8];
    address[..6].copy_from_slice(&NEAREST_BRIDGE);
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex_c,
        mr_type: libc::PACKET_MR_MULTICAST as libc::c_ushort,
        mr_alen: 6,
        mr_address: address,
    };
    if let Err(e) = setsockopt(&socket, libc::PACKET_ADD_MEMBERSHIP, &mreq) {
        // Every kernel has it; qemu's user-mode emulation does not. A NIC
        // that filters multicast then passes only what it lets through.
        tracing::warn!(
            "{name}: cannot join the LLDP multicast group ({e}); hearing what the NIC passes unfiltered"
        );
    }
    if let Err(e) = setsockopt(&socket, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int) {
        // Older kernels: outgoing frames are then dropped by source MAC.
        tracing::debug!("PACKET_IGNORE_OUTGOING unavailable: {e}");
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
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
