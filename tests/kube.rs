//! The agent's Kubernetes layer against kube's `Client::new` over a
//! tower-test mock (support/fake_api.rs): a small fake API server keeps
//! objects, answers lists, watches and server-side applies, and records
//! every request so the tests assert them exactly. Discovery is real (a
//! network namespace); only the API is simulated.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_api::{
    FakeApi, NODES, Options, Recorded, SURVEYS, map, node, run_agent, with_agent, with_agent_opts,
};

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(o) => o.values().any(has_null),
        _ => false,
    }
}

fn node_uid(api: &FakeApi) -> Value {
    api.get(NODES, "node1").unwrap()["metadata"]["uid"].clone()
}

#[test]
fn first_publish_then_silence() {
    let api = FakeApi::with(vec![map("green", "sv-a")], json!({"rack": "r1"}));
    with_agent("kube-first", api, None, |run| async move {
        run.until(5, "first publish", |r| r.api.writes().len() >= 2)
            .await;
        let writes = run.api.writes();
        let query = |r: &Recorded| {
            (
                r.query.get("fieldManager").cloned(),
                r.query.get("force").cloned(),
            )
        };
        for w in &writes {
            assert_eq!(w.method, "PATCH", "{w:?}");
            assert_eq!(
                query(w),
                (Some("surveyor-agent".into()), Some("true".into())),
                "{w:?}"
            );
            assert!(!has_null(&w.body), "nulls in an apply body: {}", w.body);
        }
        // 1. The NodeSurvey itself: metadata, owned by its Node.
        assert_eq!(
            writes[0].path,
            "/apis/surveyor.dev/v1alpha1/nodesurveys/node1"
        );
        assert_eq!(
            writes[0].body,
            json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "NodeSurvey", "metadata": {
                "name": "node1",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node1", "uid": node_uid(&run.api)}],
            }})
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
        // Nothing changes: nothing is written. And never a Node: labels
        // are the controller's.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(run.api.writes().len(), 2, "{:#?}", run.api.writes());
        // Reads are the list and watch of maps, the Node and the NodeSurvey.
        let gets: Vec<String> = run
            .api
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "GET")
            .map(|r| r.path.clone())
            .collect();
        assert!(gets.len() <= 6, "{gets:?}");
        // The NodeSurvey and Node are watched by name only.
        for r in run.api.requests.lock().unwrap().iter() {
            if r.path.ends_with("/nodes") || r.path.ends_with("/nodesurveys") {
                assert_eq!(
                    r.query.get("fieldSelector").map(String::as_str),
                    Some("metadata.name=node1"),
                    "{r:?}"
                );
            }
        }
    });
}

