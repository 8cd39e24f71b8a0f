//! The neighbor table: who each interface hears, until the TTL runs out.
//!
//! Pure: time is passed in. A link may hear several agents (a switch and a
//! co-located host, a hub, or one switch speaking LLDP and CDP); each is
//! kept under its protocol and identifier (chassis ID + port ID), and the
//! interface publishes one: LLDP's before another protocol's (lldpd's
//! rule), then the smallest identifier, so the choice is stable while they
//! all keep talking and two protocols never show two neighbors.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::inventory::{Neighbor, Protocol, TypedId};

type Msap = (Protocol, TypedId, TypedId);

#[derive(Debug, Default)]
pub struct Neighbors {
    by_interface: HashMap<u32, BTreeMap<Msap, Entry>>,
    /// Set when a neighbor appears, changes or goes (not on a refresh):
    /// what is worth saving across a restart.
    dirty: bool,
}

#[derive(Debug)]
struct Entry {
    neighbor: Neighbor,
    expires: Instant,
}

impl Neighbors {
    pub fn new() -> Self {
        Self::default()
    }

    /// The neighbor interface `ifindex` publishes.
    pub fn get(&self, ifindex: u32) -> Option<&Neighbor> {
        self.by_interface
            .get(&ifindex)?
            .values()
            .next()
            .map(|e| &e.neighbor)
    }

    /// Number of interfaces with a neighbor.
    pub fn len(&self) -> usize {
        self.by_interface.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_interface.is_empty()
    }

    /// Records a neighbor heard on `ifindex`. A TTL of 0 (LLDP's shutdown)
    /// removes that neighbor at once. Returns whether what `ifindex`
    /// publishes changed; a refresh of the same facts is not a change.
    pub fn observe(&mut self, ifindex: u32, neighbor: &Neighbor, now: Instant) -> bool {
        let before = self.get(ifindex).cloned();
        let msap = (
            neighbor.protocol,
            neighbor.chassis_id.clone(),
            neighbor.port_id.clone(),
        );
        let table = self.by_interface.entry(ifindex).or_default();
        if neighbor.ttl_seconds == 0 {
            self.dirty |= table.remove(&msap).is_some();
        } else {
            self.dirty |= table.get(&msap).is_none_or(|e| e.neighbor != *neighbor);
            table.insert(
                msap,
                Entry {
                    neighbor: neighbor.clone(),
                    expires: now + Duration::from_secs(u64::from(neighbor.ttl_seconds)),
                },
            );
        }
        if table.is_empty() {
            self.by_interface.remove(&ifindex);
        }
        self.get(ifindex) != before.as_ref()
    }

    /// Forgets everything heard on `ifindex` (it went down or away).
    /// Returns whether it had a neighbor.
    pub fn forget(&mut self, ifindex: u32) -> bool {
        let had = self.by_interface.remove(&ifindex).is_some();
        self.dirty |= had;
        had
    }

    /// Drops neighbors whose TTL has run out; returns the interfaces whose
    /// published neighbor changed.
    pub fn expire(&mut self, now: Instant) -> Vec<u32> {
        let mut changed = Vec::new();
        let mut dropped = false;
        self.by_interface.retain(|ifindex, table| {
            let first = table.keys().next().cloned();
            let before = table.len();
            table.retain(|_, e| e.expires > now);
            dropped |= table.len() != before;
            if table.keys().next() != first.as_ref() {
                changed.push(*ifindex);
            }
            !table.is_empty()
        });
        self.dirty |= dropped;
        changed.sort_unstable();
        changed
    }

    /// Whether the table changed (not merely refreshed) since last asked.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Every neighbor held, with its interface and expiry, by interface
    /// then MSAP.
    pub fn entries(&self) -> Vec<(u32, &Neighbor, Instant)> {
        let mut out: Vec<(u32, &Neighbor, Instant)> = self
            .by_interface
            .iter()
            .flat_map(|(i, t)| t.values().map(move |e| (*i, &e.neighbor, e.expires)))
            .collect();
        out.sort_by(|a, b| {
            (a.0, &a.1.chassis_id, &a.1.port_id).cmp(&(b.0, &b.1.chassis_id, &b.1.port_id))
        });
        out
    }

