//! The cluster view, pure: what the controller keeps of NetworkMaps, Nodes
//! and NodeSurveys (little of each: a NodeSurvey's resolutions and the
//! facts the topology draws, not the whole object), and what should be in
//! the API because of it: each NetworkMap's status, each Node's
//! `network.surveyor.dev/*` labels.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

use crate::condition::condition;
use crate::crd::{NetworkMapStatus, NodeSurveyStatus, UnresolvedNode};
use crate::network_map::CompiledMap;
use crate::topology::{NodeView, Topology};

pub use crate::crd::LABEL_PREFIX;
/// Most unresolved nodes a status lists (the counts stay exact).
pub const UNRESOLVED_MAX: usize = 20;

/// A NetworkMap as the controller keeps it.
#[derive(Debug, Clone, Default)]
pub struct MapEntry {
    pub generation: Option<i64>,
    /// Its last valid spec, checked (what the agents keep resolving).
    pub valid: Option<CompiledMap>,
    /// Why its current spec cannot be used, when it cannot.
    pub invalid: Option<String>,
    /// Its status as the API has it.
    pub observed: Option<NetworkMapStatus>,
    /// Its uid, for Events about it.
    pub uid: Option<String>,
}

impl MapEntry {
    /// Takes in a new version of the spec: a malformed one is reported
    /// and the last valid one stays.
    pub fn update(&mut self, generation: Option<i64>, compiled: Result<CompiledMap, String>) {
        self.generation = generation;
        match compiled {
            Ok(map) => {
                self.valid = Some(map);
                self.invalid = None;
            }
            Err(why) => self.invalid = Some(why),
        }
    }
}

/// A Node as the controller keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeEntry {
    /// Its labels, ours left out: what nodeSelectors see.
    pub selector_labels: BTreeMap<String, String>,
    /// Our labels on it: network -> value.
    pub network_labels: BTreeMap<String, String>,
    /// Its uid, for Events about it.
    pub uid: Option<String>,
}

impl NodeEntry {
    pub fn of(labels: &BTreeMap<String, String>) -> NodeEntry {
        let mut entry = NodeEntry::default();
        for (k, v) in labels {
            match k.strip_prefix(LABEL_PREFIX) {
                Some(network) => {
                    entry.network_labels.insert(network.to_string(), v.clone());
                }
                None => {
                    entry.selector_labels.insert(k.clone(), v.clone());
                }
            }
        }
        entry
    }
}

/// One network on one node, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetResult {
    pub device: bool,
    pub selected: bool,
    pub reason: Option<String>,
}

/// A NodeSurvey as the controller keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyEntry {
    pub networks: BTreeMap<String, NetResult>,
    pub view: NodeView,
}

impl SurveyEntry {
    pub fn of(node: &str, status: &NodeSurveyStatus) -> SurveyEntry {
        SurveyEntry {
            networks: status
                .networks
                .iter()
                .map(|(name, n)| {
                    let result = NetResult {
                        device: n.device.is_some(),
                        selected: n.selected,
                        reason: n.reason.clone(),
                    };
                    (name.clone(), result)
                })
                .collect(),
            view: NodeView::of(node, status),
        }
    }
}

#[derive(Debug, Default)]
pub struct Model {
    pub maps: BTreeMap<String, MapEntry>,
    pub nodes: BTreeMap<String, NodeEntry>,
    pub surveys: BTreeMap<String, SurveyEntry>,
    /// Our DeviceClasses (DRA) as the API has them, by network.
    pub classes: BTreeMap<String, ClassSeen>,
}

/// A DeviceClass of ours as the API has it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassSeen {
    pub name: String,
    pub spec: serde_json::Value,
}

impl Model {
    /// The DeviceClass network `network` should have (`None`: none), and
    /// whether what the API has differs from it.
    pub fn class_wanted(&self, network: &str) -> (Option<serde_json::Value>, bool) {
        let want = self
            .maps
            .contains_key(network)
            .then(|| crate::dra::device_class(network))
            .flatten();
        let seen = self.classes.get(network);
        let differs = match (&want, seen) {
            (None, None) => false,
            (Some(w), Some(s)) => w["metadata"]["name"] != s.name.as_str() || w["spec"] != s.spec,
            _ => true,
        };
        (want, differs)
    }
}

