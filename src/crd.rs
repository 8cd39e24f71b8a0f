//! The Kubernetes resources (group `surveyor.dev`, version `v1alpha1`),
//! defined once so the same types serve map files, snapshots and the API.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::inventory::Interface;

pub const GROUP: &str = "surveyor.dev";
pub const VERSION: &str = "v1alpha1";
/// `GROUP/VERSION`, as objects name it.
pub const API_VERSION: &str = "surveyor.dev/v1alpha1";
/// Node label prefix: `network.surveyor.dev/<network>: "true"` on each node
/// where the network resolved (written by the controller).
pub const LABEL_PREFIX: &str = "network.surveyor.dev/";

/// A semantic network ("green") and the rule that finds its device on each
/// node. The object's name is the network's name.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "surveyor.dev",
    version = "v1alpha1",
    kind = "NetworkMap",
    shortname = "netmap",
    doc = "A semantic network and how to find its device on each node: explicit per-node interfaces, else a match rule over each node's surveyed interfaces.",
    derive = "PartialEq",
    derive = "Default",
    status = "NetworkMapStatus",
    printcolumn = r#"{"name":"Resolved","type":"string","jsonPath":".status.resolved","description":"Selected nodes where the network has a device"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkMapSpec {
    /// Nodes this network exists on; all nodes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Explicit interfaces, per node. They win over `match` on their node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<NodeInterface>,
    /// The rule for selected nodes without an explicit entry.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_rule: Option<MatchRule>,
}

/// Where a NetworkMap resolved across the cluster, written by the
/// controller only. Nothing in it varies with time but condition
/// transitions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkMapStatus {
    /// The map's generation this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes the map selects (its nodeSelector), agent or not.
    pub selected_nodes: u32,
    /// Selected nodes where it has a device.
    pub resolved_nodes: u32,
    /// `resolvedNodes/selectedNodes`, for `kubectl get networkmaps`.
    pub resolved: String,
    /// Selected nodes without a device, with why: at most 20, by name (the
    /// counts stay exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<UnresolvedNode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UnresolvedNode {
    pub node: String,
    pub reason: String,
}

/// "On node `node`, this network is `interface`."
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeInterface {
    pub node: String,
    pub interface: String,
}

/// Every given field must hold for an interface to match. List fields hold
/// when any entry does; globs use `*`, `?`, `[...]` and `{a,b}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchRule {
    /// Globs over the interface name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Globs over the interface alias (IFLA_IFALIAS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Globs over the interface's alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alt_names: Vec<String>,
    /// Exact MACs (current or permanent), any case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
    /// Exact driver names (ixgbe, i40e, mlx5_core, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drivers: Vec<String>,
    /// Exact PCI addresses (0000:3b:00.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pci_addresses: Vec<String>,
    /// Globs over the PCI `vendor:device` ID, any case (8086:1593, 15b3:*).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pci_ids: Vec<String>,
    /// Networks (192.0.2.0/24, 2001:db8::/64): an address of the interface
    /// must lie in one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    /// Least link speed; interfaces of unknown speed do not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_speed_mbps: Option<u32>,
    /// What the interface's neighbor says, when it spoke LLDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lldp: Option<LldpMatch>,
    /// What the interface's neighbor says, whatever protocol it spoke
    /// (LLDP, CDP, EDP, FDP, SONMP), or one of `protocols`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbor: Option<NeighborMatch>,
}

/// Conditions on the neighbor whatever protocol named it; an interface
/// without one never matches. The same fields as `lldp`, as each protocol
/// fills them (CDP/FDP: the device ID is the system name and chassis ID;
/// EDP: the display name; SONMP: the switch's IP address).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NeighborMatch {
    /// Only neighbors heard over these protocols (any when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<crate::inventory::Protocol>,
    /// Glob over the switch's system name ("tor-green-*").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_name: Option<String>,
    /// Glob over the chassis ID value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chassis_id: Option<String>,
    /// Glob over the port ID value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_id: Option<String>,
    /// Glob over the port description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_description: Option<String>,
    /// The port's PVID (CDP's native VLAN) or one of its advertised VLANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_id: Option<u16>,
}