    /// Puts back a neighbor saved before a restart, unless it has expired.
    /// Not a change to save: it is what was saved.
    pub fn restore(&mut self, ifindex: u32, neighbor: Neighbor, expires: Instant, now: Instant) {
        if expires <= now {
            return;
        }
        let msap = (
            neighbor.protocol,
            neighbor.chassis_id.clone(),
            neighbor.port_id.clone(),
        );
        self.by_interface
            .entry(ifindex)
            .or_default()
            .insert(msap, Entry { neighbor, expires });
    }

    /// When the next neighbor expires, if any is held.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_interface
            .values()
            .flat_map(|t| t.values())
            .map(|e| e.expires)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(chassis: &str, port: &str, ttl: u16, name: &str) -> Neighbor {
        heard(Protocol::Lldp, chassis, port, ttl, name)
    }

    fn heard(protocol: Protocol, chassis: &str, port: &str, ttl: u16, name: &str) -> Neighbor {
        Neighbor {
            protocol,
            chassis_id: TypedId {
                subtype: "local".into(),
                value: chassis.into(),
            },
            port_id: TypedId {
                subtype: "ifname".into(),
                value: port.into(),
            },
            ttl_seconds: ttl,
            system_name: Some(name.into()),
            port_description: None,
            system_description: None,
            management_addresses: Vec::new(),
            pvid: None,
            vlans: Vec::new(),
        }
    }

    #[test]
    fn refresh_is_not_a_change_but_new_facts_are() {
        let t0 = Instant::now();
        let mut n = Neighbors::new();
        assert!(n.observe(4, &pdu("c1", "e1", 120, "tor-green-01"), t0));
        assert!(!n.observe(
            4,
            &pdu("c1", "e1", 120, "tor-green-01"),
            t0 + Duration::from_secs(30)
        ));
        assert!(n.observe(
            4,
            &pdu("c1", "e1", 120, "tor-green-02"),
            t0 + Duration::from_secs(31)
        ));
        assert_eq!(
            n.get(4).unwrap().system_name.as_deref(),
            Some("tor-green-02")
        );
    }