impl Model {
    /// The status NetworkMap `name` should have (`None`: no such map).
    /// Condition times carry over from the status the API has.
    pub fn map_status(&self, name: &str, now: &Time) -> Option<NetworkMapStatus> {
        let entry = self.maps.get(name)?;
        let previous = entry
            .observed
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let mut selected = 0u32;
        let mut resolved = 0u32;
        let mut unresolved = Vec::new();
        for (node, n) in &self.nodes {
            if !entry
                .valid
                .as_ref()
                .is_some_and(|m| m.selects(&n.selector_labels))
            {
                continue;
            }
            selected += 1;
            let reason = match self.surveys.get(node).map(|s| s.networks.get(name)) {
                None => Some("no NodeSurvey: no surveyor agent runs on this node, or it has not published yet".to_string()),
                Some(None) => Some(format!("the agent on this node has not resolved NetworkMap {name} yet")),
                Some(Some(r)) if r.device => None,
                Some(Some(r)) if !r.selected => Some(format!(
                    "its agent does not see the node as selected (it judges by the Node's labels it last saw): {}",
                    r.reason.as_deref().unwrap_or("no reason given")
                )),
                Some(Some(r)) => Some(r.reason.clone().unwrap_or_else(|| "no device".into())),
            };
            match reason {
                None => resolved += 1,
                Some(reason) => unresolved.push(UnresolvedNode {
                    node: node.clone(),
                    reason,
                }),
            }
        }
        let missing = unresolved.len();
        let ready = if selected == 0 {
            (
                "True",
                "NoNodesSelected",
                "no node is selected by spec.nodeSelector".to_string(),
            )
        } else if missing == 0 {
            (
                "True",
                "Resolved",
                format!("resolved on all {selected} selected node(s)"),
            )
        } else {
            (
                "False",
                "Unresolved",
                format!("resolved on {resolved} of {selected} selected node(s)"),
            )
        };
        let degraded = if missing == 0 {
            (
                "False",
                "AsExpected",
                "every selected node has a device".to_string(),
            )
        } else {
            let some: Vec<String> = unresolved
                .iter()
                .take(3)
                .map(|u| format!("{}: {}", u.node, u.reason))
                .collect();
            let more = if missing > 3 {
                format!("; and {} more", missing - 3)
            } else {
                String::new()
            };
            (
                "True",
                "Unresolved",
                format!("no device on {missing} node(s): {}{more}", some.join("; ")),
            )
        };
        unresolved.truncate(UNRESOLVED_MAX);
        let (ready, degraded) = match &entry.invalid {
            None => (ready, degraded),
            Some(why) => {
                let kept = if entry.valid.is_some() {
                    "nodes keep resolving its last valid version"
                } else {
                    "no node resolves it"
                };
                let message = format!("spec is invalid: {why}; {kept}");
                (
                    ("False", "InvalidSpec", message.clone()),
                    ("True", "InvalidSpec", message),
                )
            }
        };
        Some(NetworkMapStatus {
            observed_generation: entry.generation,
            selected_nodes: selected,
            resolved_nodes: resolved,
            resolved: format!("{resolved}/{selected}"),
            unresolved,
            conditions: vec![
                condition(previous, "Ready", ready, now),
                condition(previous, "Degraded", degraded, now),
            ],
        })
    }

