//! LLDP: which switch and port each interface is cabled to.
//!
//! [`frame`] parses LLDPDUs (pure), [`neighbors`] keeps who each interface
//! hears until the TTL runs out (pure), [`capture`] owns the AF_PACKET
//! sockets. [`Lldp`] ties them to the surveyed interfaces.

pub mod capture;
pub mod frame;
pub mod neighbors;

use std::collections::HashSet;
use std::time::Instant;

use crate::inventory::{Interface, Neighbor, format_mac};

use self::capture::Capture;
use self::neighbors::Neighbors;

/// Counters for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LldpStats {
    /// Well-formed LLDPDUs from other systems.
    pub frames: u64,
    /// Frames that failed to parse (logged, then dropped).
    pub malformed: u64,
    /// Frames sent from one of this node's own MACs (dropped).
    pub own: u64,
}

/// Listens on the surveyed interfaces that are up and keeps their
/// neighbors.
#[derive(Default)]
pub struct Lldp {
    capture: Capture,
    neighbors: Neighbors,
    own_macs: HashSet<String>,
    stats: LldpStats,
}

impl Lldp {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> LldpStats {
        self.stats
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

    /// This node's MACs (every link's): frames from them are our own, such
    /// as a co-located LLDP agent's, never a neighbor.
    pub fn set_own_macs<'a>(&mut self, macs: impl IntoIterator<Item = &'a str>) {
        self.own_macs = macs.into_iter().map(str::to_string).collect();
    }

    /// Listens on exactly the given interfaces that are up: opens sockets
    /// for new ones, closes those that went down or away and forgets their
    /// neighbors. Returns the interfaces whose neighbor was forgotten.
    pub fn follow(&mut self, surveyed: &[Interface]) -> Vec<u32> {
        let wanted: HashSet<u32> = surveyed
            .iter()
            .filter(|i| i.is_up())
            .map(|i| i.index)
            .collect();
        let stale: Vec<u32> = self
            .capture
            .listening()
            .filter(|i| !wanted.contains(i))
            .collect();
        let mut forgotten = Vec::new();
        for ifindex in stale {
            self.capture.close(ifindex);
            if self.neighbors.forget(ifindex) {
                forgotten.push(ifindex);
            }
        }
        for iface in surveyed.iter().filter(|i| wanted.contains(&i.index)) {
            if let Err(e) = self.capture.listen(iface.index, &iface.name) {
                tracing::warn!(
                    "cannot listen for LLDP on {}: {e} (needs CAP_NET_RAW)",
                    iface.name
                );
            }
        }
        forgotten.sort_unstable();
        forgotten
    }

    /// Waits until the neighbor published for some interface changes (a
    /// new neighbor, new facts, a shutdown frame, a TTL running out) and
    /// returns those interfaces. Refreshes are absorbed. Cancel-safe.
    pub async fn changes(&mut self) -> Vec<u32> {
        loop {
            let expiry = self.neighbors.next_expiry();
            let expired = async {
                match expiry {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                heard = self.capture.recv() => {
                    // A frame may still be queued from a socket closed since.
                    if !self.capture.is_listening(heard.ifindex) {
                        continue;
                    }
                    if let Some(ifindex) = self.hear(heard, Instant::now()) {
                        return vec![ifindex];
                    }
                }
                () = expired => {
                    let changed = self.neighbors.expire(Instant::now());
                    if !changed.is_empty() {
                        return changed;
                    }
                }
            }
        }
    }

    /// Applies one heard frame; the interface when its neighbor changed.
    fn hear(&mut self, heard: capture::Heard, now: Instant) -> Option<u32> {
        let source = format_mac(&heard.source);
        if self.own_macs.contains(&source) {
            self.stats.own += 1;
            return None;
        }
        match heard.pdu {
            Ok(pdu) => {
                self.stats.frames += 1;
                self.neighbors
                    .observe(heard.ifindex, &pdu, now)
                    .then_some(heard.ifindex)
            }
            Err(e) => {
                self.stats.malformed += 1;
                tracing::debug!(
                    "malformed LLDP frame from {source} on ifindex {}: {e}",
                    heard.ifindex
                );
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::TypedId;
    use crate::lldp::capture::Heard;
    use crate::lldp::frame::{FrameError, Lldpdu};

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
        let own = Heard {
            ifindex: 4,
            source: [2, 0xaa, 0, 0, 0, 1],
            pdu: Ok(pdu()),
        };
        assert_eq!(lldp.hear(own, now), None);
        assert!(lldp.neighbor(4).is_none());
        let other = Heard {
            ifindex: 4,
            source: [2, 0x5e, 0, 0, 0, 7],
            pdu: Ok(pdu()),
        };
        assert_eq!(lldp.hear(other, now), Some(4));
        assert_eq!(
            lldp.stats(),
            LldpStats {
                frames: 1,
                malformed: 0,
                own: 1
            }
        );
    }

    #[test]
    fn malformed_frames_are_counted_and_change_nothing() {
        let mut lldp = Lldp::new();
        let bad = Heard {
            ifindex: 4,
            source: [2, 0, 0, 0, 0, 9],
            pdu: Err(FrameError::Missing("TTL")),
        };
        assert_eq!(lldp.hear(bad, Instant::now()), None);
        assert_eq!(lldp.stats().malformed, 1);
        assert_eq!(lldp.neighbor_count(), 0);
    }
}
