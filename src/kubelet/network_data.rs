//! Which prepared claim each attachment belongs to, and what its status
//! should say (pure): the pod interface's network data and, when shaped,
//! what it is held to (the device's `data`). An attachment names its pod,
//! network and master; a claim was reserved for its pods when prepared,
//! and each of its devices stands for a network on a master. That pair is
//! the match.
//!
//! Only changes are written: the data last written is kept with the claim.
//! A claim whose attachments are gone keeps what it shows (the pod is
//! ending, or its sandbox is being made again and the new ADD brings new
//! data): clearing it would be one more write per pod deletion.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::prepare::{NetworkData, Prepared, PreparedClaim, PreparedDevice};
use crate::attachment::Attachment;
use crate::cni::bandwidth::{Direction, Limits};
use crate::dra::{Bandwidth, DRIVER};

/// What one device of a claim should show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub network: NetworkData,
    /// `{"bandwidth": {"egress": {"rate": "2G", "source": "claim"}, ...}}`
    /// for a shaped interface.
    pub data: Option<Value>,
}

/// For each claim (by UID), what each of its devices (by index) should
/// show now.
pub type Wanted = BTreeMap<String, BTreeMap<usize, Report>>;

/// The device data of a shaped interface.
pub fn shaped_data(limits: &Limits) -> Option<Value> {
    if limits.is_empty() {
        return None;
    }
    let mut bandwidth = serde_json::Map::new();
    for d in Direction::BOTH {
        if let Some(l) = limits.get(d) {
            bandwidth.insert(
                d.as_str().into(),
                json!({"rate": Bandwidth(l.rate).to_string(), "source": l.source}),
            );
        }
    }
    Some(json!({ "bandwidth": bandwidth }))
}

/// What the attachments on the node say of the prepared claims.
pub fn wanted(prepared: &Prepared, attachments: &[Attachment]) -> Wanted {
    let mut out = Wanted::new();
    for a in attachments.iter().filter(|a| a.claimed) {
        let found = prepared.iter().find_map(|(uid, claim)| {
            if !claim.pods.contains(&a.pod_uid) {
                return None;
            }
            let taken = out.get(uid);
            let index = claim.devices.iter().enumerate().position(|(i, d)| {
                d.network == a.network
                    && d.interface == a.device
                    && !taken.is_some_and(|t| t.contains_key(&i))
            })?;
            Some((uid.clone(), index))
        });
        if let Some((uid, index)) = found {
            let report = Report {
                network: NetworkData {
                    interface_name: a.interface.clone(),
                    hardware_address: a.mac.clone(),
                    ips: a.ips.clone(),
                },
                data: a.shaped.as_ref().and_then(shaped_data),
            };
            out.entry(uid).or_default().insert(index, report);
        }
    }
    out
}

/// The claims whose status must be written: those with data that differs
/// from what was last written.
pub fn changed<'a>(prepared: &Prepared, wanted: &'a Wanted) -> Vec<&'a str> {
    wanted
        .iter()
        .filter(|(uid, data)| {
            prepared.get(*uid).is_some_and(|claim| {
                claim
                    .devices
                    .iter()
                    .enumerate()
                    .any(|(i, d)| !shows(d, data.get(&i)))
            })
        })
        .map(|(uid, _)| uid.as_str())
        .collect()
}

/// Whether a device's last written status is `report` (nothing to show
/// is shown by what was written last: see the module's note).
fn shows(device: &PreparedDevice, report: Option<&Report>) -> bool {
    match report {
        None => device.reported.is_none(),
        Some(r) => device.reported.as_ref() == Some(&r.network) && device.reported_data == r.data,
    }
}

