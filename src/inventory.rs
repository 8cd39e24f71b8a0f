//! The pure model of what a node has: one [`Interface`] per link, in the
//! `status.interfaces[]` shape of a NodeSurvey, and the [`Inventory`] that
//! keeps every link of the namespace keyed by its index.
//!
//! Nothing here does I/O; discovery fills it, the agent reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One network interface as published in `status.interfaces[]`.
///
/// Optional facts are omitted from the output when unknown rather than
/// written as `null`, so a survey changes only when a fact does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent_mac: Option<String>,
    pub kind: LinkKind,
    pub oper_state: OperState,
    pub carrier: bool,
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The master's kind (bridge, bond, vrf, ...), kept for resolution:
    /// a port of some masters cannot carry a macvlan. Not published.
    #[serde(skip)]
    pub master_kind: Option<LinkKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    /// PCI `vendor:device` in lower-case hex (`8086:1593`), from sysfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
    /// IPv4 and IPv6 addresses with their prefix length (`192.0.2.10/24`),
    /// sorted; IPv6 link-local addresses are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub addresses: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplex: Option<Duplex>,
    /// The switch port this interface is cabled to, as its neighbor
    /// protocol (LLDP, CDP, EDP, FDP, SONMP; `protocol` says which) announced
    /// it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lldp: Option<Neighbor>,
    /// The semantic networks this interface serves on this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
}

impl Interface {
    /// A bare interface with only the facts every link has.
    pub fn new(name: impl Into<String>, index: u32, kind: LinkKind) -> Self {
        Interface {
            name: name.into(),
            index,
            mac: None,
            permanent_mac: None,
            kind,
            oper_state: OperState::Unknown,
            carrier: false,
            mtu: 0,
            master: None,
            master_kind: None,
            alias: None,
            alt_names: Vec::new(),
            driver: None,
            pci_address: None,
            pci_id: None,
            addresses: Vec::new(),
            speed_mbps: None,
            duplex: None,
            lldp: None,
            networks: Vec::new(),
        }
    }

    /// True when the link can pass traffic: administratively and
    /// operationally up with carrier.
    pub fn is_up(&self) -> bool {
        self.carrier && matches!(self.oper_state, OperState::Up | OperState::Unknown)
    }

    /// Why a macvlan or ipvlan cannot be put on this interface, if it
    /// cannot: it is a port of a bridge, bond, team or Open vSwitch, which
    /// hold the link's receive path (the kernel answers "device or resource
    /// busy"). A VRF port can carry one.
    pub fn busy_reason(&self) -> Option<String> {
        let master = self.master.as_deref()?;
        match &self.master_kind {
            Some(LinkKind::Virtual(kind)) if kind == "vrf" => None,
            Some(kind) => Some(format!("{} is a port of {kind} {master}", self.name)),
            None => Some(format!("{} is a port of {master}", self.name)),
        }
    }

    /// The names this interface answers to: its name, then its altNames.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.alt_names.iter().map(String::as_str))
    }
}

/// What sort of link an interface is.
///
/// `physical` is a link backed by a device (`/sys/class/net/<if>/device`)
/// with no kernel link kind; virtual links carry their kernel kind name
/// (`veth`, `bridge`, `bond`, `macvlan`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkKind {
    Physical,
    Loopback,
    /// A link with a kernel kind, named as the kernel names it.
    Virtual(String),
    /// No kernel kind and no backing device.
    Other,
}

impl LinkKind {
    pub fn is_physical(&self) -> bool {
        matches!(self, LinkKind::Physical)
    }

    pub fn as_str(&self) -> &str {
        match self {
            LinkKind::Physical => "physical",
            LinkKind::Loopback => "loopback",
            LinkKind::Virtual(kind) => kind,
            LinkKind::Other => "other",
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for LinkKind {
    fn from(s: &str) -> Self {
        match s {
            "physical" => LinkKind::Physical,
            "loopback" => LinkKind::Loopback,
            "other" | "" => LinkKind::Other,
            kind => LinkKind::Virtual(kind.to_string()),
        }
    }
}

impl Serialize for LinkKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl JsonSchema for LinkKind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LinkKind".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "physical, loopback, other, or the kernel link kind (veth, bridge, bond, macvlan, vlan, ...)"
        })
    }
}

impl<'de> Deserialize<'de> for LinkKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(LinkKind::from(s.as_str()))
    }
}

/// RFC 2863 operational state, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OperState {
    Up,
    Down,
    LowerLayerDown,
    Dormant,
    Testing,
    NotPresent,
    Unknown,
}

