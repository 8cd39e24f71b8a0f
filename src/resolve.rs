//! Resolution: which local device each network is on this node. Pure and
//! deterministic: the same inventory, maps, node and labels always give
//! the same answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::crd::NetworkStatus;
use crate::inventory::Interface;
use crate::network_map::CompiledMap;

/// One network on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Whether the map's nodeSelector selects this node at all.
    pub selected: bool,
    /// The chosen device; `None` when unresolved.
    pub device: Option<Device>,
    /// Every candidate, best first.
    pub candidates: Vec<String>,
    /// Which part of the map produced the candidates.
    pub rule: Option<Rule>,
    /// Why there is no device.
    pub reason: Option<String>,
}

/// The chosen device, with what identifies it beyond its name, so the CNI
/// plugin can tell it is still the same link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub index: u32,
    pub mac: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `spec.interfaces` named the device for this node.
    Interfaces,
    /// `spec.match` selected it.
    Match,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Interfaces => "interfaces",
            Rule::Match => "match",
        }
    }
}

/// Every network's resolution, by network name.
pub type Resolution = BTreeMap<String, Resolved>;

/// Most interfaces an unresolved reason lists, so it stays readable.
const REASON_LIST_MAX: usize = 6;

/// Resolves every map on this node. `interfaces` are the surveyed ones
/// (LLDP neighbors filled in).
pub fn resolve<'a>(
    interfaces: &[Interface],
    maps: impl IntoIterator<Item = &'a CompiledMap>,
    node: &str,
    labels: &BTreeMap<String, String>,
) -> Resolution {
    maps.into_iter()
        .map(|m| (m.name.clone(), resolve_one(interfaces, m, node, labels)))
        .collect()
}

fn resolve_one(
    interfaces: &[Interface],
    map: &CompiledMap,
    node: &str,
    labels: &BTreeMap<String, String>,
) -> Resolved {
    if !map.selects(labels) {
        return Resolved {
            selected: false,
            ..unresolved(
                None,
                format!("node {node} is not selected by spec.nodeSelector"),
            )
        };
    }
    let explicit: Vec<&str> = map.explicit_for(node).collect();
    let (rule, mut candidates): (Rule, Vec<&Interface>) = if !explicit.is_empty() {
        // In the order given; each name must be a surveyed interface.
        let found = explicit
            .iter()
            .filter_map(|name| interfaces.iter().find(|i| i.name == *name))
            .collect();
        (Rule::Interfaces, found)
    } else if map.has_match_rule() {
        let mut found: Vec<&Interface> = interfaces.iter().filter(|i| map.matches(i)).collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        (Rule::Match, found)
    } else {
        return unresolved(
            None,
            format!("spec.interfaces has no entry for node {node} and there is no spec.match rule"),
        );
    };
    // A bridge/bond/team port cannot carry the pod's link: never a
    // candidate, and said so when nothing else is left.
    let busy: Vec<String> = candidates.iter().filter_map(|i| i.busy_reason()).collect();
    candidates.retain(|i| i.busy_reason().is_none());
    // Stable: explicit order or name order survives among equals.
    candidates.sort_by_key(|i| !i.is_up());
    if candidates.is_empty() && !busy.is_empty() {
        return unresolved(
            Some(rule),
            format!(
                "{}: a macvlan or ipvlan cannot be put on a bridge, bond or team port (map the master itself, or take the port out)",
                busy.join(", ")
            ),
        );
    }
    let Some(best) = candidates.first() else {
        let reason = match rule {
            Rule::Interfaces => format!(
                "spec.interfaces names {} for node {node}, but no surveyed interface has that name \
                 (is it there, and does the agent's --include/--all cover it?)",
                explicit.join(", ")
            ),
            Rule::Match => no_match_reason(interfaces, map, node),
        };
        return unresolved(Some(rule), reason);
    };
    Resolved {
        selected: true,
        device: Some(Device {
            name: best.name.clone(),
            index: best.index,
            mac: best.mac.clone(),
        }),
        candidates: candidates.iter().map(|i| i.name.clone()).collect(),
        rule: Some(rule),
        reason: None,
    }
}

fn unresolved(rule: Option<Rule>, reason: String) -> Resolved {
    Resolved {
        selected: true,
        device: None,
        candidates: Vec::new(),
        rule,
        reason: Some(reason),
    }
}

/// "no surveyed interface on node1 matches spec.match: sv-a (lldp.systemName), ..."
fn no_match_reason(interfaces: &[Interface], map: &CompiledMap, node: &str) -> String {
    if interfaces.is_empty() {
        return format!(
            "node {node} has no surveyed interfaces (check the agent's --include/--all)"
        );
    }
    let mut sorted: Vec<&Interface> = interfaces.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = format!("no surveyed interface on node {node} matches spec.match:");
    for (n, i) in sorted.iter().take(REASON_LIST_MAX).enumerate() {
        let sep = if n == 0 { " " } else { ", " };
        let failed = map
            .mismatch(i)
            .map_or_else(|| "?".into(), |m| m.to_string());
        let _ = write!(out, "{sep}{} fails {failed}", i.name);
    }
    if interfaces.len() > REASON_LIST_MAX {
        let _ = write!(out, ", and {} more", interfaces.len() - REASON_LIST_MAX);
    }
    out
}

