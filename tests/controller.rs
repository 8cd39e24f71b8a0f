//! The controller against kube's `Client::new` over a tower-test mock
//! (support/fake_api.rs): exact requests for NetworkMap status and Node
//! labels, silence when nothing changes, repairs, restarts, and two
//! replicas sharing a Lease.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use support::controller::{Lead, Running, cluster, network_map, nic, pace, start, survey, until};
use support::fake_api::{FakeApi, MAPS, NODES, Recorded, SURVEYS, assert_declared_by, node};
use surveyor::controller::API_REQUESTS;

const GREEN_STATUS: &str = "/apis/surveyor.dev/v1alpha1/networkmaps/green/status";

fn green() -> Value {
    network_map(
        "green",
        json!({"match": {"lldp": {"systemName": "tor-green-*"}}}),
    )
}

/// n1 and n2 resolve green, n3 does not, n4 has no agent; every node has
/// labels of its own.
fn fixture() -> FakeApi {
    let on = |n: &str| {
        survey(
            n,
            &[nic(
                "ens4",
                &["green"],
                Some(("tor-green-01", "Ethernet1/1")),
            )],
            &[("green", Ok("ens4"))],
        )
    };
    let off = survey(
        "n3",
        &[nic("ens4", &[], Some(("tor-blue-01", "Ethernet1/3")))],
        &[(
            "green",
            Err("no surveyed interface matches spec.match: ens4 fails lldp.systemName"),
        )],
    );
    cluster(
        vec![green()],
        vec![
            ("n1", json!({"rack": "r1"})),
            ("n2", json!({"rack": "r1"})),
            ("n3", json!({"rack": "r2"})),
            ("n4", json!({"rack": "r2"})),
        ],
        vec![on("n1"), on("n2"), off],
    )
}

fn status_writes(api: &FakeApi) -> Vec<Recorded> {
    api.writes_to("/networkmaps/green/status")
}

fn label_writes(api: &FakeApi, node: &str) -> Vec<Recorded> {
    api.writes_to(&format!("/api/v1/nodes/{node}"))
}

fn labels(api: &FakeApi, node: &str) -> Value {
    api.get(NODES, node).unwrap()["metadata"]["labels"].clone()
}

