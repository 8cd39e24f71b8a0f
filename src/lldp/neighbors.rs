//! The neighbor table: who each interface hears, until the TTL runs out.
//!
//! Pure: time is passed in. A link may hear several LLDP agents (a switch
//! and a co-located host, or a hub); each is kept under its MSAP identifier
//! (chassis ID + port ID), and the interface publishes the smallest one, so
//! the choice is stable while they all keep talking.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::inventory::{Neighbor, TypedId};

use super::frame::Lldpdu;

type Msap = (TypedId, TypedId);

#[derive(Debug, Default)]
pub struct Neighbors {
    by_interface: HashMap<u32, BTreeMap<Msap, Entry>>,
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

    /// Records an LLDPDU heard on `ifindex`. A TTL of 0 (shutdown) removes
    /// that neighbor at once. Returns whether what `ifindex` publishes
    /// changed; a refresh of the same facts is not a change.
    pub fn observe(&mut self, ifindex: u32, pdu: &Lldpdu, now: Instant) -> bool {
        let before = self.get(ifindex).cloned();
        let msap = (pdu.chassis_id.clone(), pdu.port_id.clone());
        let table = self.by_interface.entry(ifindex).or_default();
        if pdu.ttl_seconds == 0 {
            table.remove(&msap);
        } else {
            table.insert(
                msap,
                Entry {
                    neighbor: pdu.neighbor(),
                    expires: now + Duration::from_secs(u64::from(pdu.ttl_seconds)),
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
        self.by_interface.remove(&ifindex).is_some()
    }

    /// Drops neighbors whose TTL has run out; returns the interfaces whose
    /// published neighbor changed.
    pub fn expire(&mut self, now: Instant) -> Vec<u32> {
        let mut changed = Vec::new();
        self.by_interface.retain(|ifindex, table| {
            let first = table.keys().next().cloned();
            table.retain(|_, e| e.expires > now);
            if table.keys().next() != first.as_ref() {
                changed.push(*ifindex);
            }
            !table.is_empty()
        });
        changed.sort_unstable();
        changed
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

    fn pdu(chassis: &str, port: &str, ttl: u16, name: &str) -> Lldpdu {
        Lldpdu {
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
            ..Default::default()
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
    fn shutdown_frame_removes_at_once() {
        let t0 = Instant::now();
        let mut n = Neighbors::new();
        n.observe(4, &pdu("c1", "e1", 120, "sw"), t0);
        assert!(n.observe(4, &pdu("c1", "e1", 0, "sw"), t0));
        assert!(n.get(4).is_none());
        // A shutdown from a stranger changes nothing.
        assert!(!n.observe(5, &pdu("c9", "e9", 0, "x"), t0));
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
