//! Preparing a claim (pure): the devices of our driver its allocation
//! names, each checked against what the node's snapshot says now. A device
//! is a network (`green`, or `green-3` when numbered); it can be prepared
//! while that network resolves on this node.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::ResourceClaim;
use serde::{Deserialize, Serialize};

use crate::dra::DRIVER;
use crate::snapshot::Snapshot;

/// One prepared device of a claim, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreparedDevice {
    pub request: String,
    pub pool: String,
    pub device: String,
    pub network: String,
    /// The network's device on the node when prepared.
    pub interface: String,
    /// Which share of a shared device the claim has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_id: Option<String>,
    /// The network data last written to the claim's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<NetworkData>,
}

/// A pod interface, as shown on the claim (`networkData`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkData {
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_address: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

/// A prepared claim, as recorded (by UID).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedClaim {
    pub namespace: String,
    pub name: String,
    pub devices: Vec<PreparedDevice>,
    /// The UIDs of the pods the claim is reserved for, when prepared: the
    /// CNI plugin's attachments name their pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
}

pub type Prepared = BTreeMap<String, PreparedClaim>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrepareError {
    #[error("ResourceClaim {claim} is not allocated")]
    NotAllocated { claim: String },
    #[error("ResourceClaim {claim} has UID {found}, not {asked}: it was replaced")]
    Replaced {
        claim: String,
        asked: String,
        found: String,
    },
    #[error(
        "ResourceClaim {claim}: device {device} is allocated from pool {pool}, not this node's ({node})"
    )]
    OtherPool {
        claim: String,
        device: String,
        pool: String,
        node: String,
    },
    #[error(
        "ResourceClaim {claim}: device {device} names no network mapped on node {node}; kubectl get resourceslice {node}-{DRIVER} -o yaml shows the devices now"
    )]
    NoSuchNetwork {
        claim: String,
        device: String,
        node: String,
    },
    #[error(
        "ResourceClaim {claim}: device {device} is network {network}, which has no device on node {node} now ({why}); the pod cannot have it here: delete the pod so that its claim is allocated again"
    )]
    Unresolved {
        claim: String,
        device: String,
        network: String,
        node: String,
        why: String,
    },
}

/// The devices of `claim` (asked for by `uid`) this driver prepares on
/// `node`, checked against `snapshot`.
pub fn prepare(
    node: &str,
    uid: &str,
    claim: &ResourceClaim,
    snapshot: &Snapshot,
) -> Result<PreparedClaim, PrepareError> {
    let namespace = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let label = format!("{namespace}/{name}");
    let found = claim.metadata.uid.as_deref().unwrap_or_default();
    if found != uid {
        return Err(PrepareError::Replaced {
            claim: label,
            asked: uid.into(),
            found: found.into(),
        });
    }
    let results = claim
        .status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
        .and_then(|d| d.results.as_ref())
        .ok_or_else(|| PrepareError::NotAllocated {
            claim: label.clone(),
        })?;
    let mut devices = Vec::new();
    for result in results.iter().filter(|r| r.driver == DRIVER) {
        if result.pool != node {
            return Err(PrepareError::OtherPool {
                claim: label,
                device: result.device.clone(),
                pool: result.pool.clone(),
                node: node.into(),
            });
        }
        let Some(network) = network_of(&result.device, snapshot) else {
            return Err(PrepareError::NoSuchNetwork {
                claim: label,
                device: result.device.clone(),
                node: node.into(),
            });
        };
        let entry = &snapshot.networks[network];
        let Some(interface) = entry.device.clone() else {
            return Err(PrepareError::Unresolved {
                claim: label,
                device: result.device.clone(),
                network: network.into(),
                node: node.into(),
                why: entry
                    .reason
                    .clone()
                    .unwrap_or_else(|| "no candidate".into()),
            });
        };
        devices.push(PreparedDevice {
            request: result.request.clone(),
            pool: result.pool.clone(),
            device: result.device.clone(),
            network: network.into(),
            interface,
            share_id: result.share_id.clone(),
            reported: None,
        });
    }
    let pods = claim
        .status
        .as_ref()
        .and_then(|s| s.reserved_for.as_ref())
        .into_iter()
        .flatten()
        .filter(|r| r.resource == "pods" && r.api_group.as_deref().unwrap_or_default().is_empty())
        .map(|r| r.uid.clone())
        .collect();
    Ok(PreparedClaim {
        namespace,
        name,
        devices,
        pods,
    })
}