/// The server-side apply body of a claim's status: our driver's devices
/// that have data, keyed as the allocation names them. The UID makes it a
/// write to this claim only, never to a new one of the same name.
pub fn status_body(uid: &str, claim: &PreparedClaim, reports: &BTreeMap<usize, Report>) -> Value {
    let devices: Vec<Value> = reports
        .iter()
        .filter_map(|(i, r)| {
            let device = claim.devices.get(*i)?;
            let mut entry = json!({
                "driver": DRIVER,
                "pool": device.pool,
                "device": device.device,
                "networkData": r.network,
            });
            if let Some(data) = &r.data {
                entry["data"] = data.clone();
            }
            if let Some(share) = &device.share_id {
                entry["shareID"] = share.as_str().into();
            }
            Some(entry)
        })
        .collect();
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": claim.name, "namespace": claim.namespace, "uid": uid},
        "status": {"devices": devices},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::prepare::PreparedDevice;

    fn device(device: &str, interface: &str) -> PreparedDevice {
        PreparedDevice {
            request: "net".into(),
            pool: "node1".into(),
            device: device.into(),
            network: device.split('-').next().unwrap_or_default().into(),
            interface: interface.into(),
            share_id: None,
            bandwidth: None,
            directions: Direction::BOTH.to_vec(),
            reported: None,
            reported_data: None,
        }
    }

    fn claim(name: &str, pods: &[&str], devices: Vec<PreparedDevice>) -> PreparedClaim {
        PreparedClaim {
            namespace: "web".into(),
            name: name.into(),
            devices,
            pods: pods.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn attached(pod: &str, network: &str, device: &str, ifname: &str) -> Attachment {
        Attachment {
            pod_uid: pod.into(),
            pod_namespace: "web".into(),
            pod_name: "db".into(),
            network: network.into(),
            device: device.into(),
            interface: ifname.into(),
            mac: Some("0a:58:0a:01:02:03".into()),
            ips: vec!["10.1.2.3/24".into()],
            claimed: true,
            shaped: None,
        }
    }

    #[test]
    fn attachments_find_their_claims_by_pod_network_and_master() {
        let prepared = Prepared::from([
            (
                "c1".to_string(),
                claim("db-green", &["p1"], vec![device("green", "ens4")]),
            ),
            (
                "c2".to_string(),
                claim(
                    "two",
                    &["p2"],
                    vec![device("green-0", "ens4"), device("green-1", "ens4")],
                ),
            ),
        ]);
        let attachments = [
            attached("p1", "green", "ens4", "net1"),
            // Another pod, another network, another master: not c1's.
            attached("p9", "green", "ens4", "net1"),
            attached("p1", "blue", "ens4", "net2"),
            attached("p1", "green", "ens5", "net3"),
            // Two attachments of one claim take its two devices in turn.
            attached("p2", "green", "ens4", "net1"),
            attached("p2", "green", "ens4", "net2"),
        ];
        let w = wanted(&prepared, &attachments);
        assert_eq!(w.len(), 2);
        assert_eq!(w["c1"][&0].network.interface_name, "net1");
        let two: Vec<&str> = w["c2"]
            .values()
            .map(|d| d.network.interface_name.as_str())
            .collect();
        assert_eq!(two, ["net1", "net2"]);
        assert_eq!(changed(&prepared, &w), ["c1", "c2"]);

        let body = status_body("c1", &prepared["c1"], &w["c1"]);
        assert_eq!(
            body,
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": "db-green", "namespace": "web", "uid": "c1"},
                "status": {"devices": [{"driver": "surveyor.dev", "pool": "node1", "device": "green",
                    "networkData": {"interfaceName": "net1", "hardwareAddress": "0a:58:0a:01:02:03",
                        "ips": ["10.1.2.3/24"]}}]}})
        );
    }

    #[test]
    fn what_was_written_is_not_written_again_and_shares_are_named() {
        let mut prepared = Prepared::from([(
            "c1".to_string(),
            claim("db-green", &["p1"], vec![device("green", "ens4")]),
        )]);
        let w = wanted(&prepared, &[attached("p1", "green", "ens4", "net1")]);
        if let Some(c) = prepared.get_mut("c1") {
            c.devices[0].reported = w["c1"].get(&0).map(|r| r.network.clone());
            c.devices[0].share_id = Some("7f3c".into());
        }
        assert!(changed(&prepared, &w).is_empty());
        // A new sandbox, a new MAC: written again.
        let mut again = attached("p1", "green", "ens4", "net1");
        again.mac = Some("0a:58:0a:01:02:99".into());
        let w = wanted(&prepared, &[again]);
        assert_eq!(changed(&prepared, &w), ["c1"]);
        let body = status_body("c1", &prepared["c1"], &w["c1"]);
        assert_eq!(body["status"]["devices"][0]["shareID"], "7f3c");
        // Nothing attached: nothing to write.
        assert!(changed(&prepared, &wanted(&prepared, &[])).is_empty());
    }

    #[test]
    fn a_shaped_interface_shows_its_bandwidth_and_unclaimed_ones_are_no_claim_s() {
        use crate::cni::bandwidth::{Limit, Source};
        let mut prepared = Prepared::from([(
            "c1".to_string(),
            claim("db-green", &["p1"], vec![device("green", "ens4")]),
        )]);
        let mut a = attached("p1", "green", "ens4", "net1");
        a.shaped = Some(Limits {
            egress: Some(Limit {
                rate: 400_000_000,
                burst: 1_000_000,
                source: Source::RuntimeConfig,
            }),
            ingress: Some(Limit {
                rate: 2_000_000_000,
                burst: 4_000_000,
                source: Source::Claim,
            }),
        });
        // The same pod's attachment made without the claim is not its.
        let mut unclaimed = attached("p1", "green", "ens4", "net2");
        unclaimed.claimed = false;
        let w = wanted(&prepared, &[unclaimed.clone(), a.clone()]);
        assert_eq!(w["c1"].len(), 1);
        let body = status_body("c1", &prepared["c1"], &w["c1"]);
        assert_eq!(
            body["status"]["devices"][0]["data"],
            json!({"bandwidth": {"egress": {"rate": "400M", "source": "runtimeConfig"},
                "ingress": {"rate": "2G", "source": "claim"}}})
        );
        assert_eq!(
            body["status"]["devices"][0]["networkData"]["interfaceName"],
            "net1"
        );
        // Written once; then only a change of the data writes again.
        if let Some(c) = prepared.get_mut("c1") {
            c.devices[0].reported = Some(w["c1"][&0].network.clone());
            c.devices[0].reported_data = w["c1"][&0].data.clone();
        }
        assert!(changed(&prepared, &w).is_empty());
        a.shaped = None;
        assert_eq!(changed(&prepared, &wanted(&prepared, &[a])), ["c1"]);
        assert!(wanted(&prepared, &[unclaimed]).is_empty());
    }
}
