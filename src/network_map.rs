//! NetworkMaps: reading them from YAML, checking them, and matching
//! interfaces and nodes against them. Pure.

use std::collections::BTreeMap;

use std::fmt;

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt as _};

use crate::crd::{LldpMatch, MatchRule, NeighborMatch, NetworkMap, NodeInterface};
use crate::discovery::sysfs::is_pci_address;
use crate::inventory::{Interface, Neighbor, Protocol};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("not YAML/JSON NetworkMaps: {0}")]
    Parse(String),
    #[error("document {index} is a {kind} ({api_version}), not a surveyor.dev/v1alpha1 NetworkMap")]
    NotANetworkMap {
        index: usize,
        api_version: String,
        kind: String,
    },
    #[error("a NetworkMap has no metadata.name")]
    NoName,
    #[error("network name {name:?} {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("{field}: invalid glob {glob:?}: {reason}")]
    BadGlob {
        field: &'static str,
        glob: String,
        reason: String,
    },
    #[error("spec.match.macs: {0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
    BadMac(String),
    #[error("spec.match.pciAddresses: {0:?} is not a PCI address (0000:3b:00.1)")]
    BadPciAddress(String),
    #[error("spec.match.pciIds: {0:?} is not a PCI vendor:device ID glob (8086:1593, 15b3:*)")]
    BadPciId(String),
    #[error(
        "spec.match.cidrs: {value:?} is not a CIDR ({reason}; e.g. 192.0.2.0/24, 2001:db8::/64)"
    )]
    BadCidr { value: String, reason: String },
    #[error("spec.nodeSelector: {0}")]
    BadSelector(String),
    #[error("spec.interfaces[{0}]: node and interface must both be set")]
    BadExplicit(usize),
    #[error(
        "spec has neither interfaces nor match: say how to find the device (spec.interfaces for given nodes, spec.match for the others)"
    )]
    NoRule,
    #[error(
        "spec.match sets no condition, so it would select every surveyed interface; give at least one (names, lldp.systemName, cidrs, ...)"
    )]
    EmptyMatch,
    #[error(
        "spec.match.lldp sets no condition, so it would select any interface with an LLDP neighbor; give one (systemName, chassisId, portId, portDescription, vlanId), e.g. systemName: \"*\" for any neighbor"
    )]
    EmptyLldp,
    #[error(
        "spec.match.neighbor sets no condition, so it would select any interface with a neighbor; give one (protocols, systemName, chassisId, portId, portDescription, vlanId)"
    )]
    EmptyNeighbor,

    #[error("{}", unknown_fields_message(.0))]
    UnknownFields(Vec<String>),
}

fn unknown_fields_message(paths: &[String]) -> String {
    let list = paths.join(", ");
    let what = if paths.len() == 1 { "field" } else { "fields" };
    format!(
        "unknown {what} {list} (a misspelt field is refused rather than ignored, as a strict kubectl apply does)"
    )
}

/// Largest map file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// YAML limits per file: documents, nodes (scalars, lists, maps), nesting
/// depth and aliases. Generous for maps, small enough that no file, however
/// crafted, costs the agent much time or memory.
pub const MAX_DOCUMENTS: usize = 100;
pub const MAX_NODES: usize = 20_000;
pub const MAX_DEPTH: usize = 32;
pub const MAX_ALIASES: usize = 100;

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_nodes = MAX_NODES;
    budget.max_depth = MAX_DEPTH;
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ALIASES;
    budget.max_events = 4 * MAX_NODES;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES as usize;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Reads every NetworkMap in a YAML (or JSON) text: one or more documents
/// separated by `---`. Empty documents are skipped. Fields the NetworkMap
/// schema does not know are refused, with their path. Each document is
/// read straight into the typed map, so scalars take the type the field
/// wants (`values: [yes]` stays the string "yes").
pub fn parse_documents(text: &str) -> Result<Vec<NetworkMap>, MapError> {
    let parse = |e: serde_saphyr::Error| MapError::Parse(e.to_string());
    let docs: Vec<Option<serde_json::Value>> =
        serde_saphyr::from_multiple_with_options(text, yaml_options()).map_err(parse)?;
    let several = docs.iter().flatten().count() > 1;
    for (index, doc) in docs.iter().enumerate() {
        let Some(doc) = doc else { continue };
        let field = |k: &str| doc.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        if api_version != "surveyor.dev/v1alpha1" || kind != "NetworkMap" {
            return Err(MapError::NotANetworkMap {
                index: index + 1,
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            });
        }
        let mut unknown = Vec::new();
        crate::crd::unknown_fields(doc, &mut unknown);
        if !unknown.is_empty() {
            if several {
                for path in &mut unknown {
                    *path = format!("{path} (document {})", index + 1);
                }
            }
            return Err(MapError::UnknownFields(unknown));
        }
    }
    let maps: Vec<Option<NetworkMap>> =
        serde_saphyr::from_multiple_with_options(text, yaml_options()).map_err(parse)?;
    Ok(maps.into_iter().flatten().collect())
}

