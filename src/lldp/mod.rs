//! Neighbor protocols: which switch and port each interface is cabled to,
//! as LLDP, CDP, EDP, FDP or SONMP say it.
//!
//! [`frame`] parses LLDPDUs, [`cdp`] CDP and FDP, [`edp`] EDP, [`sonmp`]
//! SONMP hellos, [`decode`] tells which a frame is (all pure);
//! [`neighbors`] keeps who each interface hears until the hold time runs
//! out (pure), [`capture`] owns the AF_PACKET sockets. [`Lldp`] ties them
//! to the surveyed interfaces.

pub mod capture;
pub mod cdp;
pub mod decode;
pub mod edp;
pub mod frame;
pub mod neighbors;
pub mod sonmp;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::inventory::{Interface, Neighbor, Protocol, format_mac};

use self::capture::{Capture, Received};
pub use self::decode::Protocols;
use self::neighbors::Neighbors;

/// How long a listener that failed waits before it is opened again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// Counters for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LldpStats {
    /// Well-formed frames from other systems, by protocol.
    pub frames: BTreeMap<Protocol, u64>,
    /// Frames refused, by protocol and reason.
    pub rejected: BTreeMap<(Protocol, &'static str), u64>,
    /// Frames sent from one of this node's own MACs (dropped).
    pub own: u64,
    /// Listeners that failed and were opened again.
    pub reopened: u64,
}

/// Frames refused on one interface, for hints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    pub count: u64,
    /// The last reason, in words.
    pub last: String,
}

/// Listens on the surveyed interfaces that are up and keeps their
/// neighbors.
#[derive(Default)]
pub struct Lldp {
    protocols: Protocols,
    capture: Capture,
    neighbors: Neighbors,
    own_macs: HashSet<String>,
    /// The interfaces to listen on (up and surveyed), by index.
    wanted: HashMap<u32, String>,
    /// Listeners that failed, and when to open them again.
    reopen: HashMap<u32, Instant>,
    rejected_on: HashMap<u32, Rejected>,
    stats: LldpStats,
}

impl Default for Protocols {
    fn default() -> Self {
        Protocols::all()
    }
}

impl Lldp {
    /// Listening for every protocol.
    pub fn new() -> Self {
        Self::with(Protocols::all())
    }

    /// Listening for `protocols`.
    pub fn with(protocols: Protocols) -> Self {
        Lldp {
            protocols,
            capture: Capture::new(protocols),
            ..Self::default()
        }
    }

    /// What is listened for.
    pub fn protocols(&self) -> Protocols {
        self.protocols
    }

    pub fn stats(&self) -> &LldpStats {
        &self.stats
    }

    /// The neighbor published for `ifindex`.
    pub fn neighbor(&self, ifindex: u32) -> Option<&Neighbor> {
        self.neighbors.get(ifindex)
    }

    /// Interfaces with a neighbor.
    pub fn neighbor_count(&self) -> usize {
        self.neighbors.len()
    }

    pub fn is_listening(&self, ifindex: u32) -> bool {
        self.capture.is_listening(ifindex)
    }