/// Marks each interface with the networks it serves (is the device of).
pub fn annotate(interfaces: &mut [Interface], resolution: &Resolution) {
    for iface in interfaces.iter_mut() {
        iface.networks = resolution
            .iter()
            .filter(|(_, r)| r.device.as_ref().is_some_and(|d| d.index == iface.index))
            .map(|(name, _)| name.clone())
            .collect();
    }
}

impl Resolved {
    /// The NodeSurvey `status.networks` entry.
    pub fn status(&self) -> NetworkStatus {
        NetworkStatus {
            device: self.device.as_ref().map(|d| d.name.clone()),
            candidates: self.candidates.clone(),
            rule: self.rule.map(|r| r.as_str().to_string()),
            reason: self.reason.clone(),
            selected: self.selected,
        }
    }
}

/// A log line for a network whose resolution changed, saying why when it
/// can: `green: ens4 -> ens5 (ens4 carrier down)`. `None` when unchanged.
pub fn explain(
    network: &str,
    before: Option<&Resolved>,
    after: Option<&Resolved>,
    interfaces: &[Interface],
) -> Option<String> {
    let name = |r: Option<&Resolved>| r.and_then(|r| r.device.as_ref()).map(|d| d.name.clone());
    let (old, new) = (name(before), name(after));
    if before == after {
        return None;
    }
    Some(match (old, new, after) {
        (_, _, None) => format!("{network}: map removed"),
        (None, None, Some(a)) => format!(
            "{network}: unresolved ({})",
            a.reason.as_deref().unwrap_or("no reason")
        ),
        (None, Some(new), Some(a)) => format!(
            "{network}: resolved to {new} ({})",
            a.rule.map_or("?", Rule::as_str)
        ),
        (Some(old), None, Some(a)) => format!(
            "{network}: {old} -> none ({})",
            a.reason.as_deref().unwrap_or("no reason")
        ),
        (Some(old), Some(new), Some(a)) if old != new => {
            format!(
                "{network}: {old} -> {new} ({})",
                why_left(&old, a, interfaces)
            )
        }
        (Some(_), Some(new), Some(a)) => format!(
            "{network}: {new} kept, candidates now [{}]",
            a.candidates.join(", ")
        ),
    })
}