/// The status with condition times blanked, for comparing.
fn timeless(status: &Value) -> Value {
    let mut s = status.clone();
    for c in s["conditions"].as_array_mut().into_iter().flatten() {
        assert!(
            c["lastTransitionTime"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{c}"
        );
        c["lastTransitionTime"] = json!("-");
    }
    s
}

/// Writes of NetworkMaps and Nodes (not the Lease's renewals).
fn object_writes(api: &FakeApi) -> Vec<Recorded> {
    api.writes()
        .into_iter()
        .filter(|r| !r.path.contains("/leases"))
        .collect()
}

async fn settled(api: &FakeApi) {
    // Longer than the pace interval and settle time together.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = object_writes(api).len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = object_writes(api);
    assert_eq!(after.len(), before, "not quiet: {:#?}", &after[before..]);
}

#[tokio::test]
async fn first_writes_are_one_status_per_map_and_one_label_patch_per_node_then_silence() {
    let api = fixture();
    let c = start(&api, Lead::Always, pace());
    until(5, "green's status", &api, || {
        !status_writes(&api).is_empty()
    })
    .await;
    until(5, "labels", &api, || {
        !label_writes(&api, "n1").is_empty() && !label_writes(&api, "n2").is_empty()
    })
    .await;
    let w = &status_writes(&api)[0];
    assert_eq!(w.method, "PATCH");
    assert_eq!(w.path, GREEN_STATUS);
    assert_eq!(w.content_type, "application/apply-patch+yaml");
    assert_eq!(
        w.query.get("fieldManager").map(String::as_str),
        Some("surveyor-controller")
    );
    assert_eq!(w.query.get("force").map(String::as_str), Some("true"));
    let unresolved_n3 = "no surveyed interface matches spec.match: ens4 fails lldp.systemName";
    let no_agent =
        "no NodeSurvey: no surveyor agent runs on this node, or it has not published yet";
    assert_eq!(
        timeless(&w.body["status"]),
        json!({
            "observedGeneration": 1,
            "selectedNodes": 4,
            "resolvedNodes": 2,
            "resolved": "2/4",
            "unresolved": [
                {"node": "n3", "reason": unresolved_n3},
                {"node": "n4", "reason": no_agent},
            ],
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "Unresolved",
                 "message": "resolved on 2 of 4 selected node(s)", "lastTransitionTime": "-"},
                {"type": "Degraded", "status": "True", "reason": "Unresolved",
                 "message": format!("no device on 2 node(s): n3: {unresolved_n3}; n4: {no_agent}"),
                 "lastTransitionTime": "-"},
            ],
        })
    );
    assert_eq!(
        (&w.body["apiVersion"], &w.body["kind"], &w.body["metadata"]),
        (
            &json!("surveyor.dev/v1alpha1"),
            &json!("NetworkMap"),
            &json!({"name": "green"})
        )
    );
    // Labels: a merge patch of ours only, on the nodes that resolved.
    for n in ["n1", "n2"] {
        let writes = label_writes(&api, n);
        assert_eq!(writes.len(), 1, "{writes:#?}");
        assert_eq!(writes[0].method, "PATCH");
        assert_eq!(writes[0].content_type, "application/merge-patch+json");
        assert_eq!(
            writes[0].query.get("fieldManager").map(String::as_str),
            Some("surveyor-controller")
        );
        assert_eq!(
            writes[0].body,
            json!({"metadata": {"labels": {"network.surveyor.dev/green": "true"}}})
        );
        assert_eq!(
            labels(&api, n),
            json!({"rack": "r1", "network.surveyor.dev/green": "true"})
        );
    }
    assert!(label_writes(&api, "n3").is_empty() && label_writes(&api, "n4").is_empty());
    // The API has what was written, and then nothing more is written.
    let stored = api.get(MAPS, "green").unwrap();
    assert_eq!(stored["status"], w.body["status"]);
    settled(&api).await;
    assert_eq!(api.writes().len(), 3, "{:#?}", api.writes());
    // Reads: one list and one watch per kind; Nodes by metadata only.
    assert_declared_by(&api, API_REQUESTS);
    let m = c.metrics.encode();
    for line in [
        "surveyor_controller_leader 1",
        "surveyor_controller_resolved_nodes{map=\"green\"} 2",
        "surveyor_controller_selected_nodes{map=\"green\"} 4",
        "surveyor_controller_writes_total{kind=\"status\"} 1",
        "surveyor_controller_writes_total{kind=\"labels\"} 2",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
    }
    c.stop().await;
}

