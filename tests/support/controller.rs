//! Running `surveyor controller` against the fake API (support/fake_api.rs),
//! and cluster fixtures: Nodes, NodeSurveys as agents write them, maps.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{Value, json};
use surveyor::controller::leader::{Leadership, LeaseConfig};
use surveyor::controller::metrics::Metrics;
use surveyor::controller::{self, Pace, Sources};
use tokio::sync::oneshot;

use super::fake_api::{FakeApi, MAPS, NODES, SURVEYS};

/// One interface of a fixture node.
pub struct Nic<'a> {
    pub name: &'a str,
    pub networks: &'a [&'a str],
    /// (LLDP system name, or a chassis MAC when none is sent; port ID).
    pub switch: Option<(&'a str, &'a str)>,
}

pub fn nic<'a>(
    name: &'a str,
    networks: &'a [&'a str],
    switch: Option<(&'a str, &'a str)>,
) -> Nic<'a> {
    Nic {
        name,
        networks,
        switch,
    }
}

/// A NodeSurvey as node `node`'s agent writes it: its interfaces, and per
/// network the device (`Ok`) or why there is none (`Err`).
pub fn survey(node: &str, nics: &[Nic], networks: &[(&str, Result<&str, &str>)]) -> Value {
    let interfaces: Vec<Value> = nics
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut iface = json!({
                "name": n.name, "index": i + 2, "mac": format!("52:54:00:00:{:02x}:{:02x}", node.len() % 256, i),
                "kind": "physical", "operState": "up", "carrier": true, "mtu": 1500,
                "networks": n.networks,
            });
            if let Some((switch, port)) = n.switch {
                let by_chassis = switch.contains(':');
                let mut lldp = json!({
                    "chassisId": {"subtype": "mac", "value": if by_chassis { switch.to_string() } else { format!("chassis-{switch}") }},
                    "portId": {"subtype": "ifname", "value": port},
                    "ttlSeconds": 120,
                });
                if !by_chassis {
                    lldp["systemName"] = json!(switch);
                }
                iface["lldp"] = lldp;
            }
            iface
        })
        .collect();
    let mut nets = serde_json::Map::new();
    for (name, result) in networks {
        let status = match result {
            Ok(device) => json!({"device": device, "candidates": [device], "rule": "match"}),
            Err(reason) => json!({"candidates": [], "reason": reason}),
        };
        nets.insert(name.to_string(), status);
    }
    let resolved: Vec<&str> = networks
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| *n)
        .collect();
    json!({
        "apiVersion": "surveyor.dev/v1alpha1", "kind": "NodeSurvey",
        "metadata": {"name": node},
        "status": {
            "summary": {"interfaces": nics.len(), "up": nics.len(),
                "neighbors": nics.iter().filter(|n| n.switch.is_some()).count(),
                "networks": resolved.join(",")},
            "interfaces": interfaces,
            "networks": nets,
        },
    })
}

/// A NetworkMap object.
pub fn network_map(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "surveyor.dev/v1alpha1", "kind": "NetworkMap",
        "metadata": {"name": name}, "spec": spec})
}

/// A fake API holding these maps, Nodes (with labels) and NodeSurveys.
pub fn cluster<N: AsRef<str>>(
    maps: Vec<Value>,
    nodes: Vec<(N, Value)>,
    surveys: Vec<Value>,
) -> FakeApi {
    let api = FakeApi::default();
    for m in maps {
        api.put(MAPS, m);
    }
    for (name, labels) in nodes {
        api.put(NODES, super::fake_api::node(name.as_ref(), labels));
    }
    for s in surveys {
        api.put(SURVEYS, s);
    }
    api
}

/// How a controller under test leads.
#[derive(Clone, Debug)]
pub enum Lead {
    Always,
    Lease {
        identity: String,
        duration: Duration,
    },
}

/// A running controller.
pub struct Running {
    pub metrics: Arc<Metrics>,
    /// Cuts this controller's client off the API.
    pub cut: Arc<AtomicBool>,
    /// The index of its client in the API's record.
    pub client: usize,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn is_leader(&self) -> bool {
        self.metrics.leader.get() == 1
    }