impl OperState {
    pub fn as_str(self) -> &'static str {
        match self {
            OperState::Up => "up",
            OperState::Down => "down",
            OperState::LowerLayerDown => "lowerlayerdown",
            OperState::Dormant => "dormant",
            OperState::Testing => "testing",
            OperState::NotPresent => "notpresent",
            OperState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for OperState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Duplex {
    Full,
    Half,
}

/// The protocol a neighbor announced itself with. The order is the
/// preference when one interface hears several (lldpd's: LLDP first).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// IEEE 802.1AB.
    #[default]
    Lldp,
    /// Cisco Discovery Protocol, v1 and v2.
    Cdp,
    /// Extreme Discovery Protocol.
    Edp,
    /// Foundry Discovery Protocol.
    Fdp,
    /// SynOptics/Nortel Network Management Protocol.
    Sonmp,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::Lldp,
        Protocol::Cdp,
        Protocol::Edp,
        Protocol::Fdp,
        Protocol::Sonmp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Lldp => "lldp",
            Protocol::Cdp => "cdp",
            Protocol::Edp => "edp",
            Protocol::Fdp => "fdp",
            Protocol::Sonmp => "sonmp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown neighbor protocol {s:?} (lldp, cdp, edp, fdp, sonmp)"))
    }
}

/// The neighbor of an interface: the switch and port it is cabled to, as
/// the protocol it spoke named them.
///
/// Holds nothing time-varying, so it changes only when the neighbor does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Neighbor {
    /// Which protocol announced it (neighbors saved before there was a
    /// choice were LLDP's).
    #[serde(default)]
    pub protocol: Protocol,
    pub chassis_id: TypedId,
    pub port_id: TypedId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub management_addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvid: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<Vlan>,
    pub ttl_seconds: u16,
}

/// A chassis or port identifier with its LLDP subtype named.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct TypedId {
    pub subtype: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Vlan {
    pub id: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Formats a hardware address the way `ip link` does: lowercase hex pairs
/// joined by colons.
pub fn format_mac(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// One link of the namespace: its published facts and the index of its
/// master, kept so the master's name can follow a rename.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub interface: Interface,
    pub master_index: Option<u32>,
}

/// Every link of one network namespace, by index.
///
/// Master names are resolved on insertion and kept current when a master is
/// renamed, added or removed, so reading an interface is a plain lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    links: BTreeMap<u32, Link>,
    /// Addresses by link index. They come in messages of their own, so
    /// they are kept apart and copied into each link's interface.
    addresses: BTreeMap<u32, BTreeSet<IpNet>>,
}

impl Inventory {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn get(&self, index: u32) -> Option<&Link> {
        self.links.get(&index)
    }

    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }

    /// Indices of the links enslaved to `index`.
    pub fn ports_of(&self, index: u32) -> Vec<u32> {
        self.links
            .values()
            .filter(|l| l.master_index == Some(index))
            .map(|l| l.interface.index)
            .collect()
    }

    /// Inserts or replaces a link, resolving its master's name and renaming
    /// the master of its own ports.
    pub fn upsert(&mut self, mut link: Link) {
        let index = link.interface.index;
        link.interface.addresses = self
            .addresses
            .get(&index)
            .map(|a| a.iter().copied().collect())
            .unwrap_or_default();
        let master = link.master_index.and_then(|m| self.links.get(&m));
        link.interface.master = master.map(|m| m.interface.name.clone());
        link.interface.master_kind = master.map(|m| m.interface.kind.clone());
        let (name, kind) = (link.interface.name.clone(), link.interface.kind.clone());
        let renamed = self
            .links
            .get(&index)
            .is_none_or(|old| old.interface.name != name || old.interface.kind != kind);
        self.links.insert(index, link);
        if renamed {
            for port in self.links.values_mut() {
                if port.master_index == Some(index) {
                    port.interface.master = Some(name.clone());
                    port.interface.master_kind = Some(kind.clone());
                }
            }
        }
    }

    /// Removes a link; its ports keep their master index (the kernel sends
    /// their own updates) but lose the name.
    pub fn remove(&mut self, index: u32) -> Option<Link> {
        self.addresses.remove(&index);
        let removed = self.links.remove(&index)?;
        for port in self.links.values_mut() {
            if port.master_index == Some(index) {
                port.interface.master = None;
                port.interface.master_kind = None;
            }
        }
        Some(removed)
    }

    /// Adds (`present`) or removes an address of link `index`. An address
    /// may be reported before its link is known: it is kept for it.
    pub fn set_address(&mut self, index: u32, net: IpNet, present: bool) {
        let set = self.addresses.entry(index).or_default();
        if present {
            set.insert(net);
        } else {
            set.remove(&net);
        }
        let addresses: Vec<IpNet> = set.iter().copied().collect();
        if set.is_empty() {
            self.addresses.remove(&index);
        }
        if let Some(link) = self.links.get_mut(&index) {
            link.interface.addresses = addresses;
        }
    }
}