#[tokio::test]
async fn a_quiet_cluster_gets_no_writes_and_a_restart_writes_nothing() {
    let api = fixture();
    let c = start(&api, Lead::Always, pace());
    until(5, "first writes", &api, || api.writes().len() == 3).await;
    // Watch events that change nothing we judge by (a Node's heartbeat
    // bumps its resourceVersion) write nothing either.
    for round in 0..5 {
        let mut n = api.get(NODES, "n3").unwrap();
        n["metadata"]["annotations"] = json!({"heartbeat": round.to_string()});
        api.put(NODES, n);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    settled(&api).await;
    assert_eq!(api.writes().len(), 3, "{:#?}", api.writes());
    c.stop().await;
    // A new controller finds everything in place.
    let again = start(&api, Lead::Always, pace());
    until(5, "synced", &api, || again.metrics.is_ready()).await;
    settled(&api).await;
    assert_eq!(
        api.writes().len(),
        3,
        "a restart rewrote: {:#?}",
        &api.writes()[3..]
    );
    again.stop().await;
}

#[tokio::test]
async fn one_survey_change_is_one_status_write_and_one_label_patch() {
    let api = fixture();
    let c = start(&api, Lead::Always, pace());
    until(5, "first writes", &api, || api.writes().len() == 3).await;
    settled(&api).await;
    let t = tokio::time::Instant::now();
    api.put(
        SURVEYS,
        survey(
            "n3",
            &[nic(
                "ens5",
                &["green"],
                Some(("tor-green-02", "Ethernet1/3")),
            )],
            &[("green", Ok("ens5"))],
        ),
    );
    until(2, "n3 labelled within 2 s", &api, || {
        label_writes(&api, "n3").len() == 1
    })
    .await;
    until(2, "the status follows", &api, || {
        status_writes(&api).len() == 2
    })
    .await;
    let took = t.elapsed();
    let last = &status_writes(&api)[1].body["status"];
    assert_eq!(last["resolved"], "3/4");
    assert_eq!(
        last["unresolved"],
        json!([{"node": "n4", "reason": "no NodeSurvey: no surveyor agent runs on this node, or it has not published yet"}])
    );
    settled(&api).await;
    assert_eq!(api.writes().len(), 5, "{:#?}", &api.writes()[3..]);
    eprintln!("survey change to label and status: {took:?}");
    c.stop().await;
}

#[tokio::test]
async fn a_map_edit_moves_observed_generation_and_a_bad_spec_is_reported_not_obeyed() {
    let api = fixture();
    let c = start(&api, Lead::Always, pace());
    until(5, "first status", &api, || status_writes(&api).len() == 1).await;
    // Edit: only rack r1 now.
    let mut g = green();
    g["spec"]["nodeSelector"] = json!({"matchLabels": {"rack": "r1"}});
    api.put(MAPS, g.clone());
    until(3, "generation 2", &api, || {
        status_writes(&api).last().unwrap().body["status"]["observedGeneration"] == 2
    })
    .await;
    let s = &status_writes(&api).last().unwrap().body["status"].clone();
    assert_eq!(
        (&s["resolved"], &s["conditions"][0]["status"]),
        (&json!("2/2"), &json!("True"))
    );
    assert!(s.get("unresolved").is_none(), "{s}");
    // A spec that cannot be used (an API server without our CEL rules
    // let it in): said so, the counts from the last valid spec.
    g["spec"]["match"] = json!({"names": ["ens["]});
    api.put(MAPS, g);
    until(3, "invalid spec reported", &api, || {
        status_writes(&api).last().unwrap().body["status"]["conditions"][0]["reason"]
            == "InvalidSpec"
    })
    .await;
    let s = &status_writes(&api).last().unwrap().body["status"].clone();
    assert_eq!(
        (&s["observedGeneration"], &s["resolved"]),
        (&json!(3), &json!("2/2"))
    );
    let message = s["conditions"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.match.names") && message.contains("last valid version"),
        "{message}"
    );
    // Labels stay: the nodes keep resolving the last valid version.
    assert_eq!(labels(&api, "n1")["network.surveyor.dev/green"], "true");
    c.stop().await;
}

#[tokio::test]
async fn a_node_losing_its_survey_is_unresolved_and_unlabelled_and_drift_is_repaired() {
    let api = fixture();
    let c = start(&api, Lead::Always, pace());
    until(5, "first writes", &api, || api.writes().len() == 3).await;
    // n2's NodeSurvey goes (its agent was removed from the node).
    api.delete(SURVEYS, "n2");
    until(3, "n2 unlabelled", &api, || {
        label_writes(&api, "n2").len() == 2
    })
    .await;
    assert_eq!(
        label_writes(&api, "n2")[1].body,
        json!({"metadata": {"labels": {"network.surveyor.dev/green": null}}})
    );
    assert_eq!(labels(&api, "n2"), json!({"rack": "r1"}));
    until(3, "n2 unresolved", &api, || status_writes(&api).len() == 2).await;
    let s = &status_writes(&api)[1].body["status"];
    assert_eq!(s["resolved"], "1/4");
    assert!(
        s["unresolved"].as_array().unwrap().iter().any(
            |u| u["node"] == "n2" && u["reason"].as_str().unwrap().starts_with("no NodeSurvey")
        )
    );
    // Someone removes n1's label by hand and adds one of their own: ours
    // comes back, theirs stays.
    api.put(NODES, node("n1", json!({"rack": "r1", "team": "storage"})));
    until(3, "n1 relabelled", &api, || {
        labels(&api, "n1")["network.surveyor.dev/green"] == "true"
    })
    .await;
    assert_eq!(
        labels(&api, "n1"),
        json!({"rack": "r1", "team": "storage", "network.surveyor.dev/green": "true"})
    );
    // A label of ours for a network the node does not have is removed
    // (an agent's from before the controller, or a hand's).
    api.put(
        NODES,
        node(
            "n3",
            json!({"rack": "r2", "network.surveyor.dev/red": "true"}),
        ),
    );
    until(3, "n3's stale label removed", &api, || {
        labels(&api, "n3") == json!({"rack": "r2"})
    })
    .await;
    // A Node deleted: no write to it, and it no longer counts.
    api.delete(NODES, "n4");
    until(3, "n4 no longer counted", &api, || {
        status_writes(&api).last().unwrap().body["status"]["selectedNodes"] == 3
    })
    .await;
    assert!(label_writes(&api, "n4").is_empty());
    settled(&api).await;
    c.stop().await;
}

#[tokio::test]
async fn failed_writes_are_retried_and_the_last_state_wins() {
    let api = fixture();
    api.fail_writes.store(4, Ordering::SeqCst);
    let c = start(&api, Lead::Always, pace());
    until(10, "written despite failures", &api, || {
        api.get(MAPS, "green").unwrap()["status"]["resolved"] == "2/4"
            && labels(&api, "n1")["network.surveyor.dev/green"] == "true"
            && labels(&api, "n2")["network.surveyor.dev/green"] == "true"
    })
    .await;
    assert!(
        c.metrics
            .encode()
            .contains("surveyor_controller_api_errors_total 4")
    );
    // The API down a while: nothing lost, caught up after.
    api.down.store(true, Ordering::SeqCst);
    api.put(
        SURVEYS,
        survey(
            "n3",
            &[nic("ens4", &["green"], None)],
            &[("green", Ok("ens4"))],
        ),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.down.store(false, Ordering::SeqCst);
    until(40, "caught up", &api, || {
        api.get(MAPS, "green").unwrap()["status"]["resolved"] == "3/4"
            && labels(&api, "n3")["network.surveyor.dev/green"] == "true"
    })
    .await;
    c.stop().await;
}

/// Two replicas: one writes; cut off from the API, it is replaced within
/// the lease duration (plus up to one retry period, a sixth of it, before
/// the follower looks again), and once back it writes nothing.
#[tokio::test]
async fn two_replicas_one_writer_and_a_takeover() {
    let api = fixture();
    let lease = |id: &str| Lead::Lease {
        identity: id.into(),
        duration: Duration::from_secs(3),
    };
    let a = start(&api, lease("replica-a"), pace());
    until(10, "a leads", &api, || a.is_leader()).await;
    let b = start(&api, lease("replica-b"), pace());
    until(10, "first writes", &api, || {
        api.writes_to("/status").len() == 1
    })
    .await;
    until(5, "labels", &api, || label_writes(&api, "n2").len() == 1).await;
    settled(&api).await;
    assert!(!b.is_leader());
    let writers = |from: usize| -> Vec<usize> {
        let mut w: Vec<usize> = object_writes(&api)[from..]
            .iter()
            .map(|r| r.client)
            .collect();
        w.dedup();
        w
    };
    assert_eq!(writers(0), [a.client], "only the leader writes");
    let lease_obj = api
        .get(support::fake_api::LEASES, "surveyor-controller")
        .unwrap();
    assert_eq!(lease_obj["spec"]["holderIdentity"], "replica-a");
    // Both serve the same picture.
    until(3, "b's view", &api, || {
        b.metrics.view().topology.nodes.len() == 4
    })
    .await;

    // a is cut off: it cannot renew.
    let from = object_writes(&api).len();
    let cut_at = tokio::time::Instant::now();
    a.cut.store(true, Ordering::SeqCst);
    until(10, "b takes over", &api, || b.is_leader()).await;
    let took = cut_at.elapsed();
    eprintln!("takeover after the leader was cut off: {took:?} (lease 3 s)");
    assert!(took <= Duration::from_millis(4500), "took {took:?}");
    // A change now is written by b alone.
    api.put(
        SURVEYS,
        survey(
            "n3",
            &[nic("ens4", &["green"], None)],
            &[("green", Ok("ens4"))],
        ),
    );
    until(5, "b writes", &api, || {
        api.get(MAPS, "green").unwrap()["status"]["resolved"] == "3/4"
            && labels(&api, "n3")["network.surveyor.dev/green"] == "true"
    })
    .await;
    // a comes back: it learns it lost the Lease and writes nothing.
    a.cut.store(false, Ordering::SeqCst);
    until(15, "a steps down", &api, || !a.is_leader()).await;
    settled(&api).await;
    let log: Vec<String> = object_writes(&api)[from..]
        .iter()
        .map(|r| format!("{} {} {}", r.client, r.path, r.body))
        .collect();
    assert_eq!(writers(from), [b.client], "{log:#?}");
    assert_declared_by(&api, API_REQUESTS);
    stop_all(vec![a, b]).await;
}

/// A rollout: the leader stops (SIGTERM) and gives the Lease up; the
/// standby takes over at its next retry, not a lease duration later.
#[tokio::test]
async fn a_stopping_leader_hands_over_at_once() {
    let api = fixture();
    let lease = |id: &str| Lead::Lease {
        identity: id.into(),
        duration: Duration::from_secs(6),
    };
    let a = start(&api, lease("replica-a"), pace());
    until(10, "a leads", &api, || a.is_leader()).await;
    let b = start(&api, lease("replica-b"), pace());
    until(5, "b synced", &api, || b.metrics.is_ready()).await;
    let t = tokio::time::Instant::now();
    a.stop().await;
    let lease_obj = api
        .get(support::fake_api::LEASES, "surveyor-controller")
        .unwrap();
    assert!(
        lease_obj["spec"].get("holderIdentity").is_none(),
        "released: {lease_obj}"
    );
    until(5, "b leads", &api, || b.is_leader()).await;
    let took = t.elapsed();
    eprintln!("handover on a graceful stop: {took:?} (lease 6 s, retry 1 s)");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let held = api
        .get(support::fake_api::LEASES, "surveyor-controller")
        .unwrap();
    assert_eq!(held["spec"]["holderIdentity"], "replica-b");
    assert_eq!(held["spec"]["leaseTransitions"], 2);
    b.stop().await;
}

async fn stop_all(all: Vec<Running>) {
    for c in all {
        c.stop().await;
    }
}

/// The real binary, as the Deployment runs it (user 65532: no root, no
/// capability), against the fake API over real HTTP (watches streamed):
/// it writes, serves, and on SIGTERM gives its Lease up and exits cleanly.
/// And `surveyor topology` reads the same cluster.
#[tokio::test]
async fn the_binary_runs_against_an_api_over_http_and_stops_cleanly() {
    let api = fixture();
    let addr = api.serve_http().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, support::fake_api::kubeconfig(addr)).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = env!("CARGO_BIN_EXE_surveyor");
    let mut child = std::process::Command::new(bin);
    child
        .args(["controller", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--lease-duration",
            "6s",
        ])
        .env("POD_NAME", "surveyor-controller-abc12")
        .env("POD_NAMESPACE", "surveyor")
        .stderr(std::process::Stdio::piped());
    std::os::unix::process::CommandExt::uid(&mut child, 65532);
    std::os::unix::process::CommandExt::gid(&mut child, 65532);
    let mut child = child.spawn().unwrap();
    until(15, "written by the process", &api, || {
        api.get(MAPS, "green")
            .is_some_and(|m| m["status"]["resolved"] == "2/4")
            && labels(&api, "n2")["network.surveyor.dev/green"] == "true"
    })
    .await;
    let lease = api
        .get(support::fake_api::LEASES, "surveyor-controller")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "surveyor-controller-abc12");
    // The picture is rebuilt on its own pace (settle after the last
    // change), so it may trail the writes by a moment.
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /topology.json HTTP/1.0\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            if text.contains("\"tor-green-01\"") || std::time::Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(body.contains("\"tor-green-01\""), "{body}");
    // SIGTERM: a clean exit, the Lease given up.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut err = String::new();
        use std::io::Read as _;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    })
    .await
    .unwrap();
    assert!(out.0.success(), "exit {:?}: {}", out.0, out.1);
    assert!(
        out.1.contains("gave Lease surveyor-controller up"),
        "{}",
        out.1
    );
    let lease = api
        .get(support::fake_api::LEASES, "surveyor-controller")
        .unwrap();
    assert!(lease["spec"].get("holderIdentity").is_none(), "{lease}");
    assert_declared_by(&api, API_REQUESTS);

    // `surveyor topology` from the same API.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["topology", "-o", "json", "--kubeconfig"])
            .arg(&kubeconfig)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: Vec<&str> = t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["n1", "n2", "n3", "n4"]);
    let n4 = &t["nodes"][3];
    assert_eq!(
        (&n4["surveyed"], &n4["unresolved"]),
        (&json!(false), &json!(["green"]))
    );
}

