//! The Events a resolution change makes on the node's NodeSurvey (pure):
//! a network that moved to another device, one that lost its device, one
//! that found one again, each saying why. Only transitions of a network
//! that already selected this node: a new map resolving on every node is
//! not news (its status says where), and an unchanged node says nothing.

use std::collections::BTreeMap;

use crate::events::Reason;
use crate::inventory::Interface;
use crate::resolve::{Resolution, why_left};

/// One Event to emit: its reason, the network it is about, its note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkNotice {
    pub reason: Reason,
    pub network: String,
    pub note: String,
}

/// Each selected network's device (`None`: unresolved) in `resolution`.
pub fn devices(resolution: &Resolution) -> BTreeMap<String, Option<String>> {
    resolution
        .iter()
        .filter(|(_, r)| r.selected)
        .map(|(n, r)| (n.clone(), r.device.as_ref().map(|d| d.name.clone())))
        .collect()
}

/// What changed from `before` (network -> device, as last published) to
/// `after`, on node `node`.
pub fn notices(
    node: &str,
    before: &BTreeMap<String, Option<String>>,
    after: &Resolution,
    interfaces: &[Interface],
) -> Vec<NetworkNotice> {
    let mut out = Vec::new();
    for (network, resolved) in after.iter().filter(|(_, r)| r.selected) {
        let Some(was) = before.get(network) else {
            continue;
        };
        let now = resolved.device.as_ref().map(|d| d.name.as_str());
        let (reason, note) = match (was.as_deref(), now) {
            (Some(old), Some(new)) if old != new => (
                Reason::NetworkMoved,
                format!(
                    "{network} moved from {old} to {new} on node {node}: {}",
                    why_left(old, resolved, interfaces)
                ),
            ),
            (Some(old), None) => (
                Reason::NetworkUnresolved,
                format!(
                    "{network} has no device on node {node} now (it was {old}): {}",
                    resolved.reason.as_deref().unwrap_or("no reason given")
                ),
            ),
            (None, Some(new)) => (
                Reason::NetworkResolved,
                format!("{network} resolves to {new} on node {node} again"),
            ),
            _ => continue,
        };
        out.push(NetworkNotice {
            reason,
            network: network.clone(),
            note,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::LinkKind;
    use crate::resolve::{Device, Resolved};

    fn resolved(device: Option<&str>, reason: Option<&str>) -> Resolved {
        Resolved {
            selected: true,
            device: device.map(|d| Device {
                name: d.into(),
                index: 4,
                mac: None,
            }),
            candidates: device.into_iter().map(str::to_string).collect(),
            rule: None,
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn moves_losses_and_returns_say_why_and_nothing_else_speaks() {
        let mut ens4 = Interface::new("ens4", 4, LinkKind::Physical);
        ens4.carrier = false;
        let interfaces = [ens4];
        let before: BTreeMap<String, Option<String>> = [
            ("green", Some("ens4")),
            ("blue", Some("ens6")),
            ("red", None),
            ("grey", Some("ens7")),
            ("still", None),
        ]
        .into_iter()
        .map(|(n, d)| (n.to_string(), d.map(str::to_string)))
        .collect();
        let after: Resolution = [
            ("green", resolved(Some("ens5"), None)),
            (
                "blue",
                resolved(
                    None,
                    Some("no surveyed interface matches spec.match: ens6 fails lldp.systemName"),
                ),
            ),
            ("red", resolved(Some("ens8"), None)),
            ("grey", resolved(Some("ens7"), None)),
            ("still", resolved(None, Some("no NIC"))),
            ("new", resolved(Some("ens9"), None)),
        ]
        .into_iter()
        .map(|(n, r)| (n.to_string(), r))
        .collect();
        let got = notices("node07", &before, &after, &interfaces);
        let said: Vec<(Reason, &str, &str)> = got
            .iter()
            .map(|n| (n.reason, n.network.as_str(), n.note.as_str()))
            .collect();
        assert_eq!(
            said,
            [
                (
                    Reason::NetworkUnresolved,
                    "blue",
                    "blue has no device on node node07 now (it was ens6): no surveyed interface matches spec.match: ens6 fails lldp.systemName"
                ),
                (
                    Reason::NetworkMoved,
                    "green",
                    "green moved from ens4 to ens5 on node node07: ens4 carrier down"
                ),
                (
                    Reason::NetworkResolved,
                    "red",
                    "red resolves to ens8 on node node07 again"
                ),
            ]
        );
        assert!(notices("node07", &devices(&after), &after, &interfaces).is_empty());
    }
}