    /// The networks a node should be labelled with: those its NodeSurvey
    /// resolved.
    pub fn node_networks(&self, node: &str) -> BTreeSet<String> {
        self.surveys
            .get(node)
            .map(|s| {
                s.networks
                    .iter()
                    .filter(|(_, r)| r.device)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The merge patch that puts a node's labels right, when they are not:
    /// ours set to "true" where resolved, removed (whoever set them) where
    /// not; other labels untouched.
    pub fn label_patch(&self, node: &str) -> Option<Value> {
        let have = &self.nodes.get(node)?.network_labels;
        let want = self.node_networks(node);
        let mut labels = Map::new();
        for n in &want {
            if have.get(n).map(String::as_str) != Some("true") {
                labels.insert(format!("{LABEL_PREFIX}{n}"), json!("true"));
            }
        }
        for n in have.keys().filter(|n| !want.contains(*n)) {
            labels.insert(format!("{LABEL_PREFIX}{n}"), Value::Null);
        }
        (!labels.is_empty()).then(|| json!({"metadata": {"labels": labels}}))
    }

    /// The fabric: every node with a NodeSurvey, and every Node without one
    /// (marked), with the maps selecting it that it lacks.
    pub fn topology(&self) -> Topology {
        let mut views: Vec<NodeView> = Vec::with_capacity(self.nodes.len().max(self.surveys.len()));
        for (name, s) in &self.surveys {
            views.push(s.view.clone());
            if let Some(v) = views.last_mut() {
                v.name = name.clone();
            }
        }
        for (name, node) in &self.nodes {
            if self.surveys.contains_key(name) {
                continue;
            }
            let unresolved = self
                .maps
                .iter()
                .filter(|(_, m)| {
                    m.valid
                        .as_ref()
                        .is_some_and(|c| c.selects(&node.selector_labels))
                })
                .map(|(n, _)| n.clone())
                .collect();
            views.push(NodeView {
                name: name.clone(),
                interfaces: Vec::new(),
                unresolved,
                surveyed: false,
            });
        }
        crate::topology::build(&views)
    }

    /// (map, `resolved/selected`) for the topology page.
    pub fn summary(&self) -> Vec<(String, String)> {
        let now = crate::condition::now();
        self.maps
            .keys()
            .filter_map(|m| Some((m.clone(), self.map_status(m, &now)?.resolved)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network_map::parse_documents;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn map(yaml_spec: &str) -> MapEntry {
        let text = format!(
            "apiVersion: surveyor.dev/v1alpha1\nkind: NetworkMap\nmetadata: {{name: green}}\nspec: {yaml_spec}\n"
        );
        let m = parse_documents(&text).unwrap().remove(0);
        let mut entry = MapEntry::default();
        entry.update(Some(3), CompiledMap::compile(&m).map_err(|e| e.to_string()));
        entry
    }

    fn survey(networks: &[(&str, bool)]) -> SurveyEntry {
        SurveyEntry {
            networks: networks
                .iter()
                .map(|(n, device)| {
                    let result = NetResult {
                        device: *device,
                        selected: true,
                        reason: (!device).then(|| "ens4 fails lldp.systemName".to_string()),
                    };
                    (n.to_string(), result)
                })
                .collect(),
            view: NodeView::default(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn model() -> Model {
        let mut m = Model::default();
        m.maps.insert(
            "green".into(),
            map("{nodeSelector: {matchLabels: {rack: r1}}, match: {names: ['*']}}"),
        );
        for (node, rack) in [("n1", "r1"), ("n2", "r1"), ("n3", "r1"), ("n9", "r2")] {
            m.nodes
                .insert(node.into(), NodeEntry::of(&labels(&[("rack", rack)])));
        }
        m.surveys.insert("n1".into(), survey(&[("green", true)]));
        m.surveys.insert("n2".into(), survey(&[("green", false)]));
        m.surveys.insert("n9".into(), survey(&[("green", false)]));
        m
    }

    #[test]
    fn status_counts_selected_and_resolved_nodes_and_says_why_not() {
        let m = model();
        let s = m.map_status("green", &at(100)).unwrap();
        assert_eq!(
            (s.selected_nodes, s.resolved_nodes, s.resolved.as_str()),
            (3, 1, "1/3")
        );
        assert_eq!(s.observed_generation, Some(3));
        let nodes: Vec<&str> = s.unresolved.iter().map(|u| u.node.as_str()).collect();
        assert_eq!(nodes, ["n2", "n3"], "n9 is not selected");
        assert!(s.unresolved[0].reason.contains("lldp.systemName"));
        assert!(s.unresolved[1].reason.contains("no NodeSurvey"));
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[1].reason, "Unresolved");
        assert!(
            s.conditions[1].message.contains("n2: ens4 fails"),
            "{}",
            s.conditions[1].message
        );
        // Same facts later, the status observed: identical, times included.
        let mut m = m;
        m.maps.get_mut("green").unwrap().observed = Some(s.clone());
        assert_eq!(m.map_status("green", &at(500)), Some(s));
    }

    #[test]
    fn unresolved_lists_at_most_twenty_and_counts_stay_exact() {
        let mut m = Model::default();
        m.maps
            .insert("green".into(), map("{match: {names: ['*']}}"));
        for n in 0..50 {
            m.nodes.insert(format!("n{n:02}"), NodeEntry::default());
        }
        let s = m.map_status("green", &at(1)).unwrap();
        assert_eq!((s.selected_nodes, s.resolved_nodes), (50, 0));
        assert_eq!(s.unresolved.len(), UNRESOLVED_MAX);
        assert_eq!(s.unresolved[0].node, "n00");
        assert!(s.conditions[1].message.contains("and 47 more"));
        // A spec gone bad: said so, the counts from its last valid version.
        let entry = m.maps.get_mut("green").unwrap();
        entry.update(Some(4), Err("spec.match.names[0]: unclosed [".into()));
        let s = m.map_status("green", &at(2)).unwrap();
        assert_eq!((s.selected_nodes, s.observed_generation), (50, Some(4)));
        assert_eq!(s.conditions[0].reason, "InvalidSpec");
        assert!(
            s.conditions[0]
                .message
                .contains("keep resolving its last valid")
        );
    }

    #[test]
    fn labels_follow_the_survey_and_leave_others_alone() {
        let mut m = model();
        m.nodes.insert(
            "n1".into(),
            NodeEntry::of(&labels(&[
                ("rack", "r1"),
                ("network.surveyor.dev/red", "true"),
            ])),
        );
        assert_eq!(
            m.label_patch("n1"),
            Some(
                json!({"metadata": {"labels": {"network.surveyor.dev/green": "true", "network.surveyor.dev/red": null}}})
            )
        );
        m.nodes.insert(
            "n1".into(),
            NodeEntry::of(&labels(&[
                ("rack", "r1"),
                ("network.surveyor.dev/green", "true"),
            ])),
        );
        assert_eq!(m.label_patch("n1"), None, "right already: no patch");
        // A node without a NodeSurvey has none of our labels.
        m.nodes.insert(
            "n3".into(),
            NodeEntry::of(&labels(&[("network.surveyor.dev/green", "true")])),
        );
        assert_eq!(
            m.label_patch("n3"),
            Some(json!({"metadata": {"labels": {"network.surveyor.dev/green": null}}}))
        );
        assert_eq!(m.label_patch("unknown"), None);
    }

    #[test]
    fn the_topology_marks_nodes_without_an_agent() {
        let m = model();
        let t = m.topology();
        let n3 = t.nodes.iter().find(|n| n.name == "n3").unwrap();
        assert!(!n3.surveyed);
        assert_eq!(n3.unresolved, ["green"]);
        assert_eq!(t.nodes.len(), 4);
    }
}
