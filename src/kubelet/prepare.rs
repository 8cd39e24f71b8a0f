//! Preparing a claim (pure): the devices of our driver its allocation
//! names, each checked against what the node's snapshot says now. A device
//! is a network (`green`, or `green-3` when numbered); it can be prepared
//! while that network resolves on this node. Each is recorded with the
//! bandwidth the claim took of it and the directions it is held to, for
//! the CNI plugin to shape the pod's interface.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{DeviceAllocationConfiguration, ResourceClaim};
use serde::{Deserialize, Serialize};

use crate::cni::bandwidth::Direction;
use crate::dra::{Bandwidth, DRIVER};
use crate::snapshot::Snapshot;

/// The API version and kind of our opaque device configuration, in a
/// claim's or a DeviceClass's `config`:
/// `{"apiVersion": "surveyor.dev/v1alpha1", "kind": "BandwidthConfig",
/// "directions": ["egress"]}` holds only the pod's egress to the claim.
pub const CONFIG_API_VERSION: &str = "surveyor.dev/v1alpha1";
pub const CONFIG_KIND: &str = "BandwidthConfig";

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
    /// The bandwidth the claim took of the device (bits/s): what the pod's
    /// interface is held to. None where the device offers none (its link
    /// speed unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
    /// The directions held to it.
    #[serde(default = "both", skip_serializing_if = "is_both")]
    pub directions: Vec<Direction>,
    /// The network data last written to the claim's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<NetworkData>,
    /// The device data (what is shaped) last written to the claim's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_data: Option<serde_json::Value>,
}

fn both() -> Vec<Direction> {
    Direction::BOTH.to_vec()
}

fn is_both(d: &[Direction]) -> bool {
    d == Direction::BOTH
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
    #[error(
        "ResourceClaim {claim}: device {device}'s consumed bandwidth {value:?} is not a quantity"
    )]
    Consumed {
        claim: String,
        device: String,
        value: String,
    },
    #[error(
        "ResourceClaim {claim}: the {CONFIG_KIND} for request {request} is invalid ({why}); expected {{\"apiVersion\": \"{CONFIG_API_VERSION}\", \"kind\": \"{CONFIG_KIND}\", \"directions\": [\"egress\", \"ingress\"]}} with at least one direction"
    )]
    Config {
        claim: String,
        request: String,
        why: String,
    },
}

/// Our opaque configuration's parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BandwidthConfig {
    api_version: String,
    kind: String,
    directions: Vec<Direction>,
}