    /// Stops it (giving its Lease up) and waits.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Starts a controller on its own client of `api` (inside a runtime).
pub fn start(api: &FakeApi, lead: Lead, pace: Pace) -> Running {
    start_with(api, lead, pace, false)
}

/// [`start`], keeping DeviceClasses when `dra`.
pub fn start_with(api: &FakeApi, lead: Lead, pace: Pace, dra: bool) -> Running {
    start_events(api, lead, pace, dra, false)
}

/// [`start_with`], publishing Events when `events`.
pub fn start_events(api: &FakeApi, lead: Lead, pace: Pace, dra: bool, events: bool) -> Running {
    let (client, cut) = api.serve_cuttable();
    let id = api.clients() - 1;
    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = oneshot::channel::<()>();
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        let leadership = match lead {
            Lead::Always => Leadership::always(),
            Lead::Lease { identity, duration } => {
                let config = LeaseConfig {
                    namespace: "surveyor".into(),
                    identity,
                    duration,
                };
                Leadership::campaign(client.clone(), config).unwrap()
            }
        };
        let sources = Sources::watch(&client, dra);
        let events = events.then(|| {
            surveyor::events::Events::spawn(
                client.clone(),
                kube::runtime::events::Reporter {
                    controller: surveyor::cli::controller::CONTROLLER_REPORTER.into(),
                    instance: Some("replica-a".into()),
                },
                surveyor::events::Budget::new(
                    10,
                    Duration::from_secs(6),
                    std::time::Instant::now(),
                ),
                m.event_counters(),
            )
        });
        controller::run(
            client,
            sources,
            leadership.receiver(),
            pace,
            m,
            events,
            async move {
                let _ = stopped.await;
            },
        )
        .await;
        leadership.release().await;
    });
    Running {
        metrics,
        cut,
        client: id,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Writes are paced as in production, with a shorter settle time.
pub fn pace() -> Pace {
    Pace {
        settle: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        ..Pace::default()
    }
}

/// Waits up to `secs` for `cond`, polling.
pub async fn until(secs: u64, what: &str, api: &FakeApi, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {secs} s; writes: {:#?}",
            api.writes()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The switches of [`fabric`], in column order: three with names and one
/// known by chassis ID only.
pub const FABRIC_SWITCHES: [&str; 4] = [
    "tor-green-01",
    "tor-blue-01",
    "00:1c:73:00:00:03",
    "mgmt-sw-01",
];

/// A rack of `n` nodes (`node01`...), 4 NICs each: ens1 to tor-green-01
/// (green), ens2 to tor-blue-01 (blue), ens3 to a switch that sends only
/// its chassis ID (storage), ens4 to mgmt-sw-01 (no map). With the day's
/// troubles: node17's ens2 down (blue unresolved), node33 hears no LLDP
/// (green, blue, storage unresolved), node42's ens4 cabled to a lab switch
/// no one else sees, and the last node has no agent.
pub fn fabric(n: usize) -> FakeApi {
    let maps = vec![
        network_map(
            "green",
            json!({"match": {"lldp": {"systemName": "tor-green-*"}}}),
        ),
        network_map(
            "blue",
            json!({"match": {"lldp": {"systemName": "tor-blue-*"}}}),
        ),
        network_map(
            "storage",
            json!({"match": {"lldp": {"chassisId": "00:1c:73:*"}}}),
        ),
    ];
    let mut nodes = Vec::new();
    let mut surveys = Vec::new();
    for i in 1..=n {
        let name = format!("node{i:02}");
        nodes.push((name.clone(), json!({"rack": "r1"})));
        if i == n {
            continue; // no agent
        }
        let port = format!("Ethernet1/{i}");
        let mgmt = if i == 42 { "lab-sw-99" } else { "mgmt-sw-01" };
        let deaf = i == 33;
        let sw = |s: &'static str| (!deaf).then_some(s);
        let (green, blue, storage): (&[&str], &[&str], &[&str]) = if deaf {
            (&[], &[], &[])
        } else if i == 17 {
            (&["green"], &[], &["storage"])
        } else {
            (&["green"], &["blue"], &["storage"])
        };
        let nics = [
            nic(
                "ens1",
                green,
                sw("tor-green-01").map(|s| (s, port.as_str())),
            ),
            nic("ens2", blue, sw("tor-blue-01").map(|s| (s, port.as_str()))),
            nic(
                "ens3",
                storage,
                sw("00:1c:73:00:00:03").map(|s| (s, port.as_str())),
            ),
            nic("ens4", &[], (!deaf).then_some((mgmt, "Gi1/0/1"))),
        ];
        let no_lldp = "no surveyed interface matches spec.match: ens1 fails lldp (no neighbor)";
        let results: Vec<(&str, Result<&str, &str>)> = if deaf {
            vec![
                ("green", Err(no_lldp)),
                ("blue", Err(no_lldp)),
                ("storage", Err(no_lldp)),
            ]
        } else if i == 17 {
            vec![
                ("green", Ok("ens1")),
                ("blue", Err("ens2 matches but is down")),
                ("storage", Ok("ens3")),
            ]
        } else {
            vec![
                ("green", Ok("ens1")),
                ("blue", Ok("ens2")),
                ("storage", Ok("ens3")),
            ]
        };
        let mut s = survey(&name, &nics, &results);
        if i == 17 {
            s["status"]["interfaces"][1]["operState"] = json!("down");
            s["status"]["interfaces"][1]["carrier"] = json!(false);
        }
        surveys.push(s);
    }
    cluster(maps, nodes, surveys)
}