    #[test]
    fn ttl_expiry_and_refresh_extends_it() {
        let t0 = Instant::now();
        let mut n = Neighbors::new();
        n.observe(4, &pdu("c1", "e1", 4, "sw"), t0);
        assert_eq!(n.next_expiry(), Some(t0 + Duration::from_secs(4)));
        n.observe(4, &pdu("c1", "e1", 4, "sw"), t0 + Duration::from_secs(3));
        assert!(n.expire(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(n.expire(t0 + Duration::from_secs(7)), vec![4]);
        assert!(n.get(4).is_none());
        assert!(n.is_empty());
        assert_eq!(n.next_expiry(), None);
    }

    #[test]
    fn only_real_changes_make_the_table_dirty() {
        let t0 = Instant::now();
        let mut n = Neighbors::new();
        assert!(!n.take_dirty());
        n.observe(4, &pdu("c1", "e1", 120, "sw"), t0);
        assert!(n.take_dirty(), "appeared");
        n.observe(4, &pdu("c1", "e1", 120, "sw"), t0 + Duration::from_secs(30));
        assert!(!n.take_dirty(), "a refresh is not a change");
        n.observe(4, &pdu("c2", "e1", 120, "other"), t0);
        assert!(n.take_dirty(), "a second agent on the link");
        n.observe(4, &pdu("c1", "e1", 120, "renamed"), t0);
        assert!(n.take_dirty(), "new facts");
        n.observe(4, &pdu("c2", "e1", 0, "other"), t0);
        assert!(n.take_dirty(), "shutdown");
        n.observe(9, &pdu("c9", "e9", 0, "x"), t0);
        assert!(!n.take_dirty(), "a stranger's shutdown");
        assert!(n.expire(t0 + Duration::from_secs(60)).is_empty());
        assert!(!n.take_dirty());
        n.expire(t0 + Duration::from_secs(200));
        assert!(n.take_dirty(), "expired");
        n.observe(4, &pdu("c1", "e1", 120, "sw"), t0);
        n.take_dirty();
        assert!(n.forget(4) && n.take_dirty(), "forgotten");
    }

    #[test]
    fn restored_neighbors_keep_their_expiry_and_expired_ones_are_dropped() {
        let t0 = Instant::now();
        let mut n = Neighbors::new();
        n.observe(4, &pdu("c1", "e1", 120, "sw"), t0);
        let saved: Vec<(u32, Neighbor, Instant)> = n
            .entries()
            .into_iter()
            .map(|(i, nb, at)| (i, nb.clone(), at))
            .collect();
        let mut restarted = Neighbors::new();
        for (i, nb, at) in saved.clone() {
            restarted.restore(i, nb, at, t0 + Duration::from_secs(10));
        }
        assert_eq!(restarted.get(4), n.get(4));
        assert_eq!(restarted.next_expiry(), Some(t0 + Duration::from_secs(120)));
        assert!(!restarted.take_dirty(), "restoring is not a change");
        let mut late = Neighbors::new();
        for (i, nb, at) in saved {
            late.restore(i, nb, at, t0 + Duration::from_secs(121));
        }
        assert!(late.is_empty(), "expired while the agent was away");
    }

    #[test]
    fn shutdown_frame_removes_at_once() {
        let t0 = Instant::now();
        let mut n = Neighbors::new();
        n.observe(4, &pdu("c1", "e1", 120, "sw"), t0);
        assert!(n.observe(4, &pdu("c1", "e1", 0, "sw"), t0));
        assert!(n.get(4).is_none());
        // A shutdown from a stranger changes nothing.
        assert!(!n.observe(5, &pdu("c9", "e9", 0, "x"), t0));
    }

    /// One switch speaking LLDP and CDP (or another protocol's neighbor
    /// beside an LLDP one): one neighbor, LLDP's; the other stands in once
    /// LLDP's goes, and expires on its own hold time.
    #[test]
    fn lldp_is_preferred_over_other_protocols() {
        let t0 = Instant::now();
        let mut n = Neighbors::new();
        assert!(n.observe(4, &heard(Protocol::Cdp, "a", "e1", 180, "sw-cdp"), t0));
        assert_eq!(n.get(4).unwrap().protocol, Protocol::Cdp);
        assert!(n.observe(4, &heard(Protocol::Lldp, "z", "e1", 120, "sw"), t0));
        assert_eq!(
            n.get(4).unwrap().protocol,
            Protocol::Lldp,
            "LLDP first, whatever the IDs"
        );
        assert!(
            !n.observe(
                4,
                &heard(Protocol::Sonmp, "0.0.0.0", "00-00-01", 120, "x"),
                t0
            ),
            "a third protocol changes nothing published"
        );
        assert_eq!(n.expire(t0 + Duration::from_secs(121)), vec![4]);
        assert_eq!(n.get(4).unwrap().protocol, Protocol::Cdp);
        assert_eq!(n.expire(t0 + Duration::from_secs(181)), vec![4]);
        assert!(n.get(4).is_none());
    }

    #[test]
    fn several_agents_publish_a_stable_choice() {
        let t0 = Instant::now();
        let mut n = Neighbors::new();
        n.observe(4, &pdu("c2", "e1", 120, "b"), t0);
        assert!(
            n.observe(4, &pdu("c1", "e1", 120, "a"), t0),
            "smaller MSAP wins"
        );
        assert!(
            !n.observe(4, &pdu("c2", "e1", 120, "b"), t0),
            "the other refreshing changes nothing"
        );
        assert_eq!(n.get(4).unwrap().system_name.as_deref(), Some("a"));
        assert!(
            n.observe(4, &pdu("c1", "e1", 0, "a"), t0),
            "falls back to the other"
        );
        assert_eq!(n.get(4).unwrap().system_name.as_deref(), Some("b"));
        assert!(n.forget(4));
        assert!(!n.forget(4));
    }
}