/// What changed about one surveyed interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Added(Interface),
    Removed(Interface),
    Updated {
        before: Box<Interface>,
        after: Box<Interface>,
    },
}

impl Change {
    /// The interface as it is now (or was, when removed).
    pub fn interface(&self) -> &Interface {
        match self {
            Change::Added(i) | Change::Removed(i) => i,
            Change::Updated { after, .. } => after,
        }
    }

    /// Compares two views of one interface; `None` when they are equal.
    pub fn between(before: Option<&Interface>, after: Option<&Interface>) -> Option<Change> {
        match (before, after) {
            (None, None) => None,
            (None, Some(a)) => Some(Change::Added(a.clone())),
            (Some(b), None) => Some(Change::Removed(b.clone())),
            (Some(b), Some(a)) if a == b => None,
            (Some(b), Some(a)) => Some(Change::Updated {
                before: Box::new(b.clone()),
                after: Box::new(a.clone()),
            }),
        }
    }
}

impl fmt::Display for Change {
    /// One log line: `added sv-a (veth)`, `sv-a: operState down -> up`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added(i) => write!(f, "added {} ({})", i.name, i.kind),
            Change::Removed(i) => write!(f, "removed {} ({})", i.name, i.kind),
            Change::Updated { before, after } => {
                write!(f, "{}:", after.name)?;
                let diffs = field_diffs(before, after);
                for (n, (field, old, new)) in diffs.iter().enumerate() {
                    let sep = if n == 0 { " " } else { ", " };
                    write!(f, "{sep}{field} {old} -> {new}")?;
                }
                Ok(())
            }
        }
    }
}

/// The fields that differ between two views of an interface, rendered for
/// logs as (field, before, after).
pub fn field_diffs(b: &Interface, a: &Interface) -> Vec<(&'static str, String, String)> {
    fn opt<T: fmt::Display>(v: &Option<T>) -> String {
        v.as_ref()
            .map_or_else(|| "-".to_string(), |v| v.to_string())
    }
    fn join(v: &[IpNet]) -> String {
        let parts: Vec<String> = v.iter().map(IpNet::to_string).collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(",")
        }
    }
    let mut out = Vec::new();
    let mut push = |field, old: String, new: String| {
        if old != new {
            out.push((field, old, new));
        }
    };
    push("name", b.name.clone(), a.name.clone());
    push("kind", b.kind.to_string(), a.kind.to_string());
    push(
        "operState",
        b.oper_state.to_string(),
        a.oper_state.to_string(),
    );
    push("carrier", b.carrier.to_string(), a.carrier.to_string());
    push("mtu", b.mtu.to_string(), a.mtu.to_string());
    push("mac", opt(&b.mac), opt(&a.mac));
    push("master", opt(&b.master), opt(&a.master));
    push("alias", opt(&b.alias), opt(&a.alias));
    push("altNames", b.alt_names.join(","), a.alt_names.join(","));
    push("pciId", opt(&b.pci_id), opt(&a.pci_id));
    push("addresses", join(&b.addresses), join(&a.addresses));
    push("speedMbps", opt(&b.speed_mbps), opt(&a.speed_mbps));
    push(
        "lldp",
        b.lldp.as_ref().map_or("-".into(), neighbor_label),
        a.lldp.as_ref().map_or("-".into(), neighbor_label),
    );
    push("networks", b.networks.join(","), a.networks.join(","));
    out
}

