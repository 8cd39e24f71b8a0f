//! The controller's watches (three, and our DeviceClasses with DRA), and what it keeps of each object: a
//! NetworkMap's generation, checked spec and status; a Node's labels
//! (metadata only: a Node's status with its images is never fetched); a
//! NodeSurvey's resolutions and topology facts. Raw objects, so one that
//! does not decode is kept out on its own instead of breaking a watch.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};

use super::model::{ClassSeen, NodeEntry, SurveyEntry};
use crate::crd::{NetworkMap, NetworkMapStatus, NodeSurvey, NodeSurveyStatus};
use crate::network_map::CompiledMap;

pub type Events<K> = Pin<Box<dyn Stream<Item = Result<Event<K>, watcher::Error>> + Send>>;

pub fn maps(client: Client) -> Events<DynamicObject> {
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<NetworkMap>(&()));
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed()
}

pub fn surveys(client: Client) -> Events<DynamicObject> {
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<NodeSurvey>(&()));
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed()
}

pub fn nodes(client: Client) -> Events<PartialObjectMeta<Node>> {
    let api: Api<PartialObjectMeta<Node>> = Api::all(client);
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed()
}

/// Our DeviceClasses (DRA): only those carrying [`crate::dra::CLASS_LABEL`].
pub fn classes(client: Client) -> Events<DynamicObject> {
    let resource = ApiResource::erase::<k8s_openapi::api::resource::v1::DeviceClass>(&());
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    watcher::watcher(
        api,
        watcher::Config::default().labels(crate::dra::CLASS_LABEL),
    )
    .default_backoff()
    .boxed()
}

/// A DeviceClass as kept: (network, resource version, what it holds).
pub fn class_entry(obj: &DynamicObject) -> (String, Option<u64>, ClassSeen) {
    let (name, rv) = identity(&obj.metadata);
    let network = obj
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::dra::CLASS_LABEL))
        .cloned()
        .unwrap_or_default();
    let spec = obj.data.get("spec").cloned().unwrap_or_default();
    (network, rv, ClassSeen { name, spec })
}

/// An object's name and resource version.
pub fn identity(meta: &kube::api::ObjectMeta) -> (String, Option<u64>) {
    let rv = meta
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok());
    (meta.name.clone().unwrap_or_default(), rv)
}

/// What a NetworkMap object says: its generation, its spec checked (or
/// why it cannot be used), its status.
pub struct MapObject {
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub compiled: Result<CompiledMap, String>,
    pub status: Option<NetworkMapStatus>,
}

pub fn map_object(obj: &DynamicObject) -> MapObject {
    let compiled = serde_json::to_value(obj)
        .map_err(|e| e.to_string())
        .and_then(|v| serde_json::from_value::<NetworkMap>(v).map_err(|e| e.to_string()))
        .and_then(|m| CompiledMap::compile(&m).map_err(|e| e.to_string()));
    let status = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    MapObject {
        uid: obj.metadata.uid.clone(),
        generation: obj.metadata.generation,
        compiled,
        status,
    }
}

pub fn node_entry(obj: &PartialObjectMeta<Node>) -> NodeEntry {
    NodeEntry {
        uid: obj.metadata.uid.clone(),
        ..NodeEntry::of(&obj.metadata.labels.clone().unwrap_or_default())
    }
}

/// A NodeSurvey as kept; one whose status does not decode counts as one
/// without results (and says so once).
pub fn survey_entry(name: &str, obj: &DynamicObject) -> SurveyEntry {
    let status = match obj.data.get("status") {
        None => NodeSurveyStatus::default(),
        Some(s) => serde_json::from_value::<NodeSurveyStatus>(s.clone()).unwrap_or_else(|e| {
            tracing::warn!(
                "NodeSurvey {name}: status does not decode ({e}); counting it as no results"
            );
            NodeSurveyStatus::default()
        }),
    };
    SurveyEntry::of(name, &status)
}

/// A watch's events folded into changes, a relist (Init .. InitDone) as
/// one replacement of everything. Objects are converted as they come, so
/// a relist of thousands holds what is kept of each, not the objects.
pub enum Change<T> {
    Upsert(T),
    Remove(String),
    /// A relist began: what is known may be stale until it ends.
    Relisting,
    Replace(Vec<T>),
    Nothing,
}

pub struct Relist<T> {
    pending: Option<Vec<T>>,
}

impl<T> Default for Relist<T> {
    fn default() -> Self {
        Relist { pending: None }
    }
}

impl<T> Relist<T> {
    pub fn step<K: kube::Resource>(
        &mut self,
        event: Event<K>,
        convert: impl Fn(&K) -> T,
    ) -> Change<T> {
        match event {
            Event::Init => {
                self.pending = Some(Vec::new());
                Change::Relisting
            }
            Event::InitApply(obj) => {
                self.pending
                    .get_or_insert_with(Vec::new)
                    .push(convert(&obj));
                Change::Nothing
            }
            Event::InitDone => Change::Replace(self.pending.take().unwrap_or_default()),
            Event::Apply(obj) => Change::Upsert(convert(&obj)),
            Event::Delete(obj) => Change::Remove(obj.meta().name.clone().unwrap_or_default()),
        }
    }
}
