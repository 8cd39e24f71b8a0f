//! What the agent keeps across a restart besides the maps: its LLDP
//! neighbors (`neighbors.json`), so a restarted agent resolves as before
//! while the switches' TTLs run instead of waiting a transmit interval to
//! hear them again.
//!
//! The table is saved when a neighbor appears, changes or goes, and once
//! more when the agent stops (SIGTERM: a rollout), with every expiry as it
//! stands then; refreshes write nothing. After a crash the expiries are
//! those of the last change, so a neighbor whose saved expiry has passed is
//! heard again before it counts. A neighbor is restored only onto the same
//! link (index, name and MAC) that is still up: a link that went down
//! meanwhile may have been recabled.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::inventory::Interface;
use crate::lldp::Lldp;
use crate::snapshot::{SavedNeighbor, SavedNeighbors};

/// The neighbor table as saved: expiries in wall-clock time.
pub fn save(node: &str, lldp: &Lldp, interfaces: &[Interface]) -> SavedNeighbors {
    let (now, wall) = (Instant::now(), Timestamp::now());
    let neighbors = lldp
        .entries()
        .into_iter()
        .filter_map(|(index, neighbor, expires)| {
            let iface = interfaces.iter().find(|i| i.index == index)?;
            let left = expires.saturating_duration_since(now);
            Some(SavedNeighbor {
                interface: iface.name.clone(),
                index,
                mac: iface.mac.clone(),
                expires: wall.checked_add(left).ok()?.round(to_millis()).ok()?,
                neighbor: neighbor.clone(),
            })
        })
        .collect();
    SavedNeighbors {
        node: node.to_string(),
        neighbors,
    }
}

/// Milliseconds are plenty, and rounding down never lengthens a life.
fn to_millis() -> k8s_openapi::jiff::TimestampRound {
    use k8s_openapi::jiff::{RoundMode, TimestampRound, Unit};
    TimestampRound::new()
        .smallest(Unit::Millisecond)
        .mode(RoundMode::Trunc)
}

/// Puts the saved neighbors back where they still apply; returns how many.
pub fn restore(
    saved: SavedNeighbors,
    node: &str,
    lldp: &mut Lldp,
    interfaces: &[Interface],
) -> usize {
    if saved.node != node {
        return 0;
    }
    let (now, wall) = (Instant::now(), Timestamp::now());
    let mut restored = 0;
    for s in saved.neighbors {
        let same_link = interfaces
            .iter()
            .any(|i| i.index == s.index && i.name == s.interface && i.mac == s.mac && i.is_up());
        let left = s.expires.duration_since(wall);
        let Some(left) = positive(left) else { continue };
        if same_link {
            lldp.restore(s.index, s.neighbor, now + left);
            restored += 1;
        }
    }
    restored
}

fn positive(d: SignedDuration) -> Option<Duration> {
    Duration::try_from(d).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{LinkKind, Neighbor, OperState, TypedId};

    fn up(name: &str, index: u32) -> Interface {
        let mut i = Interface::new(name, index, LinkKind::Physical);
        i.mac = Some(format!("52:54:00:00:00:{index:02x}"));
        i.oper_state = OperState::Up;
        i.carrier = true;
        i
    }

    fn neighbor(name: &str) -> Neighbor {
        Neighbor {
            protocol: crate::inventory::Protocol::Lldp,
            chassis_id: TypedId {
                subtype: "local".into(),
                value: name.into(),
            },
            port_id: TypedId {
                subtype: "local".into(),
                value: "p1".into(),
            },
            system_name: Some(name.into()),
            port_description: None,
            system_description: None,
            management_addresses: vec![],
            pvid: None,
            vlans: vec![],
            ttl_seconds: 120,
        }
    }

    fn saved(index: u32, name: &str, mac: &str, expires_in: i64) -> SavedNeighbor {
        SavedNeighbor {
            interface: name.into(),
            index,
            mac: Some(mac.into()),
            expires: Timestamp::now() + SignedDuration::from_secs(expires_in),
            neighbor: neighbor(&format!("tor-{name}")),
        }
    }

    #[test]
    fn only_live_neighbors_on_the_same_up_link_come_back() {
        let ifaces = [up("ens4", 4), up("ens5", 5), up("ens6", 6)];
        let mut down = up("ens7", 7);
        down.carrier = false;
        let ifaces = [&ifaces[..], &[down]].concat();
        let table = SavedNeighbors {
            node: "node1".into(),
            neighbors: vec![
                saved(4, "ens4", "52:54:00:00:00:04", 90),
                saved(5, "ens5", "52:54:00:00:00:05", -5), // expired
                saved(6, "ens9", "52:54:00:00:00:06", 90), // renamed
                saved(7, "ens7", "52:54:00:00:00:07", 90), // down now
                saved(8, "ens8", "52:54:00:00:00:08", 90), // gone
            ],
        };
        let mut lldp = Lldp::new();
        assert_eq!(restore(table.clone(), "other-node", &mut lldp, &ifaces), 0);
        assert_eq!(restore(table, "node1", &mut lldp, &ifaces), 1);
        assert_eq!(
            lldp.neighbor(4).and_then(|n| n.system_name.as_deref()),
            Some("tor-ens4")
        );
        assert!(lldp.neighbor(5).is_none() && lldp.neighbor(6).is_none());
        assert!(!lldp.take_dirty(), "restoring is no change to save");
        // Saved again, it is the same neighbor with (about) the same expiry.
        let again = save("node1", &lldp, &ifaces);
        assert_eq!(again.neighbors.len(), 1);
        assert_eq!(again.neighbors[0].neighbor, neighbor("tor-ens4"));
        let left = again.neighbors[0].expires.duration_since(Timestamp::now());
        assert!(left > SignedDuration::from_secs(85) && left <= SignedDuration::from_secs(90));
    }
}