/// The devices of `claim` (asked for by `uid`) this driver prepares on
/// `node`, checked against `snapshot`. `unconsumed` gives the bandwidth
/// of a device whose allocation records none consumed: an exclusive
/// (numbered) device's whole capacity, or a shared device's default.
pub fn prepare(
    node: &str,
    uid: &str,
    claim: &ResourceClaim,
    snapshot: &Snapshot,
    unconsumed: &dyn Fn(&str) -> Option<u64>,
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
    let configs = claim
        .status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
        .and_then(|d| d.config.as_deref())
        .unwrap_or_default();
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
        let consumed = result
            .consumed_capacity
            .as_ref()
            .and_then(|c| c.get("bandwidth"));
        let bandwidth = match consumed {
            Some(q) => Some(
                Bandwidth::from_quantity(&q.0)
                    .ok_or_else(|| PrepareError::Consumed {
                        claim: label.clone(),
                        device: result.device.clone(),
                        value: q.0.clone(),
                    })?
                    .0,
            ),
            None => unconsumed(&result.device),
        };
        let directions =
            directions(configs, &result.request).map_err(|why| PrepareError::Config {
                claim: label.clone(),
                request: result.request.clone(),
                why,
            })?;
        devices.push(PreparedDevice {
            request: result.request.clone(),
            pool: result.pool.clone(),
            device: result.device.clone(),
            network: network.into(),
            interface,
            share_id: result.share_id.clone(),
            bandwidth,
            directions,
            reported: None,
            reported_data: None,
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

/// The directions a request is held to: both, unless one of our
/// configurations that applies to it says otherwise (the class's first,
/// then the claim's, the last one winning).
fn directions(
    configs: &[DeviceAllocationConfiguration],
    request: &str,
) -> Result<Vec<Direction>, String> {
    let mut out = Direction::BOTH.to_vec();
    // A request of a claim's `firstAvailable` is named `request/sub`.
    let parent = request.split('/').next().unwrap_or(request);
    for config in configs {
        let Some(opaque) = config.opaque.as_ref().filter(|o| o.driver == DRIVER) else {
            continue;
        };
        let applies = config
            .requests
            .as_ref()
            .is_none_or(|r| r.is_empty() || r.iter().any(|n| n == request || n == parent));
        if !applies {
            continue;
        }
        let parsed: BandwidthConfig =
            serde_json::from_value(opaque.parameters.0.clone()).map_err(|e| e.to_string())?;
        if parsed.api_version != CONFIG_API_VERSION || parsed.kind != CONFIG_KIND {
            return Err(format!(
                "apiVersion {:?} and kind {:?}",
                parsed.api_version, parsed.kind
            ));
        }
        if parsed.directions.is_empty() {
            return Err("no direction given".into());
        }
        let mut d = parsed.directions;
        d.sort();
        d.dedup();
        // Egress first, as the record keeps them.
        d.reverse();
        out = d;
    }
    Ok(out)
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
        let p = prepare("node1", "u1", &c, &snapshot(Some("sv-a")), &|_| None).unwrap();
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
                bandwidth: None,
                directions: Direction::BOTH.to_vec(),
                reported: None,
                reported_data: None,
            }]
        );
        assert_eq!(p.pods, ["pod-1"]);
        let numbered = claim(json!([result("green-7", "node1", "surveyor.dev")]));
        let p = prepare("node1", "u1", &numbered, &snapshot(Some("sv-a")), &|_| None).unwrap();
        assert_eq!(p.devices[0].network, "green");
    }

    fn with_config(results: serde_json::Value, config: serde_json::Value) -> ResourceClaim {
        let mut c = claim(results);
        let v = serde_json::to_value(&c).unwrap();
        let mut v = v;
        v["status"]["allocation"]["devices"]["config"] = config;
        c = serde_json::from_value(v).unwrap();
        c
    }

    #[test]
    fn each_device_records_the_bandwidth_it_was_given_and_its_directions() {
        let shared = json!({"request": "net", "driver": "surveyor.dev", "pool": "node1",
            "device": "green", "shareID": "7f3c", "consumedCapacity": {"bandwidth": "4G"}});
        let numbered = result("green-3", "node1", "surveyor.dev");
        let c = claim(json!([shared, numbered]));
        let unconsumed = |device: &str| (device == "green-3").then_some(312_500_000);
        let p = prepare("node1", "u1", &c, &snapshot(Some("sv-a")), &unconsumed).unwrap();
        let got: Vec<(Option<u64>, &[Direction])> = p
            .devices
            .iter()
            .map(|d| (d.bandwidth, d.directions.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                (Some(4_000_000_000), &Direction::BOTH[..]),
                (Some(312_500_000), &Direction::BOTH[..])
            ]
        );
        // Both directions are the record's default: left out of it.
        let v = serde_json::to_value(&p.devices[0]).unwrap();
        assert_eq!(v["bandwidth"], 4_000_000_000u64);
        assert!(v.get("directions").is_none(), "{v}");

        // A configuration for the request narrows it; one for another
        // request, or another driver, does not.
        let config = |requests: serde_json::Value, driver: &str, params: serde_json::Value| {
            json!({"source": "FromClaim", "requests": requests,
                "opaque": {"driver": driver, "parameters": params}})
        };
        let egress = json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "BandwidthConfig", "directions": ["egress"]});
        let c = with_config(
            json!([result("green", "node1", "surveyor.dev")]),
            json!([
                config(json!(["net"]), "surveyor.dev", egress.clone()),
                config(json!(["other"]), "surveyor.dev", json!({"bad": 1})),
                config(json!(null), "gpu.example.com", json!({"bad": 1})),
            ]),
        );
        let p = prepare("node1", "u1", &c, &snapshot(Some("sv-a")), &|_| {
            Some(1_000_000_000)
        })
        .unwrap();
        assert_eq!(p.devices[0].directions, [Direction::Egress]);
        assert_eq!(p.devices[0].bandwidth, Some(1_000_000_000));
        // The class's config first, the claim's after it: the last wins.
        let ingress = json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "BandwidthConfig", "directions": ["ingress", "ingress"]});
        let c = with_config(
            json!([result("green", "node1", "surveyor.dev")]),
            json!([
                config(json!([]), "surveyor.dev", egress),
                config(json!(null), "surveyor.dev", ingress)
            ]),
        );
        let p = prepare("node1", "u1", &c, &snapshot(Some("sv-a")), &|_| None).unwrap();
        assert_eq!(p.devices[0].directions, [Direction::Ingress]);

        for (params, says) in [
            (
                json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "BandwidthConfig", "directions": []}),
                "no direction",
            ),
            (
                json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "BandwidthConfig", "directions": ["up"]}),
                "unknown variant",
            ),
            (
                json!({"apiVersion": "v9", "kind": "BandwidthConfig", "directions": ["egress"]}),
                "apiVersion \"v9\"",
            ),
            (
                json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "BandwidthConfig", "directions": ["egress"], "rate": "1G"}),
                "unknown field",
            ),
        ] {
            let c = with_config(
                json!([result("green", "node1", "surveyor.dev")]),
                json!([config(json!(["net"]), "surveyor.dev", params)]),
            );
            let e = prepare("node1", "u1", &c, &snapshot(Some("sv-a")), &|_| None)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(says) && e.contains("web/db-green") && e.contains("BandwidthConfig"),
                "{e}"
            );
        }
        let bad = claim(
            json!([{"request": "net", "driver": "surveyor.dev", "pool": "node1",
            "device": "green", "consumedCapacity": {"bandwidth": "lots"}}]),
        );
        assert!(matches!(
            prepare("node1", "u1", &bad, &snapshot(Some("sv-a")), &|_| None),
            Err(PrepareError::Consumed { .. })
        ));
    }

    #[test]
    fn stale_or_foreign_allocations_are_refused_saying_why() {
        let c = claim(json!([result("green", "node1", "surveyor.dev")]));
        let e = prepare("node1", "u1", &c, &snapshot(None), &|_| None).unwrap_err();
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
            prepare("node1", "u2", &c, &snapshot(Some("sv-a")), &|_| None),
            Err(PrepareError::Replaced { .. })
        ));
        assert!(matches!(
            prepare("node2", "u1", &c, &snapshot(Some("sv-a")), &|_| None),
            Err(PrepareError::OtherPool { .. })
        ));
        for device in ["blue", "green-", "green-x", "-1"] {
            let c = claim(json!([result(device, "node1", "surveyor.dev")]));
            assert!(
                matches!(
                    prepare("node1", "u1", &c, &snapshot(Some("sv-a")), &|_| None),
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
            prepare(
                "node1",
                "u1",
                &unallocated,
                &snapshot(Some("sv-a")),
                &|_| None
            ),
            Err(PrepareError::NotAllocated { .. })
        ));
    }
}
