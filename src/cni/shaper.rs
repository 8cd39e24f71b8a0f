//! Shaping a pod's interface, inside the pod's network namespace: set up
//! at ADD, checked at CHECK, taken down at DEL (the messages are
//! [`super::tc`]'s).
//!
//! Everything lives in the pod's namespace, on or beside the pod's
//! interface, so nothing is left on the host if a DEL never comes: the
//! qdiscs go with the interface, the ifb with the namespace. The ifb and
//! the interface share a link group of their own, so that DEL removes both
//! in one batch: the kernel waits out an RCU grace period per batch of
//! links deleted (about 16 ms here), and the delegate would wait it once
//! more for the interface alone. The delegate's DEL then finds the
//! interface gone, which macvlan and ipvlan take as done.
//!
//! ADD's work is split in two: the ifb and its bucket are made while the
//! delegate makes the pod's interface ([`start`]), the rest once it is
//! there ([`Started::finish`]). The socket is made in the pod's namespace
//! by a thread that entered it, so the process's own namespace is never
//! changed.

use std::io;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_DONE,
    NLMSG_ERROR, NetlinkBuffer, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::tc::TcHandle;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{Socket, SocketAddr};
use serde::{Deserialize, Serialize};

use super::bandwidth::{Bucket, Direction, Limits};
use super::tc::{self, Link};

/// Link groups of ours: this base plus the pod interface's index (unique
/// in its namespace), so no two attachments of one pod share one.
const GROUP_BASE: u32 = 0x5356_0000;

/// What ADD set up, as recorded in the cache for CHECK and DEL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shaping {
    pub limits: Limits,
    /// The ifb of the ingress direction (its link group is read back
    /// from the kernel at DEL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifb: Option<String>,
}