/// Conditions on the LLDP neighbor; an interface without one never matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LldpMatch {
    /// Glob over the switch's system name ("tor-green-*").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_name: Option<String>,
    /// Glob over the chassis ID value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chassis_id: Option<String>,
    /// Glob over the port ID value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_id: Option<String>,
    /// Glob over the port description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_description: Option<String>,
    /// The port's PVID or one of its advertised VLANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_id: Option<u16>,
}

/// What one node has and what its networks resolve to, published by that
/// node's agent. Everything lives in `status`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "surveyor.dev",
    version = "v1alpha1",
    kind = "NodeSurvey",
    shortname = "nsurvey",
    no_spec,
    status = "NodeSurveyStatus",
    doc = "A node's network interfaces, their LLDP neighbors and the semantic networks resolved on it. Written only by that node's surveyor agent.",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Interfaces","type":"integer","jsonPath":".status.summary.interfaces","description":"Surveyed interfaces"}"#,
    printcolumn = r#"{"name":"Up","type":"integer","jsonPath":".status.summary.up","description":"Interfaces up with carrier"}"#,
    printcolumn = r#"{"name":"Neighbors","type":"integer","jsonPath":".status.summary.neighbors","description":"Interfaces with an LLDP neighbor"}"#,
    printcolumn = r#"{"name":"Networks","type":"string","jsonPath":".status.summary.networks","description":"Networks resolved on this node"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct NodeSurveyFields {}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSurveyStatus {
    /// Counts for `kubectl get nodesurveys`.
    pub summary: Summary,
    /// The surveyed interfaces, sorted by name.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Every network mapped on this node: resolved or with a reason.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub interfaces: u32,
    /// Interfaces up with carrier.
    pub up: u32,
    /// Interfaces with an LLDP neighbor.
    pub neighbors: u32,
    /// Resolved networks, comma-separated.
    pub networks: String,
}

/// One network's resolution on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    /// The device a pod attaching to this network gets its macvlan/ipvlan on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Every matching interface, best first.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Which part of the map chose: `interfaces` (explicit) or `match`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why there is no device, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// False when the map's nodeSelector leaves this node out.
    #[serde(default = "selected", skip_serializing_if = "is_selected")]
    pub selected: bool,
}

fn selected() -> bool {
    true
}

fn is_selected(selected: &bool) -> bool {
    *selected
}

impl Default for NetworkStatus {
    fn default() -> Self {
        NetworkStatus {
            device: None,
            candidates: Vec::new(),
            rule: None,
            reason: None,
            selected: true,
        }
    }
}

/// Patterns the API server checks before an admin's map reaches any node.
/// The agent checks everything again (globs fully); these catch the
/// obvious mistakes at `kubectl apply` time.
const MAC_PATTERN: &str = r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$";
const PCI_PATTERN: &str = r"^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$";
/// `vendor:device` of hex digits and glob characters.
const PCI_ID_PATTERN: &str = r"^[0-9A-Fa-f*?\[\]{},!-]+:[0-9A-Fa-f*?\[\]{},!-]+$";
/// An IPv4 or IPv6 address (loosely: the agent parses it) and a prefix.
const CIDR_PATTERN: &str = r"^[0-9A-Fa-f.:]+/[0-9]{1,3}$";
/// Brackets and braces balanced and not nested: what globset accepts.
const GLOB_PATTERN: &str = r"^([^\[\]{}]|\[[^\[\]]+\]|\{[^{}\[\]]*\})*$";