#[test]
fn a_burst_of_link_events_is_at_most_two_writes_ending_in_the_final_state() {
    let api = FakeApi::with(vec![map("green", "sv-*")], json!({}));
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
fn network_map_events_re_resolve_and_reach_the_node_survey() {
    let api = FakeApi::with(vec![map("green", "sv-a")], json!({}));
    with_agent("kube-maps", api, None, |run| async move {
        run.until(5, "first publish", |r| {
            r.api.writes_to("/status").len() == 1
        })
        .await;
        run.api.push("ADDED", map("red", "sv-b"));
        run.until(5, "red resolved in the snapshot", |r| {
            r.snapshot()["networks"]["red"]["device"] == "sv-b"
        })
        .await;
        run.until(5, "red published", |r| {
            r.api.writes_to("/status").last().unwrap().body["status"]["networks"]["red"]["device"]
                == "sv-b"
        })
        .await;

        run.api.push("DELETED", map("green", "sv-a"));
        run.until(5, "green gone from the snapshot", |r| {
            r.snapshot()["networks"].get("green").is_none()
        })
        .await;
        run.until(5, "green gone from the NodeSurvey", |r| {
            let status = &r.api.get(SURVEYS, "node1").unwrap()["status"];
            status["networks"].get("green").is_none() && status["summary"]["networks"] == "red"
        })
        .await;
        assert!(
            run.api.writes_to("/nodes/node1").is_empty(),
            "no Node writes"
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
    let api = FakeApi::with(vec![map("green", "sv-*")], json!({}));
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
            r.api
                .get(SURVEYS, "node1")
                .is_some_and(|s| s["status"].is_object())
        })
        .await;
        let creates: Vec<Recorded> = run.api.writes_to("/nodesurveys/node1");
        assert!(
            creates.len() >= 4,
            "every failed attempt is retried: {creates:#?}"
        );
        let status = &run.api.get(SURVEYS, "node1").unwrap()["status"];
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
    let node_json = json!({"node": "node1", "labels": {"rack": "r1"}});
    with_agent(
        "kube-down",
        api,
        Some((maps, node_json)),
        |run| async move {
            run.until(5, "green from maps.json", |r| {
                r.snapshot()["networks"]["green"]["device"] == "sv-b"
            })
            .await;
            let ready = &run.survey()["conditions"][0];
            assert_eq!(
                (ready["status"].as_str(), ready["reason"].as_str()),
                (Some("False"), Some("NetworkMapsNotListed"))
            );
            // The API comes back, listing no maps: the list replaces the saved.
            run.api.put(NODES, node("node1", json!({})));
            run.api.down.store(false, Ordering::SeqCst);
            run.until(30, "listed and published", |r| {
                r.survey()["conditions"][0]["status"] == "True"
            })
            .await;
            assert!(
                run.snapshot()["networks"].get("green").is_none(),
                "the API lists no maps now"
            );
        },
    );
}

/// With `--maps` and an API that does not answer at start, the agent
/// resolves from the directory (and says so), then switches to the API.
#[test]
fn an_unreachable_api_at_start_falls_back_to_the_maps_dir() {
    let api = FakeApi::with(vec![map("red", "sv-b")], json!({}));
    api.down.store(true, Ordering::SeqCst);
    let green = support::lldp_map("green", "x").replace(
        "match:\n    lldp:\n      systemName: \"x\"\n",
        "match:\n    names: [sv-a]\n",
    );
    let options = Options {
        fallback: Some(vec![("green.yaml".into(), green)]),
        ..Options::default()
    };
    with_agent_opts("kube-fallback", api, options, |run| async move {
        run.until(5, "green from --maps", |r| {
            r.snapshot()["networks"]["green"]["device"] == "sv-a"
        })
        .await;
        assert_eq!(
            run.survey()["conditions"][0]["reason"],
            "NetworkMapsFromDir"
        );
        assert!(run.api.writes().is_empty(), "the API is not reached");
        run.api.down.store(false, Ordering::SeqCst);
        run.until(30, "the API's maps in force", |r| {
            r.snapshot()["networks"]["red"]["device"] == "sv-b"
                && r.snapshot()["networks"].get("green").is_none()
        })
        .await;
        run.until(5, "Ready", |r| {
            r.survey()["conditions"][0]["status"] == "True"
        })
        .await;
    });
}

/// What is in the API is compared with what should be: a NodeSurvey
/// deleted by hand comes back, an edited status is written again, a
/// re-created Node gets its owner reference.
#[test]
fn drift_is_repaired() {
    let api = FakeApi::with(vec![map("green", "sv-a")], json!({}));
    with_agent("kube-drift", api, None, |run| async move {
        run.until(5, "first publish", |r| {
            r.api
                .get(SURVEYS, "node1")
                .is_some_and(|s| s["status"].is_object())
        })
        .await;
        let good = run.api.get(SURVEYS, "node1").unwrap()["status"].clone();

        run.api.delete(SURVEYS, "node1");
        run.until(5, "re-created", |r| {
            r.api
                .get(SURVEYS, "node1")
                .is_some_and(|s| s["status"] == good)
        })
        .await;

        let mut edited = run.api.get(SURVEYS, "node1").unwrap();
        edited["status"]["summary"]["interfaces"] = json!(99);
        run.api.put(SURVEYS, edited);
        run.until(5, "status put right", |r| {
            r.api.get(SURVEYS, "node1").unwrap()["status"] == good
        })
        .await;

        // The Node is deleted and joins again: a new UID.
        let writes = run.api.writes().len();
        run.api.delete(NODES, "node1");
        run.api.put(NODES, node("node1", json!({})));
        let uid = node_uid(&run.api);
        run.until(5, "owner again", |r| {
            let s = r.api.get(SURVEYS, "node1").unwrap();
            s["metadata"]["ownerReferences"][0]["uid"] == uid
        })
        .await;
        // And then it is quiet: repairs do not feed on themselves.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let after = run.api.writes().len();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            run.api.writes().len(),
            after,
            "{:#?}",
            &run.api.writes()[writes..]
        );
    });
}

/// A node name that matches no Node: the agent says so (log, condition)
/// and publishes without an owner, rather than never writing.
#[test]
fn a_node_name_matching_no_node_is_reported() {
    let api = FakeApi::default();
    api.put(support::fake_api::MAPS, map("green", "sv-a"));
    let options = Options {
        node_wait: Duration::from_secs(2),
        ..Options::default()
    };
    with_agent_opts("kube-nonode", api, options, |run| async move {
        run.until(10, "published without its Node", |r| {
            r.api
                .get(SURVEYS, "node1")
                .is_some_and(|s| s["status"].is_object())
        })
        .await;
        let s = run.api.get(SURVEYS, "node1").unwrap();
        let ready = &s["status"]["conditions"][0];
        assert_eq!(ready["reason"], "NodeNotFound");
        assert!(ready["message"].as_str().unwrap().contains("NODE_NAME"));
        assert!(s["metadata"].get("ownerReferences").is_none());
        // The Node appears: owner, Ready.
        run.api.put(NODES, node("node1", json!({})));
        run.until(5, "owned", |r| {
            let s = r.api.get(SURVEYS, "node1").unwrap();
            s["metadata"]["ownerReferences"][0]["kind"] == "Node"
                && s["status"]["conditions"][0]["status"] == "True"
        })
        .await;
    });
}

/// A restart with nothing changed on the node writes nothing.
#[test]
fn a_restart_with_nothing_changed_writes_no_status() {
    let api = FakeApi::with(vec![map("green", "sv-a")], json!({}));
    let node_ns = support::Netns::new("kube-restart");
    let peer = support::Netns::new("kube-restart-p");
    support::cable(&node_ns, "sv-a", &peer, "p0");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = api.clone();
    run_agent(
        &node_ns,
        api.clone(),
        Options::default(),
        state.clone(),
        |run| async move {
            run.until(5, "published", |r| r.api.writes().len() >= 2)
                .await;
            // Conditions carry whole seconds: restart in a later one.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        },
    );
    let before = first.writes().len();
    let status = first.get(SURVEYS, "node1").unwrap()["status"].clone();
    run_agent(
        &node_ns,
        api,
        Options::default(),
        state,
        move |run| async move {
            tokio::time::sleep(Duration::from_millis(3000)).await;
            let after: Vec<Recorded> = run.api.writes()[before..].to_vec();
            assert!(after.is_empty(), "written again: {after:#?}");
            assert_eq!(run.api.get(SURVEYS, "node1").unwrap()["status"], status);
        },
    );
}

fn event_writes(api: &FakeApi) -> Vec<Recorded> {
    api.writes()
        .into_iter()
        .filter(|r| r.path.starts_with(support::fake_api::EVENTS))
        .collect()
}

fn events_on() -> Options {
    Options {
        events: Some((5, Duration::from_secs(12))),
        ..Options::default()
    }
}

/// A cable pull moving green from sv-a to sv-b is one Event on the
/// NodeSurvey, saying why, with the map as related object; nothing at
/// rest, nothing for a restart.
#[test]
fn a_network_moving_is_one_event_on_the_node_survey_and_rest_is_silent() {
    let api = FakeApi::with(vec![map("green", "sv-*")], json!({}));
    let node = support::Netns::new("kube-ev");
    let peer = support::Netns::new("kube-ev-p");
    support::cable(&node, "sv-a", &peer, "p0");
    support::cable(&node, "sv-b", &peer, "p1");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    run_agent(
        &node,
        api.clone(),
        events_on(),
        state.clone(),
        |run| async move {
            run.until(5, "green on sv-a published", |r| {
                r.survey()["networks"]["green"]["device"] == "sv-a"
                    && r.api.get(SURVEYS, "node1").is_some()
            })
            .await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(
                event_writes(&run.api).is_empty(),
                "the first publish is not news"
            );
            run.ip(&["link", "set", "sv-a", "down"]);
            run.until(5, "an Event", |r| !event_writes(&r.api).is_empty())
                .await;
            let uid = run.api.get(SURVEYS, "node1").unwrap()["metadata"]["uid"].clone();
            let e = &event_writes(&run.api)[0];
            assert_eq!(e.method, "POST");
            let body = &e.body;
            assert_eq!(body["apiVersion"], "events.k8s.io/v1");
            assert_eq!(body["reason"], "NetworkMoved");
            assert_eq!(body["type"], "Normal");
            assert_eq!(body["action"], "Resolve");
            assert_eq!(
                body["note"],
                "green moved from sv-a to sv-b on node node1: sv-a carrier down"
            );
            assert_eq!(
                body["regarding"],
                json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "NodeSurvey", "name": "node1", "uid": uid})
            );
            assert_eq!(
                body["related"],
                json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "NetworkMap", "name": "green"})
            );
            assert_eq!(body["reportingController"], "surveyor.dev/agent");
            assert_eq!(body["reportingInstance"], "node1");
            assert!(body["eventTime"].is_string(), "{body}");
            // At rest again: silence.
            tokio::time::sleep(Duration::from_millis(2000)).await;
            assert_eq!(
                event_writes(&run.api).len(),
                1,
                "{:#?}",
                event_writes(&run.api)
            );
        },
    );
    // A restart finds green where it was: no Event.
    let before = event_writes(&api).len();
    run_agent(&node, api.clone(), events_on(), state, |run| async move {
        run.until(5, "the restarted agent has published", |r| {
            r.survey()["networks"]["green"]["device"] == "sv-b"
        })
        .await;
        tokio::time::sleep(Duration::from_millis(2000)).await;
    });
    assert_eq!(event_writes(&api).len(), before);
}

