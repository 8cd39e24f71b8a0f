//! `surveyor uninstall cluster`: what Surveyor put in the API, removed —
//! the `network.surveyor.dev/*` Node labels, the ResourceSlices of driver
//! `surveyor.dev`, the DeviceClasses the controller keeps, every
//! NodeSurvey — once its workloads are gone (running ones would put it all
//! back). NetworkMaps are the admins' and stay: they go with the CRDs,
//! when an admin deletes those.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceSlice};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Client, Resource};
use serde_json::{Map, Value, json};

use super::UninstallError;
use crate::crd::{LABEL_PREFIX, NodeSurvey};
use crate::dra::{CLASS_LABEL, DRIVER};

pub const FIELD_MANAGER: &str = "surveyor-uninstall";
/// The workloads that must be gone first, in the namespace of `deploy/`.
pub const AGENT_DAEMONSET: &str = "surveyor-agent";
pub const CONTROLLER_DEPLOYMENT: &str = "surveyor-controller";

/// Every API request the clean-up makes, as RBAC sees it (group, resource,
/// verbs); deploy/uninstall's ClusterRole grants exactly this
/// (tests/deploy.rs checks).
pub const API_REQUESTS: &[(&str, &str, &[&str])] = &[
    ("apps", "daemonsets", &["get"]),
    ("apps", "deployments", &["get"]),
    ("", "nodes", &["list", "patch"]),
    ("resource.k8s.io", "resourceslices", &["deletecollection"]),
    ("resource.k8s.io", "deviceclasses", &["deletecollection"]),
    ("surveyor.dev", "nodesurveys", &["deletecollection"]),
];

/// What the clean-up removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Nodes whose Surveyor labels were removed.
    pub nodes: usize,
    pub labels: usize,
    /// None: the cluster serves no resource.k8s.io/v1.
    pub slices: Option<usize>,
    pub classes: Option<usize>,
    /// None: the NodeSurvey CRD is gone already.
    pub surveys: Option<usize>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |v: Option<usize>, what: &str| match v {
            Some(n) => format!("{n} {what}"),
            None => format!("no {what} (not served here)"),
        };
        write!(
            f,
            "removed {} label(s) from {} Node(s), {}, {}, {}; NetworkMaps kept (kubectl delete -k crds/ deletes them with the CRDs)",
            self.labels,
            self.nodes,
            n(self.slices, "ResourceSlice(s)"),
            n(self.classes, "DeviceClass(es)"),
            n(self.surveys, "NodeSurvey(s)"),
        )
    }
}

/// Cleans the cluster, once the workloads in `namespace` are gone.
pub async fn clean(client: Client, namespace: &str) -> Result<Report, UninstallError> {
    let gone = |what: &str| {
        let what = what.to_string();
        move |e: kube::Error| api_error(&what, e)
    };
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    if daemonsets
        .get_opt(AGENT_DAEMONSET)
        .await
        .map_err(gone("reading the agent DaemonSet"))?
        .is_some()
    {
        return Err(UninstallError::StillDeployed {
            what: format!("DaemonSet {namespace}/{AGENT_DAEMONSET}"),
        });
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    if deployments
        .get_opt(CONTROLLER_DEPLOYMENT)
        .await
        .map_err(gone("reading the controller Deployment"))?
        .is_some()
    {
        return Err(UninstallError::StillDeployed {
            what: format!("Deployment {namespace}/{CONTROLLER_DEPLOYMENT}"),
        });
    }
    let mut report = Report::default();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut page = ListParams::default().limit(500);
    loop {
        let list = nodes
            .list_metadata(&page)
            .await
            .map_err(gone("listing Nodes"))?;
        for node in &list.items {
            if let Some(patch) = unlabel(node) {
                let name = node.metadata.name.clone().unwrap_or_default();
                nodes
                    .patch_metadata(&name, &patch_params(), &Patch::Merge(&patch.0))
                    .await
                    .map_err(gone(&format!(
                        "removing Surveyor's labels from Node {name}"
                    )))?;
                report.nodes += 1;
                report.labels += patch.1;
            }
        }
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => page = page.continue_token(&token),
            None => break,
        }
    }
    let slices: Api<ResourceSlice> = Api::all(client.clone());
    report.slices = delete_all(
        &slices,
        ListParams::default().fields(&format!("spec.driver={DRIVER}")),
        "ResourceSlices",
    )
    .await?;
    let classes: Api<DeviceClass> = Api::all(client.clone());
    report.classes = delete_all(
        &classes,
        ListParams::default().labels(CLASS_LABEL),
        "DeviceClasses",
    )
    .await?;
    let surveys: Api<NodeSurvey> = Api::all(client);
    report.surveys = delete_all(&surveys, ListParams::default(), "NodeSurveys").await?;
    Ok(report)
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// The merge patch removing a Node's Surveyor labels, and how many.
fn unlabel(node: &PartialObjectMeta<Node>) -> Option<(Value, usize)> {
    let ours: Map<String, Value> = node
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(LABEL_PREFIX))
        .map(|(k, _)| (k.clone(), Value::Null))
        .collect();
    let n = ours.len();
    (n > 0).then(|| (json!({"metadata": {"labels": ours}}), n))
}

/// Deletes what `params` select in one request; None when the API does
/// not serve the resource.
async fn delete_all<K>(
    api: &Api<K>,
    params: ListParams,
    what: &str,
) -> Result<Option<usize>, UninstallError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api
        .delete_collection(&DeleteParams::default(), &params)
        .await
    {
        Ok(either) => Ok(Some(either.left().map_or(0, |list| list.items.len()))),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(api_error(&format!("deleting {what}"), e)),
    }
}

fn api_error(what: &str, e: kube::Error) -> UninstallError {
    UninstallError::Api {
        what: what.to_string(),
        source: Box::new(e),
    }
}
