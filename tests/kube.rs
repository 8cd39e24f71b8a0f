//! The Kubernetes layer against kube's `Client::new` over a tower-test
//! mock (support/fake_api.rs): a small fake API server answers the agent's
//! lists, watches and patches, and records every request so the tests
//! assert them exactly. Discovery is real (a network namespace); only the
//! API is simulated.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_api::{FakeApi, Recorded, map, with_agent};

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(o) => o.values().any(has_null),
        _ => false,
    }
}

#[test]
fn first_publish_then_silence() {
    let api = FakeApi {
        maps: vec![map("green", "sv-a")],
        node_labels: json!({"rack": "r1"}),
        ..FakeApi::default()
    };
    with_agent("kube-first", api, None, |run| async move {
        run.until(5, "first publish", |r| r.api.writes().len() >= 3)
            .await;
        let writes = run.api.writes();
        let query = |r: &Recorded| {
            (
                r.query.get("fieldManager").cloned(),
                r.query.get("force").cloned(),
            )
        };
        for w in &writes {
            assert_eq!(
                query(w),
                (Some("surveyor-agent".into()), Some("true".into())),
                "{w:?}"
            );
            assert!(!has_null(&w.body), "nulls in an apply body: {}", w.body);
        }
        // 1. The NodeSurvey itself, metadata only.
        assert_eq!(
            writes[0].path,
            "/apis/surveyor.dev/v1alpha1/nodesurveys/node1"
        );
        assert_eq!(
            writes[0].body,
            json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "NodeSurvey", "metadata": {"name": "node1"}})
        );
        // 2. Its status, through the status subresource.
        assert_eq!(
            writes[1].path,
            "/apis/surveyor.dev/v1alpha1/nodesurveys/node1/status"
        );
        let status = &writes[1].body["status"];
        assert_eq!(status["summary"]["interfaces"], 2);
        assert_eq!(status["networks"]["green"]["device"], "sv-a");
        let conditions: Vec<&str> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(conditions, ["Ready", "LLDPActive", "Degraded"]);
        assert_eq!(
            status,
            &run.survey(),
            "the API and survey.json say the same"
        );
        // 3. The Node's label for the resolved network, nothing else.
        assert_eq!(writes[2].path, "/api/v1/nodes/node1");
        assert_eq!(
            writes[2].body,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1", "labels": {"network.surveyor.dev/green": "true"}}})
        );
        // Nothing changes: nothing is written.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(run.api.writes().len(), 3, "{:#?}", run.api.writes());
        // Reads are the two list+watch pairs only.
        let gets: Vec<String> = run
            .api
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "GET")
            .map(|r| r.path.clone())
            .collect();
        assert!(gets.len() <= 4, "{gets:?}");
    });
}

#[test]
fn a_burst_of_link_events_is_at_most_two_writes_ending_in_the_final_state() {
    let api = FakeApi {
        maps: vec![map("green", "sv-*")],
        ..FakeApi::default()
    };
    with_agent("kube-burst", api, None, |run| async move {
        run.until(5, "first publish", |r| {
            r.api.writes_to("/status").len() == 1
        })
        .await;
        // Let the pace interval after the first write pass.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let before = run.api.writes_to("/status").len();
        // 50 link events: sv-b's MTU changes 50 times, ending at 1450.
        let batch: String = (0..50)
            .map(|n| format!("link set sv-b mtu {}\n", 1400 + n + 1))
            .collect();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), batch).unwrap();
        run.ip(&["-batch", file.path().to_str().unwrap()]);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let status_writes = run.api.writes_to("/status");
        let burst = &status_writes[before..];
        assert!(
            !burst.is_empty() && burst.len() <= 2,
            "{} writes for the burst",
            burst.len()
        );
        let last = &burst.last().unwrap().body["status"];
        let sv_b = last["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "sv-b")
            .unwrap();
        assert_eq!(sv_b["mtu"], 1450, "the final state is written");
    });
}