    pub fn listening(&self) -> impl Iterator<Item = u32> + '_ {
        self.capture.listening()
    }

    /// Frames refused on `ifindex` so far.
    pub fn rejected_on(&self, ifindex: u32) -> Option<&Rejected> {
        self.rejected_on.get(&ifindex)
    }

    /// This node's MACs (every link's): frames from them are our own, such
    /// as a co-located LLDP agent's, never a neighbor. The all-zero MAC
    /// (`lo`'s) is no one's: some switches send from it.
    pub fn set_own_macs<'a>(&mut self, macs: impl IntoIterator<Item = &'a str>) {
        self.own_macs = macs
            .into_iter()
            .filter(|m| m.bytes().any(|b| b != b'0' && b != b':'))
            .map(str::to_string)
            .collect();
    }

    /// Listens on exactly the given interfaces that are up: opens sockets
    /// for new ones, closes those that went down or away and forgets their
    /// neighbors (the cable may have moved). Returns the interfaces whose
    /// neighbor was forgotten.
    pub fn follow(&mut self, surveyed: &[Interface]) -> Vec<u32> {
        self.wanted = surveyed
            .iter()
            .filter(|i| i.is_up())
            .map(|i| (i.index, i.name.clone()))
            .collect();
        let stale: Vec<u32> = self
            .capture
            .listening()
            .chain(self.neighbors_held())
            .filter(|i| !self.wanted.contains_key(i))
            .collect::<HashSet<u32>>()
            .into_iter()
            .collect();
        let mut forgotten = Vec::new();
        for ifindex in stale {
            self.capture.close(ifindex);
            if self.neighbors.forget(ifindex) {
                forgotten.push(ifindex);
            }
        }
        self.reopen.retain(|i, _| self.wanted.contains_key(i));
        let wanted: Vec<(u32, String)> = self
            .wanted
            .iter()
            .filter(|(i, _)| !self.reopen.contains_key(i))
            .map(|(i, n)| (*i, n.clone()))
            .collect();
        for (ifindex, name) in wanted {
            self.open(ifindex, &name);
        }
        forgotten.sort_unstable();
        forgotten
    }

    fn neighbors_held(&self) -> Vec<u32> {
        let mut held: Vec<u32> = self.neighbors.entries().iter().map(|e| e.0).collect();
        held.dedup();
        held
    }

    fn open(&mut self, ifindex: u32, name: &str) {
        if let Err(e) = self.capture.listen(ifindex, name) {
            tracing::warn!(
                "cannot listen for {} on {name}: {e} (needs CAP_NET_RAW)",
                self.protocols
            );
        }
    }

    /// Waits until the neighbor published for some interface changes (a
    /// new neighbor, new facts, a shutdown frame, a TTL running out) and
    /// returns those interfaces. Refreshes are absorbed; failed listeners
    /// are opened again meanwhile. Cancel-safe.
    pub async fn changes(&mut self) -> Vec<u32> {
        loop {
            let expiry = self.neighbors.next_expiry();
            let reopen = self.reopen.values().min().copied();
            let at = |t: Option<Instant>| async move {
                match t {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.capture.recv() => match received {
                    Received::Frame(heard) => {
                        if let Some(ifindex) = self.hear(*heard, Instant::now()) {
                            return vec![ifindex];
                        }
                    }
                    Received::Ended { ifindex, error } => {
                        self.ended(ifindex, &error, Instant::now());
                    }
                },
                () = at(expiry) => {
                    let changed = self.neighbors.expire(Instant::now());
                    if !changed.is_empty() {
                        return changed;
                    }
                }
                () = at(reopen) => self.reopen_due(Instant::now()),
            }
        }
    }

    /// A listener failed: open it again shortly if its link is still one
    /// to listen on (a socket failing at once must not spin).
    fn ended(&mut self, ifindex: u32, error: &str, now: Instant) {
        if let Some(name) = self.wanted.get(&ifindex) {
            tracing::warn!(
                "{name}: neighbor listener failed ({error}); opening it again in {REOPEN_AFTER:?}"
            );
            self.reopen.insert(ifindex, now + REOPEN_AFTER);
        }
    }

    fn reopen_due(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .reopen
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(i, _)| *i)
            .collect();
        for ifindex in due {
            self.reopen.remove(&ifindex);
            if let Some(name) = self.wanted.get(&ifindex).cloned() {
                self.open(ifindex, &name);
                self.stats.reopened += 1;
            }
        }
    }

    /// Applies one heard frame; the interface when its neighbor changed.
    fn hear(&mut self, heard: capture::Heard, now: Instant) -> Option<u32> {
        let source = format_mac(&heard.decoded.source);
        if self.own_macs.contains(&source) {
            self.stats.own += 1;
            return None;
        }
        let protocol = heard.decoded.protocol;
        match heard.decoded.result {
            Ok(a) => {
                *self.stats.frames.entry(protocol).or_default() += 1;
                if !a.skipped.is_empty() {
                    tracing::debug!(
                        "{protocol} frame from {source} on ifindex {}: skipped {}",
                        heard.ifindex,
                        a.skipped.join("; ")
                    );
                }
                self.neighbors
                    .observe(heard.ifindex, &a.neighbor, now)
                    .then_some(heard.ifindex)
            }
            Err(r) => {
                *self.stats.rejected.entry((protocol, r.reason)).or_default() += 1;
                let entry = self.rejected_on.entry(heard.ifindex).or_default();
                entry.count += 1;
                let reason = r.to_string();
                if entry.last != reason {
                    let name = self.wanted.get(&heard.ifindex).map_or("?", String::as_str);
                    tracing::info!(
                        "{name}: rejected a frame from {source}: {reason} (counted in surveyor_neighbor_frames_rejected_total)"
                    );
                    entry.last = reason;
                }
                None
            }
        }
    }

    /// Fills each interface's `lldp` from the neighbor table.
    pub fn annotate(&self, interfaces: &mut [Interface]) {
        for iface in interfaces {
            iface.lldp = self.neighbors.get(iface.index).cloned();
        }
    }

    /// Whether the neighbor table changed (not merely refreshed) since
    /// last asked.
    pub fn take_dirty(&mut self) -> bool {
        self.neighbors.take_dirty()
    }

    /// Every neighbor held: (interface index, neighbor, expiry).
    pub fn entries(&self) -> Vec<(u32, &Neighbor, Instant)> {
        self.neighbors.entries()
    }

    /// Puts back a neighbor saved before a restart (dropped if expired).
    pub fn restore(&mut self, ifindex: u32, neighbor: Neighbor, expires: Instant) {
        self.neighbors
            .restore(ifindex, neighbor, expires, Instant::now());
    }
}