/// `systemName/portId`, the NEIGHBOR column and log form of a neighbor.
pub fn neighbor_label(n: &Neighbor) -> String {
    let system = n.system_name.as_deref().unwrap_or(&n.chassis_id.value);
    format!("{system}/{}", n.port_id.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, index: u32, master: Option<u32>) -> Link {
        Link {
            interface: Interface::new(name, index, LinkKind::Virtual("veth".into())),
            master_index: master,
        }
    }

    #[test]
    fn addresses_follow_their_link_and_survive_link_updates() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let mut inv = Inventory::new();
        // Reported before the link (a dump race): kept for it.
        inv.set_address(3, net("2001:db8::1/64"), true);
        inv.upsert(link("sv-a", 3, None));
        inv.set_address(3, net("192.0.2.10/24"), true);
        inv.set_address(3, net("192.0.2.10/24"), true);
        let addrs = |inv: &Inventory| {
            inv.get(3)
                .unwrap()
                .interface
                .addresses
                .iter()
                .map(IpNet::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(addrs(&inv), ["192.0.2.10/24", "2001:db8::1/64"], "sorted");
        // A link message (MTU change) does not drop them.
        inv.upsert(link("sv-a", 3, None));
        assert_eq!(addrs(&inv).len(), 2);
        inv.set_address(3, net("2001:db8::1/64"), false);
        assert_eq!(addrs(&inv), ["192.0.2.10/24"]);
        // A removed link takes its addresses; a new link on the index has none.
        inv.remove(3);
        inv.upsert(link("sv-b", 3, None));
        assert!(addrs(&inv).is_empty());
        let v = serde_json::to_value(&inv.get(3).unwrap().interface).unwrap();
        assert!(v.get("addresses").is_none(), "omitted when empty: {v}");
        inv.set_address(3, net("10.0.0.5/8"), true);
        let v = serde_json::to_value(&inv.get(3).unwrap().interface).unwrap();
        assert_eq!(v["addresses"], serde_json::json!(["10.0.0.5/8"]));
        let back: Interface = serde_json::from_value(v).unwrap();
        assert_eq!(back.addresses, vec![net("10.0.0.5/8")]);
    }

    #[test]
    fn master_name_follows_insert_order_and_rename() {
        let mut inv = Inventory::new();
        // Port first: its master is not known yet.
        inv.upsert(link("port0", 3, Some(7)));
        assert_eq!(inv.get(3).unwrap().interface.master, None);
        let mut bridge = link("br0", 7, None);
        bridge.interface.kind = LinkKind::Virtual("bridge".into());
        inv.upsert(bridge);
        assert_eq!(inv.get(3).unwrap().interface.master.as_deref(), Some("br0"));
        assert_eq!(
            inv.get(3).unwrap().interface.busy_reason().as_deref(),
            Some("port0 is a port of bridge br0")
        );
        inv.upsert(link("br-green", 7, None));
        assert_eq!(
            inv.get(3).unwrap().interface.master.as_deref(),
            Some("br-green")
        );
        inv.remove(7);
        assert_eq!(inv.get(3).unwrap().interface.master, None);
        assert_eq!(inv.get(3).unwrap().interface.busy_reason(), None);
        assert_eq!(inv.ports_of(7), vec![3]);
        // A VRF port can carry a macvlan.
        let mut vrf = link("vrf-green", 7, None);
        vrf.interface.kind = LinkKind::Virtual("vrf".into());
        inv.upsert(vrf);
        inv.upsert(link("port0", 3, Some(7)));
        assert_eq!(inv.get(3).unwrap().interface.busy_reason(), None);
    }

    #[test]
    fn interface_serializes_camel_case_without_unknowns() {
        let mut i = Interface::new("sv-a", 4, LinkKind::Virtual("veth".into()));
        i.mac = Some(format_mac(&[2, 0xaa, 0, 0, 0, 1]));
        i.oper_state = OperState::LowerLayerDown;
        i.alt_names = vec!["green-alt".into()];
        let v = serde_json::to_value(&i).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "name": "sv-a", "index": 4, "mac": "02:aa:00:00:00:01",
                "kind": "veth", "operState": "lowerlayerdown", "carrier": false,
                "mtu": 0, "altNames": ["green-alt"]
            })
        );
        let back: Interface = serde_json::from_value(v).unwrap();
        assert_eq!(back, i);
    }

    #[test]
    fn kinds_round_trip_through_strings() {
        for s in ["physical", "loopback", "other", "veth", "bond", "macvlan"] {
            assert_eq!(LinkKind::from(s).as_str(), s);
        }
        assert!(LinkKind::from("physical").is_physical());
        assert!(!LinkKind::from("veth").is_physical());
    }

    #[test]
    fn change_display_names_each_changed_field() {
        let before = Interface::new("sv-a", 4, LinkKind::Virtual("veth".into()));
        let mut after = before.clone();
        after.oper_state = OperState::Up;
        after.carrier = true;
        let c = Change::between(Some(&before), Some(&after)).unwrap();
        assert_eq!(
            c.to_string(),
            "sv-a: operState unknown -> up, carrier false -> true"
        );
        assert_eq!(Change::between(Some(&before), Some(&before)), None);
    }
}