/// Both CRDs, with the validation the derive cannot express.
pub fn crds() -> Vec<serde_json::Value> {
    use kube::CustomResourceExt as _;
    use serde_json::json;
    let mut network_map = serde_json::to_value(NetworkMap::crd()).unwrap_or_default();
    if let Some(root) = schema(&mut network_map, &[]) {
        root["x-kubernetes-validations"] = json!([{
            "rule": "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')",
            "message": "a NetworkMap's name is its network's name and ends a node label key: a DNS label of at most 63 characters (lowercase letters, digits, '-')"
        }]);
    }
    let rule = ["spec", "match"];
    for (field, pattern) in [
        ("macs", MAC_PATTERN),
        ("pciAddresses", PCI_PATTERN),
        ("pciIds", PCI_ID_PATTERN),
        ("cidrs", CIDR_PATTERN),
        ("names", GLOB_PATTERN),
        ("aliases", GLOB_PATTERN),
        ("altNames", GLOB_PATTERN),
    ] {
        if let Some(items) = schema(&mut network_map, &[&rule[..], &[field]].concat())
            .and_then(|s| s.get_mut("items"))
        {
            items["pattern"] = json!(pattern);
        }
    }
    for block in ["lldp", "neighbor"] {
        for field in ["systemName", "chassisId", "portId", "portDescription"] {
            if let Some(s) = schema(&mut network_map, &[&rule[..], &[block, field]].concat()) {
                s["pattern"] = json!(GLOB_PATTERN);
            }
        }
    }
    // A map must say how to find its device, and a rule must hold a
    // condition: an empty one selects every interface (or every one with a
    // neighbor). Lists given must not be empty for the same reason.
    if let Some(spec) = schema(&mut network_map, &["spec"]) {
        spec["x-kubernetes-validations"] = json!([{
            "rule": "has(self.interfaces) || has(self.match)",
            "message": "a NetworkMap needs spec.interfaces or spec.match to find its device"
        }]);
    }
    if let Some(m) = schema(&mut network_map, &["spec", "match"]) {
        m["minProperties"] = json!(1);
        if let Some(props) = m["properties"].as_object_mut() {
            for field in props.values_mut() {
                if field["type"] == "array" {
                    field["minItems"] = json!(1);
                }
            }
        }
    }
    for block in ["lldp", "neighbor"] {
        if let Some(l) = schema(&mut network_map, &["spec", "match", block]) {
            l["minProperties"] = json!(1);
        }
    }
    if let Some(p) = schema(
        &mut network_map,
        &["spec", "match", "neighbor", "protocols"],
    ) {
        p["minItems"] = json!(1);
    }
    if let Some(i) = schema(&mut network_map, &["spec", "interfaces"]) {
        i["minItems"] = json!(1);
    }
    for block in ["lldp", "neighbor"] {
        if let Some(vlan) = schema(&mut network_map, &["spec", "match", block, "vlanId"]) {
            vlan["minimum"] = json!(1);
            vlan["maximum"] = json!(4094);
        }
    }
    if let Some(items) =
        schema(&mut network_map, &["spec", "interfaces"]).and_then(|s| s.get_mut("items"))
    {
        items["properties"]["node"]["minLength"] = json!(1);
        items["properties"]["interface"]["minLength"] = json!(1);
        items["properties"]["interface"]["maxLength"] = json!(15);
    }
    let node_survey = serde_json::to_value(NodeSurvey::crd()).unwrap_or_default();
    vec![network_map, node_survey]
}

/// Appends the path of every field in `doc` (a NetworkMap as JSON) that
/// the NetworkMap schema does not know: what the API server would prune
/// and a strict `kubectl apply` refuses. `metadata` is left to the API.
pub fn unknown_fields(doc: &serde_json::Value, out: &mut Vec<String>) {
    use std::sync::OnceLock;
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        use kube::CustomResourceExt as _;
        serde_json::to_value(NetworkMap::crd())
            .ok()
            .and_then(|crd| {
                crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
                    .cloned()
            })
            .unwrap_or_default()
    });
    walk(doc, schema, "", out);
}

