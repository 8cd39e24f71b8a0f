//! NetworkMaps as the API has them: each map decoded and checked on its
//! own, so a malformed one is reported alone and its last valid version
//! stays in force.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;

use super::maps_dir::LoadedMap;
use crate::crd::NetworkMap;
use crate::network_map::CompiledMap;

/// NetworkMaps as the API has them, keeping each map's last valid version.
#[derive(Debug, Default)]
pub struct MapStore {
    valid: BTreeMap<String, LoadedMap>,
    malformed: BTreeMap<String, String>,
    /// Objects of a relist in progress (between Init and InitDone).
    relist: Option<Vec<DynamicObject>>,
    /// A list has completed since start.
    listed: bool,
}

impl MapStore {
    /// Starts from the maps last saved (maps.json), until the API answers.
    pub fn from_saved(maps: Vec<NetworkMap>) -> Self {
        let mut store = MapStore::default();
        for map in maps {
            if let Ok(loaded) = load(map) {
                store.valid.insert(loaded.compiled.name.clone(), loaded);
            }
        }
        store
    }

    pub fn maps(&self) -> Vec<LoadedMap> {
        self.valid.values().cloned().collect()
    }

    /// Refused maps, `NetworkMap NAME: why`.
    pub fn malformed(&self) -> Vec<String> {
        self.malformed
            .iter()
            .map(|(n, e)| format!("NetworkMap {n}: {e}"))
            .collect()
    }

    /// Whether the maps come from a completed API list.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// Applies one watch event; true when the maps in force changed.
    pub fn apply(&mut self, event: Event<DynamicObject>) -> bool {
        let before: Vec<NetworkMap> = self.valid.values().map(|m| m.map.clone()).collect();
        match event {
            Event::Init => self.relist = Some(Vec::new()),
            Event::InitApply(obj) => self.relist.get_or_insert_with(Vec::new).push(obj),
            Event::InitDone => {
                let objects = self.relist.take().unwrap_or_default();
                let names: BTreeSet<String> = objects
                    .iter()
                    .filter_map(|o| o.metadata.name.clone())
                    .collect();
                // What the list does not hold is gone.
                self.valid.retain(|n, _| names.contains(n));
                self.malformed.retain(|n, _| names.contains(n));
                for obj in objects {
                    self.upsert(obj);
                }
                self.listed = true;
            }
            Event::Apply(obj) => self.upsert(obj),
            Event::Delete(obj) => {
                let name = obj.metadata.name.unwrap_or_default();
                self.valid.remove(&name);
                self.malformed.remove(&name);
            }
        }
        let after: Vec<NetworkMap> = self.valid.values().map(|m| m.map.clone()).collect();
        before != after
    }

    fn upsert(&mut self, obj: DynamicObject) {
        let name = obj.metadata.name.clone().unwrap_or_default();
        match serde_json::to_value(&obj)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value::<NetworkMap>(v).map_err(|e| e.to_string()))
            .and_then(load)
        {
            Ok(loaded) => {
                self.malformed.remove(&name);
                self.valid.insert(name, loaded);
            }
            Err(reason) => {
                if self.malformed.get(&name) != Some(&reason) {
                    let kept = if self.valid.contains_key(&name) {
                        "keeping its last valid version"
                    } else {
                        "ignoring it"
                    };
                    tracing::error!("NetworkMap {name}: {reason}; {kept}");
                }
                self.malformed.insert(name, reason);
            }
        }
    }
}

/// A map as stored: only what the spec says (no server metadata), checked.
fn load(map: NetworkMap) -> Result<LoadedMap, String> {
    let mut clean = NetworkMap::new(map.metadata.name.as_deref().unwrap_or_default(), map.spec);
    clean.metadata.name = map.metadata.name;
    let compiled = CompiledMap::compile(&clean).map_err(|e| e.to_string())?;
    Ok(LoadedMap {
        map: clean,
        compiled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "surveyor.dev/v1alpha1", "kind": "NetworkMap",
            "metadata": {"name": name, "resourceVersion": "7", "uid": "u"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn names(s: &MapStore) -> Vec<String> {
        s.maps().into_iter().map(|m| m.compiled.name).collect()
    }

    #[test]
    fn malformed_maps_keep_the_last_valid_version() {
        let mut s = MapStore::from_saved(vec![]);
        assert!(s.apply(Event::Apply(obj(
            "green",
            json!({"match": {"names": ["ens*"]}})
        ))));
        assert!(!s.apply(Event::Apply(obj(
            "green",
            json!({"match": {"names": ["ens["]}})
        ))));
        assert_eq!(names(&s), ["green"]);
        assert_eq!(
            s.maps()[0].map.spec.match_rule.as_ref().unwrap().names,
            ["ens*"]
        );
        assert!(
            s.malformed()[0].contains("spec.match.names"),
            "{:?}",
            s.malformed()
        );
        // Wrong shape: refused on its own, the rest unaffected.
        assert!(!s.apply(Event::Apply(obj(
            "red",
            json!({"match": {"minSpeedMbps": "fast"}})
        ))));
        assert_eq!(s.malformed().len(), 2);
        assert!(s.apply(Event::Apply(obj(
            "green",
            json!({"match": {"names": ["eth*"]}})
        ))));
        assert_eq!(s.malformed().len(), 1);
        assert!(s.apply(Event::Delete(obj("green", json!({})))));
        assert!(names(&s).is_empty());
        // Stored maps carry no server metadata.
        s.apply(Event::Apply(obj(
            "blue",
            json!({"match": {"names": ["*"]}}),
        )));
        assert_eq!(s.maps()[0].map.metadata.resource_version, None);
        // A map that would select everything is refused like any other.
        assert!(!s.apply(Event::Apply(obj("all", json!({"match": {}})))));
        assert!(
            s.malformed()
                .iter()
                .any(|m| m.contains("NetworkMap all: spec.match sets no condition"))
        );
    }

    #[test]
    fn a_relist_replaces_everything_and_marks_the_store_listed() {
        let rule = crate::crd::NetworkMapSpec {
            match_rule: Some(crate::crd::MatchRule {
                names: vec!["*".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let saved = vec![NetworkMap::new("old", rule)];
        let mut s = MapStore::from_saved(saved);
        assert_eq!(names(&s), ["old"]);
        assert!(!s.listed());
        s.apply(Event::Init);
        s.apply(Event::InitApply(obj(
            "green",
            json!({"match": {"names": ["*"]}}),
        )));
        assert_eq!(names(&s), ["old"], "nothing changes before InitDone");
        assert!(s.apply(Event::InitDone));
        assert_eq!(names(&s), ["green"]);
        assert!(s.listed());
    }
}