/// A network name must be a DNS label: it names a Kubernetes object and
/// ends a node label key (`network.surveyor.dev/<name>`).
pub fn validate_name(name: &str) -> Result<(), MapError> {
    let bad = |reason| MapError::BadName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > 63 {
        return Err(bad("is longer than 63 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad("may hold only lowercase letters, digits and '-'"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("must start and end with a letter or digit"));
    }
    Ok(())
}

/// A NetworkMap checked and ready to match: globs compiled, MACs and PCI
/// addresses normalised, the node selector parsed.
#[derive(Debug, Clone)]
pub struct CompiledMap {
    pub name: String,
    selector: Option<Selector>,
    explicit: Vec<NodeInterface>,
    rule: Option<Rule>,
}

#[derive(Debug, Clone, Default)]
struct Rule {
    names: Option<GlobSet>,
    aliases: Option<GlobSet>,
    alt_names: Option<GlobSet>,
    macs: Vec<String>,
    drivers: Vec<String>,
    pci_addresses: Vec<String>,
    pci_ids: Option<GlobSet>,
    cidrs: Vec<IpNet>,
    min_speed_mbps: Option<u32>,
    lldp: Option<NeighborRule>,
    neighbor: Option<NeighborRule>,
}

/// The first `spec.match` condition an interface fails: the field as the
/// spec names it (`names`, `lldp.systemName`, ...) and, where it helps,
/// what the interface has instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub field: &'static str,
    pub detail: Option<String>,
}

impl Mismatch {
    fn field(field: &'static str) -> Self {
        Mismatch {
            field,
            detail: None,
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field)?;
        match &self.detail {
            Some(detail) => write!(f, ": {detail}"),
            None => Ok(()),
        }
    }
}

/// `spec.match.lldp` (LLDP's neighbors only) or `spec.match.neighbor`
/// (any protocol's, or those listed).
#[derive(Debug, Clone, Default)]
struct NeighborRule {
    /// How failures are named: `lldp` or `neighbor`.
    block: &'static str,
    /// Empty: any.
    protocols: Vec<Protocol>,
    system_name: Option<GlobMatcher>,
    chassis_id: Option<GlobMatcher>,
    port_id: Option<GlobMatcher>,
    port_description: Option<GlobMatcher>,
    vlan_id: Option<u16>,
}

impl CompiledMap {
    pub fn compile(map: &NetworkMap) -> Result<Self, MapError> {
        let name = map.metadata.name.clone().ok_or(MapError::NoName)?;
        validate_name(&name)?;
        for (i, e) in map.spec.interfaces.iter().enumerate() {
            if e.node.is_empty() || e.interface.is_empty() {
                return Err(MapError::BadExplicit(i));
            }
        }
        match &map.spec.match_rule {
            None if map.spec.interfaces.is_empty() => return Err(MapError::NoRule),
            Some(m) if *m == MatchRule::default() => return Err(MapError::EmptyMatch),
            Some(MatchRule { lldp: Some(l), .. }) if *l == LldpMatch::default() => {
                return Err(MapError::EmptyLldp);
            }
            Some(MatchRule {
                neighbor: Some(n), ..
            }) if *n == NeighborMatch::default() => {
                return Err(MapError::EmptyNeighbor);
            }
            _ => {}
        }
        Ok(CompiledMap {
            name,
            selector: map.spec.node_selector.as_ref().map(selector).transpose()?,
            explicit: map.spec.interfaces.clone(),
            rule: map.spec.match_rule.as_ref().map(rule).transpose()?,
        })
    }

    /// Whether this network exists on a node with these labels.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_none_or(|s| s.matches(labels))
    }

    /// The interfaces `spec.interfaces` names for `node`, in order.
    pub fn explicit_for<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.explicit
            .iter()
            .filter(move |e| e.node == node)
            .map(|e| e.interface.as_str())
    }

    pub fn has_match_rule(&self) -> bool {
        self.rule.is_some()
    }

    /// Whether `iface` satisfies `spec.match` (false without a rule).
    pub fn matches(&self, iface: &Interface) -> bool {
        self.rule
            .as_ref()
            .is_some_and(|r| r.first_failure(iface).is_none())
    }

    /// The first `spec.match` condition `iface` fails, for unresolved
    /// reasons.
    pub fn mismatch(&self, iface: &Interface) -> Option<Mismatch> {
        self.rule.as_ref().and_then(|r| r.first_failure(iface))
    }
}