fn walk(value: &serde_json::Value, schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match value {
        Value::Object(fields) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in fields {
                    // Every object has these; ObjectMeta is the API
                    // server's to check.
                    let type_meta = ["apiVersion", "kind", "metadata"].contains(&k.as_str());
                    match props.get(k) {
                        _ if path.is_empty() && type_meta => {}
                        Some(s) => walk(v, s, &join(k), out),
                        None => out.push(join(k)),
                    }
                }
            } else if let Some(items) = schema.get("additionalProperties") {
                for (k, v) in fields {
                    walk(v, items, &join(k), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(v, s, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// The schema at `path` (property names) below the root of the first
/// version's openAPIV3Schema.
fn schema<'a>(crd: &'a mut serde_json::Value, path: &[&str]) -> Option<&'a mut serde_json::Value> {
    let mut at = crd.pointer_mut("/spec/versions/0/schema/openAPIV3Schema")?;
    for p in path {
        at = at.get_mut("properties")?.get_mut(*p)?;
    }
    Some(at)
}

/// What `surveyor crds` prints (and `crds/surveyor.dev.yaml` holds).
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_named_by_path() {
        let doc = serde_json::json!({
            "apiVersion": "surveyor.dev/v1alpha1", "kind": "NetworkMap",
            "metadata": {"name": "blue", "labels": {"a": "b"}, "whatever": 1},
            "spec": {
                "match": {"lldp": {"sytemName": "tor-blue-*"}, "names": ["ens*"]},
                "interfaces": [{"node": "n1", "interface": "ens4", "iface": "x"}],
                "nodeSelector": {"matchLabels": {"rack": "r1"}, "matchExpression": []}
            },
            "extra": true
        });
        let mut out = Vec::new();
        unknown_fields(&doc, &mut out);
        out.sort();
        assert_eq!(
            out,
            [
                "extra",
                "spec.interfaces[0].iface",
                "spec.match.lldp.sytemName",
                "spec.nodeSelector.matchExpression"
            ]
        );
    }

    #[test]
    fn crds_carry_names_scope_columns_and_validation() {
        let [map, survey] = <[serde_json::Value; 2]>::try_from(crds()).unwrap();
        assert_eq!(map["spec"]["scope"], "Cluster");
        assert_eq!(
            map["spec"]["names"]["shortNames"],
            serde_json::json!(["netmap"])
        );
        let root = &map["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert!(
            root["x-kubernetes-validations"][0]["rule"]
                .as_str()
                .unwrap()
                .contains("{0,61}")
        );
        let m = &root["properties"]["spec"]["properties"]["match"]["properties"];
        assert_eq!(m["macs"]["items"]["pattern"], MAC_PATTERN);
        assert_eq!(
            m["lldp"]["properties"]["systemName"]["pattern"],
            GLOB_PATTERN
        );
        assert_eq!(m["lldp"]["properties"]["vlanId"]["maximum"], 4094);
        let spec = &root["properties"]["spec"];
        assert_eq!(
            spec["x-kubernetes-validations"][0]["rule"],
            "has(self.interfaces) || has(self.match)"
        );
        assert_eq!(spec["properties"]["match"]["minProperties"], 1);
        assert_eq!(m["lldp"]["minProperties"], 1);
        assert_eq!(m["names"]["minItems"], 1);
        assert_eq!(m["cidrs"]["minItems"], 1);
        assert_eq!(survey["spec"]["scope"], "Cluster");
        assert_eq!(
            survey["spec"]["names"]["shortNames"],
            serde_json::json!(["nsurvey"])
        );
        let v = &survey["spec"]["versions"][0];
        assert!(v["subresources"]["status"].is_object());
        let columns: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            ["Interfaces", "Up", "Neighbors", "Networks", "Age"]
        );
        // The patterns say what the agent says.
        let re = |p: &str, s: &str| regex_automata::meta::Regex::new(p).unwrap().is_match(s);
        assert!(
            re(GLOB_PATTERN, "tor-green-*")
                && re(GLOB_PATTERN, "ens[0-9]")
                && re(GLOB_PATTERN, "{eth,ens}*")
        );
        assert!(!re(GLOB_PATTERN, "ens[") && !re(GLOB_PATTERN, "a{b"));
        assert!(re(MAC_PATTERN, "52:54:00:AA:bb:01") && !re(MAC_PATTERN, "52:54:00"));
        assert!(re(PCI_PATTERN, "0000:3b:00.1") && !re(PCI_PATTERN, "3b:00.1"));
        assert!(re(PCI_ID_PATTERN, "8086:1593") && re(PCI_ID_PATTERN, "15b3:*"));
        assert!(re(PCI_ID_PATTERN, "8086:{1592,1593}") && !re(PCI_ID_PATTERN, "8086"));
        assert!(!re(PCI_ID_PATTERN, "intel:x710"));
        assert!(re(CIDR_PATTERN, "192.0.2.0/24") && re(CIDR_PATTERN, "2001:db8::/64"));
        assert!(!re(CIDR_PATTERN, "192.0.2.0") && !re(CIDR_PATTERN, "lan/24"));
    }
}