/// The network a device stands for: its name, or its name less a
/// numbered device's `-N`.
fn network_of<'a>(device: &'a str, snapshot: &Snapshot) -> Option<&'a str> {
    if snapshot.networks.contains_key(device) {
        return Some(device);
    }
    let (network, n) = device.rsplit_once('-')?;
    let numbered = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    (numbered && snapshot.networks.contains_key(network)).then_some(network)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotNetwork;
    use serde_json::json;

    fn snapshot(green: Option<&str>) -> Snapshot {
        let net = SnapshotNetwork {
            device: green.map(str::to_string),
            index: Some(3),
            mac: None,
            candidates: green.into_iter().map(str::to_string).collect(),
            reason: green.is_none().then(|| "sv-a fails names".to_string()),
        };
        Snapshot {
            node: "node1".into(),
            generation: 1,
            networks: BTreeMap::from([("green".to_string(), net)]),
        }
    }

    fn claim(results: serde_json::Value) -> ResourceClaim {
        serde_json::from_value(json!({
            "metadata": {"namespace": "web", "name": "db-green", "uid": "u1"},
            "spec": {},
            "status": {"allocation": {"devices": {"results": results}},
                "reservedFor": [{"resource": "pods", "name": "db-0", "uid": "pod-1"}]},
        }))
        .unwrap()
    }

    fn result(device: &str, pool: &str, driver: &str) -> serde_json::Value {
        json!({"request": "net", "driver": driver, "pool": pool, "device": device})
    }

    #[test]
    fn an_allocated_network_is_prepared_with_its_device_now() {
        let c = claim(json!([
            result("green", "node1", "surveyor.dev"),
            result("gpu-0", "node1", "gpu.example.com"),
        ]));
        let p = prepare("node1", "u1", &c, &snapshot(Some("sv-a"))).unwrap();
        assert_eq!((p.namespace.as_str(), p.name.as_str()), ("web", "db-green"));
        assert_eq!(
            p.devices,
            [PreparedDevice {
                request: "net".into(),
                pool: "node1".into(),
                device: "green".into(),
                network: "green".into(),
                interface: "sv-a".into(),
                share_id: None,
                reported: None,
            }]
        );
        assert_eq!(p.pods, ["pod-1"]);
        let numbered = claim(json!([result("green-7", "node1", "surveyor.dev")]));
        let p = prepare("node1", "u1", &numbered, &snapshot(Some("sv-a"))).unwrap();
        assert_eq!(p.devices[0].network, "green");
    }

    #[test]
    fn stale_or_foreign_allocations_are_refused_saying_why() {
        let c = claim(json!([result("green", "node1", "surveyor.dev")]));
        let e = prepare("node1", "u1", &c, &snapshot(None)).unwrap_err();
        let text = e.to_string();
        for part in [
            "green",
            "node1",
            "web/db-green",
            "sv-a fails names",
            "delete the pod",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(matches!(
            prepare("node1", "u2", &c, &snapshot(Some("sv-a"))),
            Err(PrepareError::Replaced { .. })
        ));
        assert!(matches!(
            prepare("node2", "u1", &c, &snapshot(Some("sv-a"))),
            Err(PrepareError::OtherPool { .. })
        ));
        for device in ["blue", "green-", "green-x", "-1"] {
            let c = claim(json!([result(device, "node1", "surveyor.dev")]));
            assert!(
                matches!(
                    prepare("node1", "u1", &c, &snapshot(Some("sv-a"))),
                    Err(PrepareError::NoSuchNetwork { .. })
                ),
                "{device}"
            );
        }
        let unallocated: ResourceClaim = serde_json::from_value(
            json!({"metadata": {"namespace": "web", "name": "x", "uid": "u1"}, "spec": {}}),
        )
        .unwrap();
        assert!(matches!(
            prepare("node1", "u1", &unallocated, &snapshot(Some("sv-a"))),
            Err(PrepareError::NotAllocated { .. })
        ));
    }
}