/// A nodeSelector, checked as the API server checks one (In/NotIn need
/// values, Exists/DoesNotExist take none) before kube-core's Selector
/// takes it.
fn selector(sel: &LabelSelector) -> Result<Selector, MapError> {
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let bad = |why: &str| {
            MapError::BadSelector(format!(
                "key {:?} with operator {}: {why}",
                e.key, e.operator
            ))
        };
        match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => return Err(bad("needs values")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(bad("takes no values")),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => {
                return Err(bad(
                    "unknown operator (use In, NotIn, Exists or DoesNotExist)",
                ));
            }
        }
    }
    Selector::try_from(sel.clone()).map_err(|e| MapError::BadSelector(e.to_string()))
}

fn glob(field: &'static str, pattern: &str) -> Result<Glob, MapError> {
    Glob::new(pattern).map_err(|e| MapError::BadGlob {
        field,
        glob: pattern.to_string(),
        reason: e.kind().to_string(),
    })
}

fn glob_set(field: &'static str, patterns: &[String]) -> Result<Option<GlobSet>, MapError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(glob(field, p)?);
    }
    b.build().map(Some).map_err(|e| MapError::BadGlob {
        field,
        glob: patterns.join(","),
        reason: e.kind().to_string(),
    })
}

fn matcher(field: &'static str, pattern: &Option<String>) -> Result<Option<GlobMatcher>, MapError> {
    pattern
        .as_deref()
        .map(|p| glob(field, p).map(|g| g.compile_matcher()))
        .transpose()
}

/// `aa:bb:cc:dd:ee:ff` (or with dashes), any case, normalised to lowercase
/// with colons.
pub fn normalize_mac(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_lowercase())
}

fn rule(m: &MatchRule) -> Result<Rule, MapError> {
    let macs = m
        .macs
        .iter()
        .map(|mac| normalize_mac(mac).ok_or_else(|| MapError::BadMac(mac.clone())))
        .collect::<Result<_, _>>()?;
    let pci_addresses = m
        .pci_addresses
        .iter()
        .map(|p| {
            let p = p.to_ascii_lowercase();
            if is_pci_address(&p) {
                Ok(p)
            } else {
                Err(MapError::BadPciAddress(p))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        names: glob_set("spec.match.names", &m.names)?,
        aliases: glob_set("spec.match.aliases", &m.aliases)?,
        alt_names: glob_set("spec.match.altNames", &m.alt_names)?,
        macs,
        drivers: m.drivers.clone(),
        pci_addresses,
        pci_ids: pci_ids(&m.pci_ids)?,
        cidrs: m.cidrs.iter().map(|c| cidr(c)).collect::<Result<_, _>>()?,
        min_speed_mbps: m.min_speed_mbps,
        lldp: m.lldp.as_ref().map(lldp_rule).transpose()?,
        neighbor: m.neighbor.as_ref().map(neighbor_rule).transpose()?,
    })
}

/// `vendor:device` globs, case-insensitive (sysfs IDs are hex).
fn pci_ids(patterns: &[String]) -> Result<Option<GlobSet>, MapError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let glob_char = |c: char| c.is_ascii_hexdigit() || "*?[]{},-!".contains(c);
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let shaped = p.split_once(':').is_some_and(|(v, d)| {
            !v.is_empty() && !d.is_empty() && v.chars().chain(d.chars()).all(glob_char)
        });
        let glob = GlobBuilder::new(p)
            .case_insensitive(true)
            .build()
            .ok()
            .filter(|_| shaped)
            .ok_or_else(|| MapError::BadPciId(p.clone()))?;
        b.add(glob);
    }
    b.build()
        .map(Some)
        .map_err(|_| MapError::BadPciId(patterns.join(",")))
}

/// A network in CIDR notation. Host bits must be zero: `192.0.2.5/24` is
/// more likely a typo for an address than a network.
fn cidr(value: &str) -> Result<IpNet, MapError> {
    let bad = |reason: String| MapError::BadCidr {
        value: value.to_string(),
        reason,
    };
    let net: IpNet = value
        .trim()
        .parse()
        .map_err(|_| bad("expected ADDRESS/PREFIX".into()))?;
    if net.trunc() != net {
        return Err(bad(format!(
            "host bits are set; the network is {}",
            net.trunc()
        )));
    }
    Ok(net)
}