/// A link flapping makes at most the node's burst of Event writes (5)
/// however often green moves (a budget refilled once a minute here, so
/// the storm is shorter than a refill), the repeats aggregated into one
/// series: the same reason about the same objects.
#[test]
fn a_flap_storm_is_bounded_and_aggregated() {
    let api = FakeApi::with(vec![map("green", "sv-*")], json!({}));
    let options = Options {
        events: Some((5, Duration::from_secs(60))),
        ..Options::default()
    };
    with_agent_opts("kube-flap", api, options, |run| async move {
        run.until(5, "green on sv-a", |r| {
            r.survey()["networks"]["green"]["device"] == "sv-a"
                && r.api.get(SURVEYS, "node1").is_some()
        })
        .await;
        // 8 flaps: 16 moves.
        for n in 0..16 {
            let (state, to) = if n % 2 == 0 {
                ("down", "sv-b")
            } else {
                ("up", "sv-a")
            };
            run.ip(&["link", "set", "sv-a", state]);
            run.until(5, "the move", |r| {
                r.snapshot()["networks"]["green"]["device"] == to
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let writes = event_writes(&run.api);
        assert_eq!(writes.len(), 5, "{writes:#?}");
        assert_eq!(writes[0].method, "POST");
        for (n, w) in writes[1..].iter().enumerate() {
            assert_eq!(w.method, "PATCH");
            assert_eq!(w.body["series"]["count"], n as u64 + 2, "{w:?}");
        }
    });
}
