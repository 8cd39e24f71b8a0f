//! The agent's side of the Kubernetes API: the watches that
//! bring NetworkMaps and the Node's labels in, and what the state dir
//! remembers of them for a restart with the API down. Writes are
//! [`super::writer`]'s.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};

use super::map_store::MapStore;
use crate::crd::{LABEL_PREFIX, NetworkMap};

pub const FIELD_MANAGER: &str = "surveyor-agent";
/// Every API request the agent makes, as RBAC sees it: (API group,
/// resource, verbs). The ClusterRole in deploy/ must grant all of it
/// (tests/deploy.rs checks), and the agent must make nothing else
/// (tests/kube.rs checks every request it records).
pub const API_REQUESTS: &[(&str, &str, &[&str])] = &[
    // The NodeSurvey is created and then kept by server-side apply, and
    // watched so that drift (a deletion, an edit) is put right.
    (
        "surveyor.dev",
        "nodesurveys",
        &["get", "list", "watch", "create", "patch"],
    ),
    ("surveyor.dev", "nodesurveys/status", &["patch"]),
    ("surveyor.dev", "networkmaps", &["get", "list", "watch"]),
    // Its own Node's labels, for nodeSelectors; read only (the
    // controller writes Node labels).
    ("", "nodes", &["get", "list", "watch"]),
    // With --dra: its node's ResourceSlice, read at start, applied (a
    // dry run first, to learn whether devices can be shared), deleted
    // when no network resolves, and watched so that drift is put right.
    (
        "resource.k8s.io",
        "resourceslices",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // With --dra, the kubelet plugin reads the claims it prepares, and
    // shows their pods' interfaces on their status (networkData).
    ("resource.k8s.io", "resourceclaims", &["get"]),
    ("resource.k8s.io", "resourceclaims/status", &["patch"]),
    // Events about its NodeSurvey (a network moved, lost or found its
    // device), aggregated into series by patching.
    ("events.k8s.io", "events", &["create", "patch"]),
];

pub type MapEvents =
    Pin<Box<dyn Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Send>>;
pub type NodeEvents = Pin<Box<dyn Stream<Item = Result<Event<Node>, watcher::Error>> + Send>>;

/// Watches every NetworkMap, as raw objects: one that does not decode is
/// reported on its own instead of breaking the watch for all.
pub fn watch_maps(client: Client) -> MapEvents {
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<NetworkMap>(&()));
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed()
}

/// Watches this node's Node object (its labels feed nodeSelectors).
pub fn watch_node(client: Client, node: &str) -> NodeEvents {
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    watcher::watcher(api, config).default_backoff().boxed()
}

/// The Node's labels that may select networks: Surveyor's own labels are
/// left out, so a map cannot select on its own result and flap.
pub fn selector_labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with(LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What the state dir remembers from the API: the maps in force
/// (`maps.json`) and this node's labels (`node.json`), so an agent
/// restarted while the API is down resolves as it did before.
pub fn remembered(state_dir: &Path, node: &str) -> (MapStore, Option<BTreeMap<String, String>>) {
    let maps = crate::snapshot::read_maps(state_dir)
        .map(|l| l.items)
        .unwrap_or_default();
    if !maps.is_empty() {
        tracing::info!(
            "starting from {} NetworkMap(s) saved in maps.json",
            maps.len()
        );
    }
    let labels = crate::snapshot::read_node(state_dir)
        .ok()
        .filter(|n| n.node == node)
        .map(|n| n.labels);
    (MapStore::from_saved(maps), labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn our_own_labels_never_select() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1", "labels": {
            "rack": "r1", "network.surveyor.dev/green": "true"}}}))
        .unwrap();
        let labels = selector_labels(&node);
        assert_eq!(labels.len(), 1);
        assert_eq!(labels["rack"], "r1");
    }
}