fn lldp_rule(l: &LldpMatch) -> Result<NeighborRule, MapError> {
    Ok(NeighborRule {
        block: "lldp",
        protocols: vec![Protocol::Lldp],
        system_name: matcher("spec.match.lldp.systemName", &l.system_name)?,
        chassis_id: matcher("spec.match.lldp.chassisId", &l.chassis_id)?,
        port_id: matcher("spec.match.lldp.portId", &l.port_id)?,
        port_description: matcher("spec.match.lldp.portDescription", &l.port_description)?,
        vlan_id: l.vlan_id,
    })
}

fn neighbor_rule(n: &NeighborMatch) -> Result<NeighborRule, MapError> {
    Ok(NeighborRule {
        block: "neighbor",
        protocols: n.protocols.clone(),
        system_name: matcher("spec.match.neighbor.systemName", &n.system_name)?,
        chassis_id: matcher("spec.match.neighbor.chassisId", &n.chassis_id)?,
        port_id: matcher("spec.match.neighbor.portId", &n.port_id)?,
        port_description: matcher("spec.match.neighbor.portDescription", &n.port_description)?,
        vlan_id: n.vlan_id,
    })
}

impl Rule {
    fn first_failure(&self, i: &Interface) -> Option<Mismatch> {
        let any = |set: &Option<GlobSet>, mut values: Box<dyn Iterator<Item = &str> + '_>| {
            set.as_ref().is_none_or(|s| values.any(|v| s.is_match(v)))
        };
        let fail = |field| Some(Mismatch::field(field));
        if !any(&self.names, Box::new(std::iter::once(i.name.as_str()))) {
            return fail("names");
        }
        if !any(&self.aliases, Box::new(i.alias.as_deref().into_iter())) {
            return fail("aliases");
        }
        if !any(
            &self.alt_names,
            Box::new(i.alt_names.iter().map(String::as_str)),
        ) {
            return fail("altNames");
        }
        let mac_hit = |m: &String| i.mac.as_ref() == Some(m) || i.permanent_mac.as_ref() == Some(m);
        if !self.macs.is_empty() && !self.macs.iter().any(mac_hit) {
            return fail("macs");
        }
        if !self.drivers.is_empty() && !i.driver.as_ref().is_some_and(|d| self.drivers.contains(d))
        {
            return fail("drivers");
        }
        if !self.pci_addresses.is_empty()
            && !i
                .pci_address
                .as_ref()
                .is_some_and(|p| self.pci_addresses.contains(p))
        {
            return fail("pciAddresses");
        }
        if let Some(ids) = &self.pci_ids {
            if !i.pci_id.as_ref().is_some_and(|id| ids.is_match(id)) {
                let has = i.pci_id.as_deref().unwrap_or("no PCI ID");
                return Some(Mismatch {
                    field: "pciIds",
                    detail: Some(has.to_string()),
                });
            }
        }
        if !self.cidrs.is_empty()
            && !i
                .addresses
                .iter()
                .any(|a| self.cidrs.iter().any(|c| c.contains(&a.addr())))
        {
            return Some(Mismatch {
                field: "cidrs",
                detail: Some(cidr_detail(&i.addresses, &self.cidrs)),
            });
        }
        if let Some(min) = self.min_speed_mbps {
            if i.speed_mbps.is_none_or(|s| s < min) {
                return fail("minSpeedMbps");
            }
        }
        for rule in [&self.lldp, &self.neighbor].into_iter().flatten() {
            let failed = match &i.lldp {
                None => Some(Mismatch::field(if rule.block == "lldp" {
                    "lldp (no neighbor)"
                } else {
                    "neighbor (no neighbor)"
                })),
                Some(n) => rule.first_failure(n),
            };
            if failed.is_some() {
                return failed;
            }
        }
        None
    }
}

/// `10.0.0.5/24 not in 192.0.2.0/24`, or `no address`.
fn cidr_detail(addresses: &[IpNet], cidrs: &[IpNet]) -> String {
    const SHOWN: usize = 3;
    let list = |nets: &[IpNet]| {
        let mut parts: Vec<String> = nets.iter().take(SHOWN).map(IpNet::to_string).collect();
        if nets.len() > SHOWN {
            parts.push(format!("{} more", nets.len() - SHOWN));
        }
        parts.join(", ")
    };
    if addresses.is_empty() {
        return "no address".to_string();
    }
    format!("{} not in {}", list(addresses), list(cidrs))
}