/// Why the old device lost its place.
pub fn why_left(old: &str, after: &Resolved, interfaces: &[Interface]) -> String {
    match interfaces.iter().find(|i| i.name == old) {
        None => format!("{old} gone"),
        Some(i) if !i.carrier => format!("{old} carrier down"),
        Some(i) if !i.is_up() => format!("{old} {}", i.oper_state),
        Some(_) if !after.candidates.iter().any(|c| c == old) => format!("{old} no longer matches"),
        Some(_) => format!("{old} outranked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{LinkKind, Neighbor, OperState, TypedId};
    use crate::network_map::parse_documents;

    fn iface(name: &str, index: u32, up: bool, switch: Option<&str>) -> Interface {
        let mut i = Interface::new(name, index, LinkKind::Physical);
        i.oper_state = if up {
            OperState::Up
        } else {
            OperState::LowerLayerDown
        };
        i.carrier = up;
        i.mac = Some(format!("52:54:00:00:00:{index:02x}"));
        i.lldp = switch.map(|s| Neighbor {
            protocol: crate::inventory::Protocol::Lldp,
            chassis_id: TypedId {
                subtype: "local".into(),
                value: s.into(),
            },
            port_id: TypedId {
                subtype: "local".into(),
                value: "p1".into(),
            },
            system_name: Some(s.into()),
            port_description: None,
            system_description: None,
            management_addresses: vec![],
            pvid: None,
            vlans: vec![],
            ttl_seconds: 120,
        });
        i
    }

    fn enslaved(mut i: Interface, master: &str, kind: &str) -> Interface {
        i.master = Some(master.into());
        i.master_kind = Some(LinkKind::from(kind));
        i
    }

    fn maps(yaml: &str) -> Vec<CompiledMap> {
        parse_documents(yaml)
            .unwrap()
            .iter()
            .map(|m| CompiledMap::compile(m).unwrap())
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const GREEN: &str =
        "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: green}\n";

    /// (case, interfaces, spec, node, labels) -> (device, candidates, rule, reason contains)
    #[test]
    fn resolution_table() {
        type Case<'a> = (
            &'a str,
            Vec<Interface>,
            &'a str,
            &'a str,
            Vec<(&'a str, &'a str)>,
            Option<&'a str>,
            Vec<&'a str>,
            Option<Rule>,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "lldp match",
                vec![
                    iface("ens4", 4, true, Some("tor-green-01")),
                    iface("ens5", 5, true, Some("tor-red-01")),
                ],
                "{match: {lldp: {systemName: 'tor-green-*'}}}",
                "n1",
                vec![],
                Some("ens4"),
                vec!["ens4"],
                Some(Rule::Match),
                "",
            ),
            (
                "tie broken by name",
                vec![
                    iface("ens5", 5, true, Some("tor-green-02")),
                    iface("ens4", 4, true, Some("tor-green-01")),
                ],
                "{match: {lldp: {systemName: 'tor-green-*'}}}",
                "n1",
                vec![],
                Some("ens4"),
                vec!["ens4", "ens5"],
                Some(Rule::Match),
                "",
            ),
            (
                "carrier up first",
                vec![iface("ens4", 4, false, None), iface("ens5", 5, true, None)],
                "{match: {names: ['ens*']}}",
                "n1",
                vec![],
                Some("ens5"),
                vec!["ens5", "ens4"],
                Some(Rule::Match),
                "",
            ),
            (
                "only down candidates still resolve",
                vec![iface("ens4", 4, false, None)],
                "{match: {names: ['ens*']}}",
                "n1",
                vec![],
                Some("ens4"),
                vec!["ens4"],
                Some(Rule::Match),
                "",
            ),
            (
                "explicit wins over match",
                vec![
                    iface("ens4", 4, true, Some("tor-green-01")),
                    iface("ens9", 9, true, None),
                ],
                "{interfaces: [{node: n1, interface: ens9}], match: {lldp: {systemName: 'tor-green-*'}}}",
                "n1",
                vec![],
                Some("ens9"),
                vec!["ens9"],
                Some(Rule::Interfaces),
                "",
            ),
            (
                "explicit for another node: match applies",
                vec![iface("ens4", 4, true, Some("tor-green-01"))],
                "{interfaces: [{node: n7, interface: ens9}], match: {lldp: {systemName: 'tor-green-*'}}}",
                "n1",
                vec![],
                Some("ens4"),
                vec!["ens4"],
                Some(Rule::Match),
                "",
            ),
            (
                "explicit order, carrier first",
                vec![
                    iface("ens2", 2, true, None),
                    iface("ens9", 9, false, None),
                    iface("ens3", 3, true, None),
                ],
                "{interfaces: [{node: n1, interface: ens9}, {node: n1, interface: ens3}, {node: n1, interface: ens2}]}",
                "n1",
                vec![],
                Some("ens3"),
                vec!["ens3", "ens2", "ens9"],
                Some(Rule::Interfaces),
                "",
            ),
            (
                "explicit but missing: no fallback to match",
                vec![iface("ens4", 4, true, Some("tor-green-01"))],
                "{interfaces: [{node: n1, interface: ens9}], match: {lldp: {systemName: 'tor-green-*'}}}",
                "n1",
                vec![],
                None,
                vec![],
                Some(Rule::Interfaces),
                "names ens9 for node n1",
            ),
            (
                "nothing matches: each interface's failing field",
                vec![
                    iface("ens4", 4, true, Some("tor-red-01")),
                    iface("ens5", 5, true, None),
                ],
                "{match: {lldp: {systemName: 'tor-blue-*'}}}",
                "n1",
                vec![],
                None,
                vec![],
                Some(Rule::Match),
                "ens4 fails lldp.systemName, ens5 fails lldp (no neighbor)",
            ),
            (
                "not selected",
                vec![iface("ens4", 4, true, None)],
                "{nodeSelector: {matchLabels: {rack: r1}}, match: {names: ['*']}}",
                "n1",
                vec![("rack", "r2")],
                None,
                vec![],
                None,
                "not selected by spec.nodeSelector",
            ),
            (
                "selected",
                vec![iface("ens4", 4, true, None)],
                "{nodeSelector: {matchLabels: {rack: r1}}, match: {names: ['*']}}",
                "n1",
                vec![("rack", "r1")],
                Some("ens4"),
                vec!["ens4"],
                Some(Rule::Match),
                "",
            ),
            (
                "no rule for this node",
                vec![iface("ens4", 4, true, None)],
                "{interfaces: [{node: n7, interface: ens9}]}",
                "n1",
                vec![],
                None,
                vec![],
                None,
                "no entry for node n1",
            ),
            (
                "a bridge port is passed over for a free NIC",
                vec![
                    enslaved(iface("ens4", 4, true, None), "br0", "bridge"),
                    iface("ens5", 5, false, None),
                ],
                "{match: {names: ['ens*']}}",
                "n1",
                vec![],
                Some("ens5"),
                vec!["ens5"],
                Some(Rule::Match),
                "",
            ),
            (
                "a bond port alone is unresolved, saying why",
                vec![enslaved(iface("ens4", 4, true, None), "bond0", "bond")],
                "{interfaces: [{node: n1, interface: ens4}]}",
                "n1",
                vec![],
                None,
                vec![],
                Some(Rule::Interfaces),
                "ens4 is a port of bond bond0: a macvlan or ipvlan cannot be put on a bridge, bond or team port",
            ),
            (
                "a VRF port carries a macvlan",
                vec![enslaved(iface("ens4", 4, true, None), "vrf-green", "vrf")],
                "{match: {names: ['ens*']}}",
                "n1",
                vec![],
                Some("ens4"),
                vec!["ens4"],
                Some(Rule::Match),
                "",
            ),
            (
                "no interfaces at all",
                vec![],
                "{match: {names: ['*']}}",
                "n1",
                vec![],
                None,
                vec![],
                Some(Rule::Match),
                "no surveyed interfaces",
            ),
        ];
        for (case, ifaces, spec, node, lbl, device, candidates, rule, reason) in cases {
            let m = maps(&format!("{GREEN}spec: {spec}\n"));
            let r = resolve(&ifaces, &m, node, &labels(&lbl));
            let g = &r["green"];
            assert_eq!(g.device.as_ref().map(|d| d.name.as_str()), device, "{case}");
            assert_eq!(g.candidates, candidates, "{case}");
            assert_eq!(g.rule, rule, "{case}");
            assert_eq!(g.selected, case != "not selected", "{case}");
            if device.is_none() {
                let got = g.reason.as_deref().unwrap_or("");
                assert!(got.contains(reason), "{case}: {got}");
            } else {
                assert_eq!(g.reason, None, "{case}");
            }
            // Deterministic: the same input in another order gives the same answer.
            let mut reversed = ifaces.clone();
            reversed.reverse();
            if rule != Some(Rule::Interfaces) {
                assert_eq!(
                    resolve(&reversed, &m, node, &labels(&lbl)),
                    r,
                    "{case} (reversed input)"
                );
            }
        }
    }

    #[test]
    fn devices_carry_index_and_mac_and_interfaces_learn_their_networks() {
        let mut ifaces = vec![
            iface("ens4", 4, true, Some("tor-green-01")),
            iface("ens5", 5, true, Some("tor-red-01")),
        ];
        let yaml = format!(
            "{GREEN}spec: {{match: {{lldp: {{systemName: 'tor-green-*'}}}}}}\n---\n{}spec: {{match: {{lldp: {{systemName: 'tor-red-*'}}}}}}\n",
            GREEN.replace("green", "red")
        );
        let r = resolve(&ifaces, &maps(&yaml), "n1", &BTreeMap::new());
        let d = r["green"].device.clone().unwrap();
        assert_eq!((d.index, d.mac.as_deref()), (4, Some("52:54:00:00:00:04")));
        annotate(&mut ifaces, &r);
        assert_eq!(ifaces[0].networks, vec!["green"]);
        assert_eq!(ifaces[1].networks, vec!["red"]);
        let s = r["green"].status();
        assert_eq!(
            (s.device.as_deref(), s.rule.as_deref()),
            (Some("ens4"), Some("match"))
        );
    }

    #[test]
    fn explanations_say_why() {
        let m = maps(&format!("{GREEN}spec: {{match: {{names: ['ens*']}}}}\n"));
        let before_ifaces = vec![iface("ens4", 4, true, None), iface("ens5", 5, true, None)];
        let before = resolve(&before_ifaces, &m, "n1", &BTreeMap::new());
        let after_ifaces = vec![iface("ens4", 4, false, None), iface("ens5", 5, true, None)];
        let after = resolve(&after_ifaces, &m, "n1", &BTreeMap::new());
        assert_eq!(
            explain(
                "green",
                before.get("green"),
                after.get("green"),
                &after_ifaces
            )
            .as_deref(),
            Some("green: ens4 -> ens5 (ens4 carrier down)")
        );
        let gone = vec![iface("ens5", 5, true, None)];
        let after = resolve(&gone, &m, "n1", &BTreeMap::new());
        assert_eq!(
            explain("green", before.get("green"), after.get("green"), &gone).as_deref(),
            Some("green: ens4 -> ens5 (ens4 gone)")
        );
        assert_eq!(
            explain(
                "green",
                before.get("green"),
                before.get("green"),
                &before_ifaces
            ),
            None
        );
        assert_eq!(
            explain("green", None, before.get("green"), &before_ifaces).as_deref(),
            Some("green: resolved to ens4 (match)")
        );
        assert_eq!(
            explain("green", before.get("green"), None, &[]).as_deref(),
            Some("green: map removed")
        );
    }
}