#[test]
fn network_map_events_re_resolve_and_move_node_labels() {
    let api = FakeApi {
        maps: vec![map("green", "sv-a")],
        ..FakeApi::default()
    };
    with_agent("kube-labels", api, None, |run| async move {
        run.until(5, "first publish", |r| {
            r.api.writes_to("/nodes/node1").len() == 1
        })
        .await;
        run.api.push("ADDED", map("red", "sv-b"));
        run.until(5, "red resolved in the snapshot", |r| {
            r.snapshot()["networks"]["red"]["device"] == "sv-b"
        })
        .await;
        run.until(5, "red labelled", |r| {
            r.api.writes_to("/nodes/node1").len() == 2
        })
        .await;
        let labels = &run.api.writes_to("/nodes/node1")[1].body["metadata"]["labels"];
        assert_eq!(
            labels,
            &json!({"network.surveyor.dev/green": "true", "network.surveyor.dev/red": "true"})
        );
        let status = run.api.writes_to("/status").last().unwrap().body["status"].clone();
        assert_eq!(status["networks"]["red"]["device"], "sv-b");

        run.api.push("DELETED", map("green", "sv-a"));
        run.until(5, "green gone from the snapshot", |r| {
            r.snapshot()["networks"].get("green").is_none()
        })
        .await;
        run.until(5, "green unlabelled", |r| {
            r.api.writes_to("/nodes/node1").len() == 3
        })
        .await;
        let labels = &run.api.writes_to("/nodes/node1")[2].body["metadata"]["labels"];
        assert_eq!(
            labels,
            &json!({"network.surveyor.dev/red": "true"}),
            "server-side apply drops what we omit"
        );

        // A malformed map is refused, keeps red's last valid version, and
        // the NodeSurvey says so.
        run.api.push("MODIFIED", map("red", "sv-["));
        run.until(5, "degraded", |r| {
            r.survey()["conditions"][2]["reason"] == "MalformedNetworkMaps"
        })
        .await;
        assert_eq!(run.snapshot()["networks"]["red"]["device"], "sv-b");
        run.until(5, "degraded published", |r| {
            r.api.writes_to("/status").last().unwrap().body["status"]["conditions"][2]["status"]
                == "True"
        })
        .await;
    });
}

#[test]
fn api_errors_and_timeouts_are_retried_while_the_snapshot_stays_current() {
    let api = FakeApi {
        maps: vec![map("green", "sv-*")],
        ..FakeApi::default()
    };
    api.fail_writes.store(3, Ordering::SeqCst);
    api.hang_writes.store(1, Ordering::SeqCst);
    with_agent("kube-retry", api, None, |run| async move {
        // While the API fails, link changes still reach the snapshot.
        run.until(5, "green on sv-a", |r| {
            r.snapshot()["networks"]["green"]["device"] == "sv-a"
        })
        .await;
        run.ip(&["link", "set", "sv-a", "down"]);
        run.until(2, "green moves to sv-b", |r| {
            r.snapshot()["networks"]["green"]["device"] == "sv-b"
        })
        .await;
        // One hang (timed out after 500 ms), three 500s, then success: the
        // writer backs off (0.5 s, 1 s, 2 s, scaled per node) and catches up.
        run.until(15, "the status is eventually written", |r| {
            !r.api.writes_to("/status").is_empty()
        })
        .await;
        let creates: Vec<Recorded> = run.api.writes_to("/nodesurveys/node1");
        assert!(
            creates.len() >= 4,
            "every failed attempt is retried: {creates:#?}"
        );
        let status = run.api.writes_to("/status").last().unwrap().body["status"].clone();
        assert_eq!(
            status["networks"]["green"]["device"], "sv-b",
            "the catch-up write is the current state"
        );
    });
}

#[test]
fn a_restart_with_the_api_down_resolves_from_maps_json_and_node_json() {
    let api = FakeApi::default();
    api.down.store(true, Ordering::SeqCst);
    // green selects rack r1 only: this node is in it, by the labels saved.
    let mut green = map("green", "sv-b");
    green["spec"]["nodeSelector"] = json!({"matchLabels": {"rack": "r1"}});
    let maps = json!({"apiVersion": "v1", "kind": "List", "items": [green]});
    let node = json!({"node": "node1", "labels": {"rack": "r1"}});
    with_agent("kube-down", api, Some((maps, node)), |run| async move {
        run.until(5, "green from maps.json", |r| {
            r.snapshot()["networks"]["green"]["device"] == "sv-b"
        })
        .await;
        let ready = &run.survey()["conditions"][0];
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("NetworkMapsNotListed"))
        );
        // The API comes back: the list replaces the saved maps.
        run.api.down.store(false, Ordering::SeqCst);
        run.until(30, "listed and published", |r| {
            r.survey()["conditions"][0]["status"] == "True"
        })
        .await;
        assert!(
            run.snapshot()["networks"].get("green").is_none(),
            "the API lists no maps now"
        );
    });
}