/// Bytes from a hex string: the unit tests' frames, as captured.
#[cfg(test)]
fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::TypedId;
    use crate::lldp::capture::Heard;
    use crate::lldp::decode::{Announcement, Decoded, Rejection};
    use crate::lldp::frame::{FrameError, Lldpdu};

    fn heard(ifindex: u32, source: [u8; 6], pdu: Result<Lldpdu, FrameError>) -> Heard {
        Heard {
            ifindex,
            decoded: Decoded {
                source,
                protocol: Protocol::Lldp,
                result: pdu
                    .map(|p| Announcement {
                        neighbor: p.neighbor(),
                        skipped: Vec::new(),
                    })
                    .map_err(|e| Rejection {
                        protocol: Protocol::Lldp,
                        reason: e.reason(),
                        message: e.to_string(),
                    }),
            },
        }
    }

    fn pdu() -> Lldpdu {
        Lldpdu {
            chassis_id: TypedId {
                subtype: "local".into(),
                value: "sw".into(),
            },
            port_id: TypedId {
                subtype: "local".into(),
                value: "p1".into(),
            },
            ttl_seconds: 120,
            ..Default::default()
        }
    }

    #[test]
    fn frames_from_our_own_macs_are_never_neighbors() {
        let mut lldp = Lldp::new();
        lldp.set_own_macs(["02:aa:00:00:00:01"]);
        let now = Instant::now();
        let own = heard(4, [2, 0xaa, 0, 0, 0, 1], Ok(pdu()));
        assert_eq!(lldp.hear(own, now), None);
        assert!(lldp.neighbor(4).is_none());
        let other = heard(4, [2, 0x5e, 0, 0, 0, 7], Ok(pdu()));
        assert_eq!(lldp.hear(other, now), Some(4));
        assert_eq!(
            lldp.stats(),
            &LldpStats {
                frames: [(Protocol::Lldp, 1)].into_iter().collect(),
                own: 1,
                ..LldpStats::default()
            }
        );
    }

    #[test]
    fn a_failed_listener_is_reopened_only_while_its_link_is_wanted() {
        let mut lldp = Lldp::new();
        lldp.wanted.insert(4, "sv-a".into());
        let now = Instant::now();
        lldp.ended(4, "EIO", now);
        lldp.ended(5, "EIO", now);
        assert_eq!(lldp.reopen.get(&4), Some(&(now + REOPEN_AFTER)));
        assert!(!lldp.reopen.contains_key(&5), "not a link we listen on");
        // Not due yet: nothing happens.
        lldp.reopen_due(now);
        assert!(lldp.reopen.contains_key(&4));
        // The link went away meanwhile: no reopen.
        lldp.follow(&[]);
        assert!(lldp.reopen.is_empty());
        assert!(lldp.wanted.is_empty());
    }

    #[test]
    fn the_all_zero_mac_is_not_ours() {
        let mut lldp = Lldp::new();
        // lo's MAC is among the node's.
        lldp.set_own_macs(["00:00:00:00:00:00", "02:aa:00:00:00:01"]);
        let leaf = heard(4, [0; 6], Ok(pdu()));
        assert_eq!(lldp.hear(leaf, Instant::now()), Some(4));
        assert_eq!(lldp.stats().own, 0);
    }

    #[test]
    fn malformed_frames_are_counted_and_change_nothing() {
        let mut lldp = Lldp::new();
        let bad = heard(4, [2, 0, 0, 0, 0, 9], Err(FrameError::Missing("TTL")));
        assert_eq!(lldp.hear(bad, Instant::now()), None);
        let bad = heard(4, [2, 0, 0, 0, 0, 9], Err(FrameError::Missing("TTL")));
        lldp.hear(bad, Instant::now());
        assert_eq!(
            lldp.stats().rejected.get(&(Protocol::Lldp, "missing_tlv")),
            Some(&2)
        );
        assert_eq!(lldp.neighbor_count(), 0);
        let on = lldp.rejected_on(4).unwrap();
        assert_eq!(on.count, 2);
        assert!(on.last.contains("TTL"), "{on:?}");
        assert!(lldp.rejected_on(5).is_none());
    }
}