fn events(api: &FakeApi) -> Vec<Value> {
    api.writes()
        .into_iter()
        .filter(|r| r.path.starts_with(support::fake_api::EVENTS))
        .map(|r| r.body)
        .collect()
}

/// Events from the writing controller: a label someone removed put back
/// (on the Node), a map refused (on the NetworkMap), a DeviceClass someone
/// edited put back (on the NetworkMap, the class related); each once;
/// nothing at rest nor for a restart.
#[tokio::test]
async fn repairs_and_refusals_are_events_and_rest_is_silent() {
    use support::controller::start_events;
    use support::fake_api::DEVICE_CLASSES;
    let api = fixture();
    let c = start_events(&api, Lead::Always, pace(), true, true);
    until(5, "first writes", &api, || {
        labels(&api, "n1")["network.surveyor.dev/green"] == "true"
            && api.get(DEVICE_CLASSES, "green.surveyor.dev").is_some()
    })
    .await;
    settled(&api).await;
    assert!(
        events(&api).is_empty(),
        "first writes are not repairs: {:#?}",
        events(&api)
    );

    api.put(NODES, node("n1", json!({"rack": "r1"})));
    until(5, "LabelRepaired", &api, || !events(&api).is_empty()).await;
    let uid = api.get(NODES, "n1").unwrap()["metadata"]["uid"].clone();
    let e = &events(&api)[0];
    assert_eq!(e["reason"], "LabelRepaired");
    assert_eq!(e["type"], "Normal");
    assert_eq!(
        e["regarding"],
        json!({"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": uid})
    );
    assert_eq!(
        e["note"],
        "Node n1's network.surveyor.dev/* labels were changed by someone else; put back as its NodeSurvey says: network.surveyor.dev/green=true"
    );
    assert_eq!(e["reportingController"], "surveyor.dev/controller");

    let mut class = api.get(DEVICE_CLASSES, "green.surveyor.dev").unwrap();
    class["spec"] = json!({"selectors": [{"cel": {"expression": "true"}}]});
    api.put(DEVICE_CLASSES, class);
    until(5, "DeviceClassRepaired", &api, || events(&api).len() == 2).await;
    let map_uid = api.get(MAPS, "green").unwrap()["metadata"]["uid"].clone();
    let e = &events(&api)[1];
    assert_eq!(e["reason"], "DeviceClassRepaired");
    assert_eq!(
        e["regarding"],
        json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "NetworkMap", "name": "green", "uid": map_uid})
    );
    assert_eq!(
        e["related"],
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "name": "green.surveyor.dev"})
    );

    let mut g = green();
    g["spec"]["match"] = json!({"names": ["ens["]});
    api.put(MAPS, g);
    until(5, "MapRejected", &api, || events(&api).len() == 3).await;
    let e = &events(&api)[2];
    assert_eq!(e["reason"], "MapRejected");
    assert_eq!(e["type"], "Warning");
    assert!(
        e["note"].as_str().unwrap().contains("spec.match.names")
            && e["note"].as_str().unwrap().contains("last valid version"),
        "{e}"
    );
    settled(&api).await;
    assert_eq!(events(&api).len(), 3, "{:#?}", events(&api));
    c.stop().await;
    // A restarted controller finds it all as it left it: no Event.
    let c = start_events(&api, Lead::Always, pace(), true, true);
    settled(&api).await;
    assert_eq!(events(&api).len(), 3, "{:#?}", events(&api));
    c.stop().await;
    assert_declared_by(&api, API_REQUESTS);
}