impl Shaping {
    /// What [`apply`] will set up for `limits` on `ifname`: known before
    /// the interface exists, so the cache entry holds it from the start.
    pub fn planned(limits: Limits, ifname: &str) -> Shaping {
        Shaping {
            limits,
            ifb: limits.ingress.map(|_| ifb_name(ifname)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    #[error("cannot enter the pod's network namespace {path}: {source}")]
    Netns { path: PathBuf, source: io::Error },
    #[error("rtnetlink: {0}")]
    Socket(#[source] io::Error),
    #[error("{what}: {source}")]
    Refused {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the pod's interface {0} is not in its network namespace")]
    NoInterface(String),
    #[error("{0} is already a link in the pod's network namespace, and not an ifb")]
    NameTaken(String),
    #[error("{0}")]
    Changed(String),
    #[error("the namespace thread failed")]
    Thread,
}

impl ShapeError {
    /// Whether the kernel lacks what shaping needs (the ifb driver, tbf,
    /// u32 or mirred): said so the admin knows what to load.
    pub fn missing_from_kernel(&self) -> bool {
        matches!(self, ShapeError::Refused { source, .. }
            if matches!(source.raw_os_error(), Some(nix::libc::EOPNOTSUPP | nix::libc::ENOENT)))
    }
}

/// The ifb of interface `ifname`: `ifb-<ifname>` when that fits a link
/// name, else `ifb-` and a hash of it.
pub fn ifb_name(ifname: &str) -> String {
    let plain = format!("ifb-{ifname}");
    if plain.len() <= 15 {
        return plain;
    }
    // FNV-1a: stable across builds, and names of 15 bytes differ in it.
    let hash = ifname.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("ifb-{hash:08x}")
}

/// ADD's first half, done while the delegate makes the pod's interface:
/// a socket in the pod's namespace and, when ingress is shaped, the ifb
/// with its bucket, in a link group of its own, up. Its cost hides behind
/// the delegate's. On failure whatever it added is taken away again.
pub fn start(netns: &Path, shaping: &Shaping, mtu: u32) -> Result<Started, ShapeError> {
    let mut rtnl = open(netns)?;
    let ifb = match (shaping.limits.ingress, &shaping.ifb) {
        (Some(limit), Some(name)) => {
            let made = make_ifb(&mut rtnl, name, mtu, &limit.bucket());
            if made.is_err() {
                let _ = take_down(&mut rtnl, None, Some(name), TakeDown::IfbAlone);
            }
            Some(made?)
        }
        _ => None,
    };
    Ok(Started {
        rtnl,
        ifb,
        shaping: shaping.clone(),
    })
}

/// Shaping half set up: [`start`]ed, to be finished once the pod's
/// interface is there or abandoned when the delegate failed.
pub struct Started {
    rtnl: Rtnl,
    ifb: Option<Link>,
    shaping: Shaping,
}

impl Started {
    /// ADD's second half: the pod's interface joins the ifb's group, its
    /// ingress is redirected to the ifb and its egress gets a bucket. On
    /// failure whatever was added is taken away again, never the
    /// interface itself (the delegate's DEL that follows takes it).
    pub fn finish(mut self, ifname: &str) -> Result<(), ShapeError> {
        let result = self.attach(ifname);
        if result.is_err() {
            let ifb = self.ifb.as_ref().map(|l| l.name.as_str());
            let _ = take_down(&mut self.rtnl, Some(ifname), ifb, TakeDown::KeepInterface);
        }
        result
    }

    /// The delegate failed: the ifb goes.
    pub fn abandon(mut self) {
        if let Some(ifb) = &self.ifb {
            let _ = take_down(&mut self.rtnl, None, Some(&ifb.name), TakeDown::IfbAlone);
        }
    }

    fn attach(&mut self, ifname: &str) -> Result<(), ShapeError> {
        let rtnl = &mut self.rtnl;
        let create = NLM_F_CREATE | NLM_F_REPLACE;
        let pod = rtnl
            .link(ifname)?
            .ok_or_else(|| ShapeError::NoInterface(ifname.to_string()))?;
        if let Some(ifb) = &self.ifb {
            rtnl.ack(
                tc::set_group(pod.index, ifb.group),
                0,
                &format!("putting {ifname} in link group {:#x}", ifb.group),
            )?;
            rtnl.ack(
                tc::ingress(pod.index),
                create,
                &format!("adding the ingress qdisc of {ifname}"),
            )?;
            rtnl.ack(
                tc::redirect(pod.index, ifb.index),
                create,
                &format!("redirecting {ifname}'s ingress to {}", ifb.name),
            )?;
        }
        if let Some(limit) = self.shaping.limits.egress {
            rtnl.ack(
                tc::tbf(pod.index, &limit.bucket()),
                create,
                &format!("setting tbf on {ifname}"),
            )?;
        }
        Ok(())
    }
}

/// The link group of the ifb with index `index` (unique in its
/// namespace, so no two attachments of one pod share a group).
fn group_of(index: u32) -> u32 {
    GROUP_BASE + (index & 0xffff)
}

/// Creates the ifb `name` holding `bucket`, in its own group, up. The ifb
/// is created down and only set up once its bucket holds the rate.
fn make_ifb(rtnl: &mut Rtnl, name: &str, mtu: u32, bucket: &Bucket) -> Result<Link, ShapeError> {
    let created = rtnl.ack(
        tc::new_ifb(name, 0, mtu, "surveyor: a pod interface's ingress"),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("creating ifb {name}"),
    );
    let mut ifb = match (created, rtnl.link(name)?) {
        (Ok(()), Some(ifb)) => ifb,
        // Left by an ADD that was cut short: ours if it is an ifb.
        (Err(ShapeError::Refused { source, .. }), Some(ifb))
            if source.raw_os_error() == Some(nix::libc::EEXIST) =>
        {
            if ifb.kind.as_deref() != Some("ifb") {
                return Err(ShapeError::NameTaken(name.to_string()));
            }
            ifb
        }
        (Err(e), _) => return Err(e),
        (Ok(()), None) => return Err(ShapeError::NoInterface(name.to_string())),
    };
    ifb.group = group_of(ifb.index);
    rtnl.ack(
        tc::set_group(ifb.index, ifb.group),
        0,
        &format!("putting {name} in link group {:#x}", ifb.group),
    )?;
    rtnl.ack(
        tc::tbf(ifb.index, bucket),
        NLM_F_CREATE | NLM_F_REPLACE,
        &format!("setting tbf on {name}"),
    )?;
    rtnl.ack(tc::set_up(ifb.index), 0, &format!("setting {name} up"))?;
    Ok(ifb)
}

/// Takes away what ADD set up for `ifname` in `netns`, before the
/// delegate's DEL. The ifb goes in one batch with the pod's interface
/// (their shared group); the interface's qdiscs go with it, or with the
/// delegate's DEL when it is not in the group. An egress-only record
/// needs nothing: its bucket goes with the interface. Without a record
/// (the cache entry lost), the ifb is looked for by its name.
pub fn remove(netns: &Path, ifname: &str, shaping: Option<&Shaping>) -> Result<(), ShapeError> {
    if shaping.is_some_and(|s| s.limits.ingress.is_none()) {
        return Ok(());
    }
    let name = shaping
        .and_then(|s| s.ifb.clone())
        .unwrap_or_else(|| ifb_name(ifname));
    let mut rtnl = open(netns)?;
    take_down(
        &mut rtnl,
        Some(ifname),
        Some(&name),
        TakeDown::WithInterface,
    )
}

/// How much [`take_down`] takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TakeDown {
    /// The ifb alone: the pod's interface is not there or not touched.
    IfbAlone,
    /// The ifb, and the pod interface's qdiscs and group: the interface
    /// stays.
    KeepInterface,
    /// The ifb and the pod's interface with it, when they share their
    /// group.
    WithInterface,
}

fn take_down(
    rtnl: &mut Rtnl,
    ifname: Option<&str>,
    ifb: Option<&str>,
    how: TakeDown,
) -> Result<(), ShapeError> {
    let ifb = match ifb {
        Some(name) => rtnl
            .link(name)?
            .filter(|l| l.kind.as_deref() == Some("ifb")),
        None => None,
    };
    if let Some(ifb) = &ifb {
        // Only ifbs of ours are in their own group; the pod's interface
        // joins it once shaped, so it goes in the same batch.
        let what = format!("deleting {}", ifb.name);
        if how == TakeDown::WithInterface && ifb.group == group_of(ifb.index) {
            // The ingress qdisc goes first: left to go with the interface
            // it cost 0.7 ms a DEL (measured; its filter's deferred
            // teardown holding the interface, likely), against one round
            // trip here.
            if let Some(pod) = ifname.map(|n| rtnl.link(n)).transpose()?.flatten() {
                let what = format!("deleting {}'s ingress qdisc", pod.name);
                ignore_gone(rtnl.ack(tc::del_qdisc(pod.index, TcHandle::INGRESS), 0, &what))?;
            }
            return ignore_gone(rtnl.ack(tc::del_group(ifb.group), 0, &what));
        }
        ignore_gone(rtnl.ack(tc::del_link(ifb.index), 0, &what))?;
    }
    if how == TakeDown::IfbAlone {
        return Ok(());
    }
    let Some(pod) = ifname.map(|n| rtnl.link(n)).transpose()?.flatten() else {
        return Ok(());
    };
    let what = format!("deleting {}'s ingress qdisc", pod.name);
    ignore_gone(rtnl.ack(tc::del_qdisc(pod.index, TcHandle::INGRESS), 0, &what))?;
    if how == TakeDown::KeepInterface {
        let what = format!("deleting {}'s tbf", pod.name);
        ignore_gone(rtnl.ack(tc::del_qdisc(pod.index, TcHandle::ROOT), 0, &what))?;
        let what = format!("taking {} out of its link group", pod.name);
        ignore_gone(rtnl.ack(tc::set_group(pod.index, 0), 0, &what))?;
    }
    Ok(())
}

/// What is gone need not be removed.
fn ignore_gone(r: Result<(), ShapeError>) -> Result<(), ShapeError> {
    match r {
        Err(ShapeError::Refused { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(nix::libc::ENODEV | nix::libc::ENOENT | nix::libc::EINVAL)
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Checks that `ifname` in `netns` is still shaped as recorded: each
/// shaped direction's tbf at its rate and limit, and the redirect to the
/// ifb. The error says what is missing or changed.
pub fn check(netns: &Path, ifname: &str, shaping: &Shaping) -> Result<(), ShapeError> {
    let rtnl = &mut open(netns)?;
    {
        let pod = rtnl
            .link(ifname)?
            .ok_or_else(|| ShapeError::NoInterface(ifname.to_string()))?;
        let qdiscs: Vec<tc::Qdisc> = rtnl
            .dump(tc::get_qdiscs())?
            .iter()
            .filter_map(tc::qdisc)
            .collect();
        let root = |index: u32| {
            qdiscs
                .iter()
                .find(|q| q.index == index && q.parent == TcHandle::ROOT)
        };
        let mut wrong = Vec::new();
        for d in Direction::BOTH {
            let Some(limit) = shaping.limits.get(d) else {
                continue;
            };
            let want = limit.bucket();
            let want = (want.rate_bytes, want.limit_bytes);
            let (device, on) = match d {
                Direction::Egress => (Some(pod.clone()), pod.name.clone()),
                Direction::Ingress => {
                    let name = shaping.ifb.clone().unwrap_or_else(|| ifb_name(ifname));
                    (rtnl.link(&name)?, name)
                }
            };
            let Some(device) = device else {
                wrong.push(format!("{} shaping: {on} is gone", d.as_str()));
                continue;
            };
            match root(device.index) {
                Some(q) if q.tbf == Some(want) => {}
                Some(tc::Qdisc {
                    tbf: Some((rate, limit)),
                    ..
                }) => wrong.push(format!(
                    "{} shaping: {on}'s tbf is at {rate} bytes/s (limit {limit}), not {} bytes/s (limit {})",
                    d.as_str(),
                    want.0,
                    want.1
                )),
                Some(q) => wrong.push(format!(
                    "{} shaping: {on} has no tbf (its root qdisc is {})",
                    d.as_str(),
                    q.kind
                )),
                None => wrong.push(format!("{} shaping: {on} has no tbf", d.as_str())),
            }
            if d == Direction::Ingress {
                let redirected = rtnl
                    .dump(tc::get_ingress_filters(pod.index))
                    .unwrap_or_default()
                    .iter()
                    .filter_map(tc::redirects_to)
                    .any(|(from, to)| from == pod.index && to == device.index);
                if !redirected {
                    wrong.push(format!(
                        "ingress shaping: {ifname}'s ingress is not redirected to {on}"
                    ));
                }
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(ShapeError::Changed(wrong.join("; ")))
        }
    }
}

/// An rtnetlink socket of `netns`: made on a thread that entered it, so
/// the process's own namespace is never changed. A socket stays in the
/// namespace it was made in, so the rest is done from the caller's thread.
fn open(netns: &Path) -> Result<Rtnl, ShapeError> {
    let file = std::fs::File::open(netns).map_err(|source| ShapeError::Netns {
        path: netns.to_path_buf(),
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |e| ShapeError::Netns {
                        path: netns.to_path_buf(),
                        source: e.into(),
                    },
                )?;
                Rtnl::open()
            })
            .join()
            .unwrap_or(Err(ShapeError::Thread))
    })
}

/// A blocking rtnetlink socket, one request at a time.
struct Rtnl {
    socket: Socket,
    sequence: u32,
}

impl Rtnl {
    fn open() -> Result<Rtnl, ShapeError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(ShapeError::Socket)?;
        socket.bind_auto().map_err(ShapeError::Socket)?;
        Ok(Rtnl {
            socket,
            sequence: 0,
        })
    }

    fn send(&mut self, message: RouteNetlinkMessage, flags: u16) -> Result<u32, ShapeError> {
        self.sequence += 1;
        let mut msg = NetlinkMessage::from(message);
        msg.header.flags = NLM_F_REQUEST | flags;
        msg.header.sequence_number = self.sequence;
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket
            .send_to(&buf, &SocketAddr::new(0, 0), 0)
            .map_err(ShapeError::Socket)?;
        Ok(self.sequence)
    }

    /// Sends a request and waits for the kernel's answer to it.
    fn ack(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<(), ShapeError> {
        let sequence = self.send(message, NLM_F_ACK | flags)?;
        loop {
            let mut done = None;
            self.read(sequence, |frame| {
                if let Frame::Error(code) = frame {
                    done = Some(code);
                }
            })?;
            match done {
                Some(0) => return Ok(()),
                Some(code) => {
                    return Err(ShapeError::Refused {
                        what: what.to_string(),
                        source: io::Error::from_raw_os_error(-code),
                    });
                }
                None => continue,
            }
        }
    }

    /// Sends a dump request; every message of the answer.
    fn dump(
        &mut self,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, ShapeError> {
        let sequence = self.send(message, NLM_F_DUMP)?;
        let mut out = Vec::new();
        loop {
            let mut end = None;
            self.read(sequence, |frame| match frame {
                Frame::Message(m) => out.push(m),
                Frame::Done => end = Some(0),
                Frame::Error(code) => end = Some(code),
            })?;
            match end {
                Some(0) => return Ok(out),
                Some(code) => {
                    return Err(ShapeError::Refused {
                        what: "dumping".into(),
                        source: io::Error::from_raw_os_error(-code),
                    });
                }
                None => continue,
            }
        }
    }

    /// The link named `name`, if there is one.
    fn link(&mut self, name: &str) -> Result<Option<Link>, ShapeError> {
        let sequence = self.send(tc::get_link(name), 0)?;
        loop {
            let mut found = None;
            let mut refused = None;
            self.read(sequence, |frame| match frame {
                Frame::Message(m) => found = tc::link(&m),
                Frame::Error(code) => refused = Some(code),
                Frame::Done => {}
            })?;
            match (found, refused) {
                (Some(link), _) => return Ok(Some(link)),
                (None, Some(code)) if -code == nix::libc::ENODEV => return Ok(None),
                (None, Some(code)) => {
                    return Err(ShapeError::Refused {
                        what: format!("looking up {name}"),
                        source: io::Error::from_raw_os_error(-code),
                    });
                }
                (None, None) => continue,
            }
        }
    }

    /// Reads one datagram, handing `f` the messages answering `sequence`.
    fn read(&mut self, sequence: u32, mut f: impl FnMut(Frame)) -> Result<(), ShapeError> {
        let (buf, _) = self.socket.recv_from_full().map_err(ShapeError::Socket)?;
        let mut rest = &buf[..];
        while let Ok(header) = NetlinkBuffer::new_checked(rest) {
            let len = header.length() as usize;
            if header.sequence_number() == sequence {
                match header.message_type() {
                    NLMSG_DONE => f(Frame::Done),
                    NLMSG_ERROR => {
                        let code = header
                            .payload()
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map(i32::from_ne_bytes)
                            .unwrap_or(-nix::libc::EIO);
                        f(Frame::Error(code));
                    }
                    _ => {
                        // A message the route crate cannot read is not ours
                        // to judge: it is left out.
                        if let Ok(NetlinkMessage {
                            payload: NetlinkPayload::InnerMessage(m),
                            ..
                        }) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(
                            rest.get(..len).unwrap_or_default(),
                        ) {
                            f(Frame::Message(m));
                        }
                    }
                }
            }
            rest = rest.get((len + 3) & !3..).unwrap_or_default();
            if len == 0 {
                break;
            }
        }
        Ok(())
    }
}

enum Frame {
    Message(RouteNetlinkMessage),
    Done,
    Error(i32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_names_fit_a_link_name_and_differ() {
        assert_eq!(ifb_name("net1"), "ifb-net1");
        assert_eq!(ifb_name("abcdefghijk"), "ifb-abcdefghijk");
        let (a, b) = (ifb_name("abcdefghijkl"), ifb_name("abcdefghijkm"));
        assert!(a.len() <= 15 && b.len() <= 15 && a != b, "{a} {b}");
        assert!(a.starts_with("ifb-"));
    }

    #[test]
    fn shaping_records_keep_their_shape() {
        let limits = crate::cni::bandwidth::Request::claimed(1_000_000, &[Direction::Ingress])
            .settle(1500)
            .unwrap();
        let s = Shaping::planned(limits, "net1");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"limits": {"ingress": {"rate": 1_000_000, "burst": 524_288, "source": "claim"}}, "ifb": "ifb-net1"})
        );
        assert_eq!(Shaping::planned(Limits::default(), "net1").ifb, None);
        assert_eq!(serde_json::from_value::<Shaping>(v).unwrap(), s);
    }
}
