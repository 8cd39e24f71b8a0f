//! DRA: the agent's ResourceSlice against the fake API (kube's client over
//! support/fake_api.rs, exact requests), discovery real in a namespace.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_api::{
    FakeApi, NODES, Options, Recorded, Run, SLICES, SURVEYS, map, run_agent, with_agent_opts,
};
use support::{Netns, cable};
use surveyor::agent::slices::SliceOptions;

const SLICE: &str = "node1-surveyor.dev";

fn dra() -> Options {
    Options {
        dra: Some(SliceOptions::default()),
        ..Options::default()
    }
}

fn slice_writes(api: &FakeApi) -> Vec<Recorded> {
    api.writes()
        .into_iter()
        .filter(|r| r.path.contains("/resourceslices"))
        .collect()
}

/// Real writes: not the dry run.
fn stored_writes(api: &FakeApi) -> Vec<Recorded> {
    slice_writes(api)
        .into_iter()
        .filter(|r| !r.query.contains_key("dryRun"))
        .collect()
}

fn devices(api: &FakeApi) -> Vec<Value> {
    api.get(SLICES, SLICE)
        .map(|s| s["spec"]["devices"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn names(devices: &[Value]) -> Vec<String> {
    devices
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

fn sharing_condition(api: &FakeApi) -> Value {
    api.get(SURVEYS, "node1")
        .and_then(|s| {
            s["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "DeviceSharing")
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// The NodeSurvey's DeviceSharing condition, once it is there.
async fn device_sharing(run: &Run) -> Value {
    run.until(5, "DeviceSharing condition", |r| {
        !sharing_condition(&r.api).is_null()
    })
    .await;
    sharing_condition(&run.api)
}

#[test]
fn the_slice_holds_one_shared_device_per_resolved_network_then_silence() {
    let api = FakeApi::with(
        vec![map("green", "sv-a"), map("red", "nothing-*")],
        json!({}),
    );
    with_agent_opts("dra-first", api, dra(), |run| async move {
        run.until(10, "slice written", |r| !devices(&r.api).is_empty())
            .await;
        let writes = slice_writes(&run.api);
        // A dry run asks whether the cluster shares devices; then one write.
        assert_eq!(writes.len(), 2, "{writes:#?}");
        assert_eq!(
            writes[0].query.get("dryRun").map(String::as_str),
            Some("All")
        );
        let w = &writes[1];
        assert_eq!(w.method, "PATCH");
        assert_eq!(
            w.path,
            format!("/apis/resource.k8s.io/v1/resourceslices/{SLICE}")
        );
        assert_eq!(
            (
                w.query.get("fieldManager").map(String::as_str),
                w.query.get("force").map(String::as_str)
            ),
            (Some("surveyor-agent"), Some("true"))
        );
        assert!(w.content_type.starts_with("application/apply-patch"));
        let uid = run.api.get(NODES, "node1").unwrap()["metadata"]["uid"].clone();
        let body = &w.body;
        assert_eq!(body["apiVersion"], "resource.k8s.io/v1");
        assert_eq!(body["kind"], "ResourceSlice");
        assert_eq!(
            body["metadata"],
            json!({"name": SLICE, "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": "node1", "uid": uid}]})
        );
        let spec = &body["spec"];
        assert_eq!(spec["driver"], "surveyor.dev");
        assert_eq!(spec["nodeName"], "node1");
        assert_eq!(
            spec["pool"],
            json!({"name": "node1", "generation": 1, "resourceSliceCount": 1})
        );
        // veths report 10 Gbit/s.
        assert_eq!(
            spec["devices"],
            json!([{
                "name": "green",
                "allowMultipleAllocations": true,
                "attributes": {
                    "interface": {"string": "sv-a"},
                    "k8s.cni.cncf.io/deviceID": {"string": "sv-a"},
                    "k8s.cni.cncf.io/resourceName": {"string": "surveyor.dev/green"},
                    "network": {"string": "green"},
                    "speedMbps": {"int": 10000},
                },
                "capacity": {"bandwidth": {"value": "10G", "requestPolicy": {
                    "default": "1G", "validRange": {"min": "100M"}}}},
            }])
        );
        let c = device_sharing(&run).await;
        assert_eq!(
            (&c["status"], &c["reason"]),
            (&json!("True"), &json!("ConsumableCapacity"))
        );
        // Quiet: nothing more.
        let before = run.api.writes().len();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            run.api.writes().len(),
            before,
            "{:#?}",
            &run.api.writes()[before..]
        );
    });
}

/// Drift: a slice deleted by hand is made again, one edited by hand is
/// put back with the pool's next generation, each with one write; the
/// echo of the agent's own write brings no other.
#[test]
fn a_slice_deleted_or_edited_by_hand_is_put_back() {
    let api = FakeApi::with(vec![map("green", "sv-a")], json!({}));
    with_agent_opts("dra-drift", api, dra(), |run| async move {
        run.until(10, "slice written", |r| !devices(&r.api).is_empty())
            .await;
        let written = run.api.get(SLICES, SLICE).unwrap();
        let before = stored_writes(&run.api).len();
        run.api.delete(SLICES, SLICE);
        run.until(10, "made again", |r| r.api.get(SLICES, SLICE).is_some())
            .await;
        assert_eq!(stored_writes(&run.api).len(), before + 1);
        assert_eq!(
            devices(&run.api),
            written["spec"]["devices"].as_array().unwrap().clone()
        );

        let mut edited = run.api.get(SLICES, SLICE).unwrap();
        let generation = edited["spec"]["pool"]["generation"].as_i64().unwrap();
        edited["spec"]["devices"][0]["attributes"]["interface"]["string"] = json!("ens99");
        run.api.put(SLICES, edited);
        run.until(10, "put back", |r| {
            devices(&r.api)
                .first()
                .is_some_and(|d| d["attributes"]["interface"]["string"] == "sv-a")
        })
        .await;
        assert_eq!(stored_writes(&run.api).len(), before + 2);
        assert_eq!(
            run.api.get(SLICES, SLICE).unwrap()["spec"]["pool"]["generation"],
            generation + 1
        );
        // Quiet after: the echoes of its own writes change nothing.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(stored_writes(&run.api).len(), before + 2);
        support::fake_api::assert_declared(&run.api);
    });
}

#[test]
fn a_resolution_change_is_one_write_with_the_next_generation_and_none_resolved_deletes() {
    let api = FakeApi::with(vec![map("green", "sv-a")], json!({}));
    with_agent_opts("dra-change", api, dra(), |run| async move {
        run.until(10, "slice written", |r| !devices(&r.api).is_empty())
            .await;
        let before = stored_writes(&run.api).len();
        // green moves to sv-b.
        run.api.put(support::fake_api::MAPS, map("green", "sv-b"));
        run.until(10, "moved", |r| {
            devices(&r.api)
                .first()
                .is_some_and(|d| d["attributes"]["interface"]["string"] == "sv-b")
        })
        .await;
        let writes = stored_writes(&run.api);
        assert_eq!(writes.len(), before + 1, "{writes:#?}");
        assert_eq!(
            run.api.get(SLICES, SLICE).unwrap()["spec"]["pool"]["generation"],
            2
        );
        // No network resolves: the slice goes.
        run.api
            .put(support::fake_api::MAPS, map("green", "nothing-*"));
        run.until(10, "deleted", |r| r.api.get(SLICES, SLICE).is_none())
            .await;
        let last = stored_writes(&run.api);
        assert_eq!(last.last().map(|r| r.method.as_str()), Some("DELETE"));
    });
}

#[test]
fn without_shared_devices_the_networks_are_numbered_and_the_condition_says_so() {
    let api = FakeApi::with(vec![map("green", "sv-a")], json!({}));
    api.without_consumable_capacity(true);
    let options = Options {
        dra: Some(SliceOptions {
            numbered: 4,
            ..SliceOptions::default()
        }),
        ..Options::default()
    };
    with_agent_opts("dra-numbered", api, options, |run| async move {
        run.until(10, "slice written", |r| !devices(&r.api).is_empty())
            .await;
        let d = devices(&run.api);
        assert_eq!(names(&d), ["green-0", "green-1", "green-2", "green-3"]);
        for device in &d {
            assert!(device.get("allowMultipleAllocations").is_none());
            assert_eq!(device["capacity"]["bandwidth"], json!({"value": "2500M"}));
        }
        // The dry run told; the stored slice was written once.
        assert_eq!(stored_writes(&run.api).len(), 1);
        let c = device_sharing(&run).await;
        assert_eq!(
            (&c["status"], &c["reason"]),
            (&json!("False"), &json!("NumberedDevices"))
        );
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("DRAConsumableCapacity")
        );
    });
}

/// A restarted agent that finds its slice in place writes nothing to it.
#[test]
fn an_unchanged_restart_writes_no_slice() {
    let node = Netns::new("dra-restart");
    let peer = Netns::new("dra-restart-p");
    cable(&node, "sv-a", &peer, "p0");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let api = FakeApi::with(vec![map("green", "sv-a")], json!({}));
    run_agent(&node, api.clone(), dra(), state.clone(), |run| async move {
        run.until(10, "slice written", |r| !devices(&r.api).is_empty())
            .await;
        device_sharing(&run).await;
    });
    let before = api.writes().len();
    run_agent(&node, api.clone(), dra(), state, move |run| async move {
        // The restarted agent has looked (a GET and a dry run) and settled.
        run.until(10, "looked", |r| {
            r.api.requests.lock().unwrap()[before..]
                .iter()
                .filter(|q| q.path.contains("resourceslices"))
                .count()
                >= 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
    });
    let after: Vec<Recorded> = api.writes()[before..]
        .iter()
        .filter(|r| !r.query.contains_key("dryRun"))
        .cloned()
        .collect();
    assert!(after.is_empty(), "{after:#?}");
}

mod controller_side {
    use super::*;
    use support::controller::{Lead, cluster, network_map, pace, start_with, until};
    use support::fake_api::{DEVICE_CLASSES, MAPS, assert_declared_by};
    use surveyor::controller::API_REQUESTS;

    fn class_writes(api: &FakeApi) -> Vec<Recorded> {
        api.writes()
            .into_iter()
            .filter(|r| r.path.contains("/deviceclasses"))
            .collect()
    }

    fn expression(network: &str) -> String {
        format!(
            r#"device.driver == "surveyor.dev" && device.attributes["surveyor.dev"].network == "{network}""#
        )
    }

    /// One DeviceClass per NetworkMap, applied once, repaired when edited,
    /// removed with its map; a class not ours is never touched; a restart
    /// writes nothing.
    #[tokio::test]
    async fn a_device_class_per_network_map_for_its_life() {
        let green = network_map("green", json!({"match": {"names": ["ens4"]}}));
        let blue = network_map("blue", json!({"match": {"names": ["ens5"]}}));
        let api = cluster(vec![green, blue], vec![("n1", json!({}))], vec![]);
        let theirs = json!({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
            "metadata": {"name": "gpu.example.com"},
            "spec": {"selectors": [{"cel": {"expression": "device.driver == \"gpu.example.com\""}}]}});
        api.put(DEVICE_CLASSES, theirs.clone());
        let c = start_with(&api, Lead::Always, pace(), true);
        until(5, "two classes", &api, || class_writes(&api).len() == 2).await;
        let writes = class_writes(&api);
        let mut paths: Vec<&str> = writes.iter().map(|w| w.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/apis/resource.k8s.io/v1/deviceclasses/blue.surveyor.dev",
                "/apis/resource.k8s.io/v1/deviceclasses/green.surveyor.dev"
            ]
        );
        let w = writes
            .iter()
            .find(|w| w.path.ends_with("green.surveyor.dev"))
            .unwrap();
        assert_eq!(w.method, "PATCH");
        assert!(w.content_type.starts_with("application/apply-patch"));
        assert_eq!(
            w.query.get("fieldManager").map(String::as_str),
            Some("surveyor-controller")
        );
        assert_eq!(
            w.body,
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
                "metadata": {"name": "green.surveyor.dev", "labels": {"surveyor.dev/network": "green"}},
                "spec": {"selectors": [{"cel": {"expression": expression("green")}}]}})
        );
        // Quiet.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(class_writes(&api).len(), 2);

        // Edited by hand: put back.
        let mut edited = api.get(DEVICE_CLASSES, "green.surveyor.dev").unwrap();
        edited["spec"]["selectors"][0]["cel"]["expression"] = json!("true");
        api.put(DEVICE_CLASSES, edited);
        until(5, "repaired", &api, || {
            api.get(DEVICE_CLASSES, "green.surveyor.dev").unwrap()["spec"]["selectors"][0]["cel"]
                ["expression"]
                == expression("green")
        })
        .await;

        // The map goes: so does its class.
        api.delete(MAPS, "blue");
        until(5, "blue's class deleted", &api, || {
            api.get(DEVICE_CLASSES, "blue.surveyor.dev").is_none()
        })
        .await;
        assert_eq!(
            api.get(DEVICE_CLASSES, "gpu.example.com").unwrap()["spec"],
            theirs["spec"]
        );
        c.stop().await;

        // A restart finds everything in place.
        let before = class_writes(&api).len();
        let again = start_with(&api, Lead::Always, pace(), true);
        until(5, "listed", &api, || again.metrics.is_ready()).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            class_writes(&api).len(),
            before,
            "{:#?}",
            &class_writes(&api)[before..]
        );
        again.stop().await;
        assert_declared_by(&api, API_REQUESTS);
        assert!(
            api.writes()
                .iter()
                .all(|w| !w.path.contains("gpu.example.com")),
            "a class not ours was touched"
        );
    }
}

/// The API down when the agent starts: nothing is lost, the slice is
/// written once it answers.
#[test]
fn the_slice_follows_once_the_api_answers() {
    let api = FakeApi::with(vec![map("green", "sv-a")], json!({}));
    api.down.store(true, std::sync::atomic::Ordering::SeqCst);
    with_agent_opts("dra-down", api, dra(), |run| async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(run.api.get(SLICES, SLICE).is_none());
        run.api
            .down
            .store(false, std::sync::atomic::Ordering::SeqCst);
        run.until(40, "slice written after the outage", |r| {
            !devices(&r.api).is_empty()
        })
        .await;
        assert_eq!(names(&devices(&run.api)), ["green"]);
        assert_eq!(
            stored_writes(&run.api).len(),
            1,
            "{:#?}",
            stored_writes(&run.api)
        );
    });
}