impl NeighborRule {
    fn first_failure(&self, n: &Neighbor) -> Option<Mismatch> {
        let lldp = self.block == "lldp";
        let field = |lldp_name: &'static str, neighbor_name: &'static str| {
            Some(Mismatch::field(if lldp {
                lldp_name
            } else {
                neighbor_name
            }))
        };
        if !self.protocols.is_empty() && !self.protocols.contains(&n.protocol) {
            let field = if lldp { "lldp" } else { "neighbor.protocols" };
            return Some(Mismatch {
                field,
                detail: Some(format!("the neighbor speaks {}", n.protocol)),
            });
        }
        let hit = |m: &Option<GlobMatcher>, v: Option<&str>| {
            m.as_ref().is_none_or(|m| v.is_some_and(|v| m.is_match(v)))
        };
        if !hit(&self.system_name, n.system_name.as_deref()) {
            return field("lldp.systemName", "neighbor.systemName");
        }
        if !hit(&self.chassis_id, Some(&n.chassis_id.value)) {
            return field("lldp.chassisId", "neighbor.chassisId");
        }
        if !hit(&self.port_id, Some(&n.port_id.value)) {
            return field("lldp.portId", "neighbor.portId");
        }
        if !hit(&self.port_description, n.port_description.as_deref()) {
            return field("lldp.portDescription", "neighbor.portDescription");
        }
        if let Some(id) = self.vlan_id {
            if n.pvid != Some(id) && !n.vlans.iter().any(|v| v.id == id) {
                return field("lldp.vlanId", "neighbor.vlanId");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{LinkKind, TypedId, Vlan};

    fn map(yaml: &str) -> NetworkMap {
        parse_documents(yaml).unwrap().remove(0)
    }

    fn compiled(yaml: &str) -> CompiledMap {
        CompiledMap::compile(&map(yaml)).unwrap()
    }

    fn iface(name: &str) -> Interface {
        let mut i = Interface::new(name, 1, LinkKind::Physical);
        i.pci_id = Some("8086:1593".into());
        i.addresses = vec![
            "192.0.2.130/25".parse().unwrap(),
            "2001:db8::10/64".parse().unwrap(),
        ];
        i.mac = Some("52:54:00:aa:bb:01".into());
        i.driver = Some("ixgbe".into());
        i.pci_address = Some("0000:3b:00.1".into());
        i.speed_mbps = Some(25000);
        i.alias = Some("green-uplink".into());
        i.alt_names = vec!["enp59s0f1".into()];
        i.lldp = Some(Neighbor {
            protocol: crate::inventory::Protocol::Lldp,
            chassis_id: TypedId {
                subtype: "mac".into(),
                value: "00:11:22:33:44:55".into(),
            },
            port_id: TypedId {
                subtype: "ifname".into(),
                value: "Ethernet1/7".into(),
            },
            system_name: Some("tor-green-01".into()),
            port_description: Some("uplink-to-node1".into()),
            system_description: None,
            management_addresses: vec![],
            pvid: Some(100),
            vlans: vec![Vlan {
                id: 200,
                name: None,
            }],
            ttl_seconds: 120,
        });
        i
    }

    const HEAD: &str =
        "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: green}\n";

    #[test]
    fn every_given_field_must_hold() {
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("names: ['ens*']", false, Some("names")),
            ("names: ['ens*', 'eth1']", true, None),
            ("aliases: ['green-*']", true, None),
            ("aliases: ['red-*']", false, Some("aliases")),
            ("altNames: ['enp59s0f?']", true, None),
            ("macs: ['52-54-00-AA-BB-01']", true, None),
            ("macs: ['52:54:00:aa:bb:02']", false, Some("macs")),
            ("drivers: [i40e, ixgbe]", true, None),
            ("drivers: [mlx5_core]", false, Some("drivers")),
            ("pciAddresses: ['0000:3B:00.1']", true, None),
            ("pciIds: ['8086:1593']", true, None),
            ("pciIds: ['8086:15*', '15b3:*']", true, None),
            ("pciIds: ['8086:{1592,1593}']", true, None),
            ("pciIds: ['8086:1592']", false, Some("pciIds")),
            ("pciIds: ['15B3:*']", false, Some("pciIds")),
            ("cidrs: ['192.0.2.0/24']", true, None),
            ("cidrs: ['10.0.0.0/8', '2001:db8::/32']", true, None),
            ("cidrs: ['198.51.100.0/24']", false, Some("cidrs")),
            ("cidrs: ['192.0.2.0/28']", false, Some("cidrs")),
            ("minSpeedMbps: 25000", true, None),
            ("minSpeedMbps: 40000", false, Some("minSpeedMbps")),
            ("lldp: {systemName: 'tor-green-*'}", true, None),
            (
                "lldp: {systemName: 'tor-red-*'}",
                false,
                Some("lldp.systemName"),
            ),
            (
                "lldp: {portId: 'Ethernet1/*', chassisId: '00:11:*'}",
                true,
                None,
            ),
            ("lldp: {portDescription: 'uplink-*'}", true, None),
            ("lldp: {vlanId: 100}", true, None),
            ("lldp: {vlanId: 200}", true, None),
            ("lldp: {vlanId: 300}", false, Some("lldp.vlanId")),
            (
                "{names: ['ens*'], lldp: {systemName: 'tor-red-*'}}",
                false,
                Some("names"),
            ),
            (
                "{names: ['eth*'], lldp: {systemName: 'tor-red-*'}}",
                false,
                Some("lldp.systemName"),
            ),
        ];
        for (rule, want, failure) in cases {
            let yaml = format!(
                "{HEAD}spec:\n  match: {}\n",
                if rule.starts_with('{') {
                    rule.to_string()
                } else {
                    format!("{{{rule}}}")
                }
            );
            let m = compiled(&yaml);
            let mut i = iface("eth1");
            assert_eq!(m.matches(&i), *want, "{rule}");
            assert_eq!(m.mismatch(&i).map(|f| f.field), *failure, "{rule}");
            // A permanent MAC matches too (bond members change their MAC).
            i.mac = Some("aa:aa:aa:aa:aa:aa".into());
            i.permanent_mac = Some("52:54:00:aa:bb:01".into());
            if rule.contains("52-54") {
                assert!(m.matches(&i));
            }
        }
    }

    /// `neighbor` takes a switch whatever protocol named it (or those
    /// listed); `lldp` keeps meaning LLDP, and says so when the neighbor
    /// spoke another.
    #[test]
    fn neighbor_rules_take_any_protocol_and_lldp_rules_only_lldp() {
        let mut cdp = iface("eth1");
        if let Some(n) = &mut cdp.lldp {
            n.protocol = Protocol::Cdp;
        }
        let lldp = iface("eth1");
        let failure = |rule: &str, i: &Interface| {
            compiled(&format!("{HEAD}spec:\n  match: {rule}\n"))
                .rule
                .unwrap()
                .first_failure(i)
                .map(|m| m.to_string())
        };
        for i in [&cdp, &lldp] {
            assert_eq!(failure("{neighbor: {systemName: 'tor-green-*'}}", i), None);
            assert_eq!(
                failure("{neighbor: {vlanId: 100, portId: 'Ethernet1/*'}}", i),
                None
            );
            assert_eq!(
                failure("{neighbor: {systemName: 'tor-red-*'}}", i).as_deref(),
                Some("neighbor.systemName")
            );
        }
        assert_eq!(
            failure("{lldp: {systemName: 'tor-green-*'}}", &cdp).as_deref(),
            Some("lldp: the neighbor speaks cdp")
        );
        assert_eq!(failure("{neighbor: {protocols: [cdp, fdp]}}", &cdp), None);
        assert_eq!(
            failure("{neighbor: {protocols: [edp], systemName: '*'}}", &cdp).as_deref(),
            Some("neighbor.protocols: the neighbor speaks cdp")
        );
        let mut none = iface("eth1");
        none.lldp = None;
        assert_eq!(
            failure("{neighbor: {systemName: '*'}}", &none).as_deref(),
            Some("neighbor (no neighbor)")
        );
        let e = CompiledMap::compile(&map(&format!("{HEAD}spec:\n  match: {{neighbor: {{}}}}\n")))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("spec.match.neighbor sets no condition"),
            "{e}"
        );
        let e = CompiledMap::compile(&map(&format!(
            "{HEAD}spec:\n  match: {{neighbor: {{systemName: 'a[b'}}}}\n"
        )))
        .unwrap_err();
        assert!(
            e.to_string().contains("spec.match.neighbor.systemName"),
            "{e}"
        );
        assert!(
            parse_documents(&format!(
                "{HEAD}spec:\n  match: {{neighbor: {{protocols: [ipx]}}}}\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn lldp_rules_need_a_neighbor_and_unknown_speed_never_matches() {
        let m = compiled(&format!(
            "{HEAD}spec:\n  match: {{lldp: {{systemName: '*'}}}}\n"
        ));
        let mut i = iface("eth1");
        i.lldp = None;
        assert_eq!(
            m.mismatch(&i).map(|f| f.to_string()).as_deref(),
            Some("lldp (no neighbor)")
        );
        let m = compiled(&format!("{HEAD}spec:\n  match: {{minSpeedMbps: 1}}\n"));
        i.speed_mbps = None;
        assert!(!m.matches(&i));
        let explicit_only = compiled(&format!(
            "{HEAD}spec: {{interfaces: [{{node: n1, interface: eth1}}]}}\n"
        ));
        assert!(!explicit_only.matches(&iface("eth1")), "no match rule");
    }

    #[test]
    fn pci_id_and_cidr_reasons_say_what_the_interface_has() {
        let reason = |rule: &str, i: &Interface| {
            compiled(&format!("{HEAD}spec:\n  match: {{{rule}}}\n"))
                .mismatch(i)
                .map(|m| m.to_string())
        };
        let mut i = iface("ens4");
        assert_eq!(
            reason("cidrs: ['198.51.100.0/24']", &i).as_deref(),
            Some("cidrs: 192.0.2.130/25, 2001:db8::10/64 not in 198.51.100.0/24")
        );
        assert_eq!(
            reason("pciIds: ['15b3:*']", &i).as_deref(),
            Some("pciIds: 8086:1593")
        );
        i.addresses.clear();
        i.pci_id = None;
        assert_eq!(
            reason("cidrs: ['192.0.2.0/24']", &i).as_deref(),
            Some("cidrs: no address")
        );
        assert_eq!(
            reason("pciIds: ['*:*']", &i).as_deref(),
            Some("pciIds: no PCI ID")
        );
        // The address's own prefix does not matter, only where it lies.
        i.addresses = vec!["10.1.2.3/8".parse().unwrap()];
        assert_eq!(reason("cidrs: ['10.1.2.0/24']", &i), None);
        i.addresses = (1..=5)
            .map(|n| format!("10.9.0.{n}/24").parse().unwrap())
            .collect();
        assert_eq!(
            reason("cidrs: ['10.1.2.0/24']", &i).as_deref(),
            Some("cidrs: 10.9.0.1/24, 10.9.0.2/24, 10.9.0.3/24, 2 more not in 10.1.2.0/24")
        );
    }

    #[test]
    fn node_selectors() {
        let labels: BTreeMap<String, String> = [("rack", "r1"), ("zone", "a")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sel = |s: &str| {
            compiled(&format!(
                "{HEAD}spec:\n  match: {{names: ['*']}}\n  nodeSelector: {s}\n"
            ))
            .selects(&labels)
        };
        assert!(sel("{matchLabels: {rack: r1}}"));
        assert!(!sel("{matchLabels: {rack: r2}}"));
        assert!(sel("{}"));
        assert!(sel(
            "{matchExpressions: [{key: rack, operator: In, values: [r1, r2]}]}"
        ));
        assert!(!sel(
            "{matchExpressions: [{key: rack, operator: NotIn, values: [r1]}]}"
        ));
        assert!(sel(
            "{matchExpressions: [{key: gpu, operator: NotIn, values: [yes]}]}"
        ));
        assert!(sel("{matchExpressions: [{key: zone, operator: Exists}]}"));
        assert!(sel(
            "{matchExpressions: [{key: gpu, operator: DoesNotExist}]}"
        ));
        assert!(!sel(
            "{matchLabels: {rack: r1}, matchExpressions: [{key: zone, operator: DoesNotExist}]}"
        ));
        assert!(
            compiled(&format!("{HEAD}spec: {{match: {{names: ['*']}}}}\n")).selects(&labels),
            "absent selects all"
        );
    }

    #[test]
    fn malformed_maps_are_errors_that_say_where() {
        let err = |spec: &str| {
            CompiledMap::compile(&map(&format!("{HEAD}spec: {spec}\n")))
                .unwrap_err()
                .to_string()
        };
        assert!(err("{match: {names: ['ens[']}}").contains("spec.match.names"));
        assert!(
            err("{match: {lldp: {systemName: 'tor-{'}}}").contains("spec.match.lldp.systemName")
        );
        assert!(err("{match: {macs: ['52:54:00']}}").contains("not a MAC"));
        assert!(err("{match: {pciAddresses: ['3b:00.1']}}").contains("not a PCI address"));
        for bad in ["'8086'", "'intel:x710'", "':1593'", "'8086:15[9'"] {
            let e = err(&format!("{{match: {{pciIds: [{bad}]}}}}"));
            assert!(e.contains("spec.match.pciIds"), "{bad}: {e}");
        }
        let e = err("{match: {cidrs: ['192.0.2.5/24']}}");
        assert!(
            e.contains("spec.match.cidrs")
                && e.contains("192.0.2.5/24")
                && e.contains("192.0.2.0/24"),
            "{e}"
        );
        for bad in [
            "'192.0.2.0'",
            "'192.0.2.0/33'",
            "'lan/24'",
            "'2001:db8::/129'",
        ] {
            let e = err(&format!("{{match: {{cidrs: [{bad}]}}}}"));
            assert!(
                e.contains("spec.match.cidrs") && e.contains("not a CIDR"),
                "{bad}: {e}"
            );
        }
        assert!(
            err("{match: {names: ['*']}, nodeSelector: {matchExpressions: [{key: a, operator: Near}]}}")
                .contains("unknown operator")
        );
        assert!(
            err("{match: {names: ['*']}, nodeSelector: {matchExpressions: [{key: a, operator: In}]}}")
                .contains("needs values")
        );
        assert!(err("{interfaces: [{node: n1, interface: ''}]}").contains("spec.interfaces[0]"));
        let long = "x".repeat(64);
        let bad = map(&format!(
            "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {{name: {long}}}\nspec: {{}}\n"
        ));
        assert!(
            CompiledMap::compile(&bad)
                .unwrap_err()
                .to_string()
                .contains("63")
        );
        for name in ["Green", "-green", "green_net", ""] {
            assert!(validate_name(name).is_err(), "{name}");
        }
        validate_name(&"g".repeat(63)).unwrap();
    }

    #[test]
    fn maps_that_would_select_everything_are_refused() {
        let err = |spec: &str| {
            CompiledMap::compile(&map(&format!("{HEAD}spec: {spec}\n")))
                .unwrap_err()
                .to_string()
        };
        assert!(err("{}").contains("neither interfaces nor match"));
        assert!(err("{nodeSelector: {matchLabels: {rack: r1}}}").contains("neither"));
        assert!(err("{match: {}}").contains("spec.match sets no condition"));
        // An empty list counts as not given.
        assert!(err("{match: {names: []}}").contains("spec.match sets no condition"));
        assert!(err("{match: {lldp: {}}}").contains("spec.match.lldp sets no condition"));
        assert!(err("{match: {names: ['*'], lldp: {}}}").contains("spec.match.lldp"));
        // Explicit interfaces alone are a rule.
        CompiledMap::compile(&map(&format!(
            "{HEAD}spec: {{interfaces: [{{node: n1, interface: ens4}}]}}\n"
        )))
        .unwrap();
    }

    #[test]
    fn misspelt_fields_are_refused_with_their_path() {
        let e = parse_documents(&format!(
            "{HEAD}spec:\n  match:\n    lldp: {{sytemName: 'tor-blue-*'}}\n"
        ))
        .unwrap_err();
        assert!(matches!(e, MapError::UnknownFields(_)));
        assert!(e.to_string().contains("spec.match.lldp.sytemName"), "{e}");
        let e = parse_documents(&format!(
            "{HEAD}spec: {{match: {{names: ['*']}}}}\n---\n{HEAD}spec: {{mach: {{names: ['*']}}}}\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("spec.mach (document 2)"), "{e}");
        // Metadata is the API server's business.
        parse_documents(
            "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {name: g, annotations: {a: b}, uid: x}\nspec: {match: {names: ['*']}}\n",
        )
        .unwrap();
    }

    #[test]
    fn yaml_bombs_and_deep_nesting_are_refused() {
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n";
        assert!(matches!(parse_documents(laughs), Err(MapError::Parse(_))));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(parse_documents(&deep), Err(MapError::Parse(_))));
        let many =
            format!("{HEAD}spec: {{match: {{names: ['*']}}}}\n---\n").repeat(MAX_DOCUMENTS + 1);
        assert!(matches!(parse_documents(&many), Err(MapError::Parse(_))));
    }

    #[test]
    fn documents_and_kinds() {
        let two = format!(
            "{HEAD}spec: {{}}\n---\n# comment only\n---\n{}",
            HEAD.replace("green", "red") + "spec: {}\n"
        );
        let maps = parse_documents(&two).unwrap();
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[1].metadata.name.as_deref(), Some("red"));
        let json = r#"{"apiVersion":"surveyor.dev/v1alpha1","kind":"NetworkMap","metadata":{"name":"blue"},"spec":{"match":{"names":["eth*"]}}}"#;
        assert_eq!(
            parse_documents(json).unwrap()[0]
                .spec
                .match_rule
                .as_ref()
                .unwrap()
                .names,
            vec!["eth*"]
        );
        let e =
            parse_documents("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").unwrap_err();
        assert!(e.to_string().contains("ConfigMap"), "{e}");
        assert!(matches!(
            parse_documents("spec: [unclosed"),
            Err(MapError::Parse(_))
        ));
        assert!(matches!(
            parse_documents(&format!("{HEAD}spec: {{match: {{minSpeedMbps: fast}}}}\n")),
            Err(MapError::Parse(_))
        ));
        assert_eq!(parse_documents("").unwrap().len(), 0);
    }
}
