//! `surveyor topology`: the fabric as LLDP sees it, from the API or from
//! NodeSurvey files, as SVG, DOT, JSON or the controller's HTML page.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::PartialObjectMeta;
use serde_json::Value;

use crate::controller::model::{MapEntry, Model};
use crate::controller::watches;
use crate::crd::{NetworkMap, NodeSurvey, NodeSurveyStatus};
use crate::topology::{self, NodeView, Topology};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Svg,
    Dot,
    Json,
    Html,
}

#[derive(Debug, Args)]
pub struct TopologyArgs {
    /// What to print.
    #[arg(short, long, value_enum, default_value = "svg")]
    pub output: Format,
    /// Kubeconfig to reach the cluster [default: in-cluster config, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "PATH", conflicts_with = "surveys")]
    pub kubeconfig: Option<PathBuf>,
    /// NodeSurveys from files instead of the API: a directory of NODE.json
    /// (an agent's survey.json, or a NodeSurvey object) and NODE/survey.json,
    /// or one file of `kubectl get nodesurveys -o json`.
    #[arg(long, value_name = "PATH")]
    pub surveys: Option<PathBuf>,
}

/// Files bigger than this are not surveys.
const MAX_FILE: u64 = 64 << 20;

pub fn run(args: TopologyArgs) -> anyhow::Result<()> {
    let (topology, summary) = match &args.surveys {
        Some(path) => {
            let views: Vec<NodeView> = read_surveys(path)?
                .iter()
                .map(|(name, status)| NodeView::of(name, status))
                .collect();
            (topology::build(&views), Vec::new())
        }
        None => super::runtime()?.block_on(from_api(args.kubeconfig.as_deref()))?,
    };
    let out = match args.output {
        Format::Svg => topology::svg(&topology),
        Format::Dot => topology::dot(&topology),
        Format::Json => topology::json(&topology),
        Format::Html => topology::html(&topology, &summary),
    };
    print!("{out}");
    Ok(())
}

async fn from_api(kubeconfig: Option<&Path>) -> anyhow::Result<(Topology, Vec<(String, String)>)> {
    let client = crate::connect::connect(kubeconfig)
        .await
        .context("connecting to the cluster (or read files with --surveys DIR)")?;
    let lp = ListParams::default();
    let maps: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<NetworkMap>(&()));
    let surveys: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<NodeSurvey>(&()));
    let nodes: Api<PartialObjectMeta<Node>> = Api::all(client);
    let mut model = Model::default();
    for obj in maps.list(&lp).await.context("listing NetworkMaps")? {
        let (name, _) = watches::identity(&obj.metadata);
        let m = watches::map_object(&obj);
        let mut entry = MapEntry::default();
        entry.update(m.generation, m.compiled);
        model.maps.insert(name, entry);
    }
    for obj in nodes.list(&lp).await.context("listing Nodes")? {
        let (name, _) = watches::identity(&obj.metadata);
        model.nodes.insert(name, watches::node_entry(&obj));
    }
    for obj in surveys.list(&lp).await.context("listing NodeSurveys")? {
        let (name, _) = watches::identity(&obj.metadata);
        let entry = watches::survey_entry(&name, &obj);
        model.surveys.insert(name, entry);
    }
    Ok((model.topology(), model.summary()))
}

/// (node, status) from a directory or a list file, by node name.
pub fn read_surveys(path: &Path) -> anyhow::Result<Vec<(String, NodeSurveyStatus)>> {
    let mut out = Vec::new();
    if path.is_dir() {
        let entries =
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", path.display()))?;
            let p = entry.path();
            let file_type = entry.file_type()?;
            let (node, file) = if file_type.is_dir() {
                let file = p.join("survey.json");
                if !file.is_file() {
                    continue;
                }
                (entry.file_name().to_string_lossy().into_owned(), file)
            } else if p.extension().is_some_and(|e| e == "json") {
                let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
                (stem.unwrap_or_default(), p.clone())
            } else {
                continue;
            };
            for (name, status) in surveys_in(&read_json(&file)?, Some(&node))
                .with_context(|| format!("{}", file.display()))?
            {
                out.push((name, status));
            }
        }
    } else {
        out = surveys_in(&read_json(path)?, None).with_context(|| format!("{}", path.display()))?;
    }
    if out.is_empty() {
        bail!(
            "no NodeSurveys in {} (NODE.json, NODE/survey.json, or a NodeSurveyList)",
            path.display()
        );
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_FILE {
        bail!("{} is {size} bytes; not a survey", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

/// The surveys a document holds: a list (`items`), a NodeSurvey object
/// (`metadata.name`, `status`), or a bare status named `file_node`.
fn surveys_in(
    doc: &Value,
    file_node: Option<&str>,
) -> anyhow::Result<Vec<(String, NodeSurveyStatus)>> {
    if let Some(items) = doc.get("items").and_then(Value::as_array) {
        return items.iter().map(|i| one(i, None)).collect();
    }
    Ok(vec![one(doc, file_node)?])
}

fn one(doc: &Value, file_node: Option<&str>) -> anyhow::Result<(String, NodeSurveyStatus)> {
    let (name, status) = match doc.get("status") {
        Some(status) if doc.get("metadata").is_some() => {
            let name = doc["metadata"]["name"]
                .as_str()
                .context("a NodeSurvey without metadata.name")?;
            (name.to_string(), status.clone())
        }
        _ => {
            let name = file_node.context("a survey status outside a file named for its node")?;
            (name.to_string(), doc.clone())
        }
    };
    if !status.get("interfaces").is_some_and(Value::is_array) {
        bail!("the survey of {name} has no interfaces list: not a NodeSurvey status");
    }
    let status = serde_json::from_value(status)
        .with_context(|| format!("the survey of {name} does not decode"))?;
    Ok((name, status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_objects_and_lists() {
        let status = json!({"summary": {"interfaces": 1, "up": 1, "neighbors": 0, "networks": ""}, "interfaces": [{"name": "ens4", "index": 2, "mac": "52:54:00:00:00:01", "kind": "physical", "operState": "up", "carrier": true, "mtu": 1500}]});
        let bare = surveys_in(&status, Some("n1")).unwrap();
        assert_eq!(bare[0].0, "n1");
        assert_eq!(bare[0].1.interfaces[0].name, "ens4");
        let object = json!({"metadata": {"name": "n2"}, "status": status});
        assert_eq!(surveys_in(&object, Some("file")).unwrap()[0].0, "n2");
        let list = json!({"kind": "NodeSurveyList", "items": [object, {"metadata": {"name": "n3"}, "status": {"summary": {"interfaces": 0, "up": 0, "neighbors": 0, "networks": ""}, "interfaces": []}}]});
        let names: Vec<String> = surveys_in(&list, None)
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(names, ["n2", "n3"]);
        assert!(surveys_in(&json!({"interfaces": 3}), Some("n")).is_err());
        let snapshot = json!({"node": "n1", "generation": 7, "networks": {}});
        assert!(
            surveys_in(&snapshot, Some("networks")).is_err(),
            "networks.json is not a survey"
        );
        assert!(
            surveys_in(&status, None).is_err(),
            "a bare status needs its node"
        );
    }
}
