//! `/metrics` (Prometheus), `/healthz` and `/readyz` for the agent.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::attachment;
use crate::kubelet::Registration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShapedLabel {
    pub network: String,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectedLabel {
    pub protocol: &'static str,
    pub reason: &'static str,
}

/// Everything the agent counts. Counters only go up; the agent adds what
/// its components counted since the last look.
pub struct Metrics {
    registry: Registry,
    pub interfaces: Gauge,
    pub interfaces_up: Gauge,
    pub neighbors: Gauge,
    pub networks: Family<StateLabel, Gauge>,
    pub api_writes: Family<KindLabel, Counter>,
    pub api_errors: Counter,
    pub netlink_events: Counter,
    pub lldp_frames: Counter,
    pub lldp_rejected: Family<ReasonLabel, Counter>,
    pub neighbor_frames: Family<ProtocolLabel, Counter>,
    pub neighbor_rejected: Family<RejectedLabel, Counter>,
    pub snapshot_writes: Counter,
    pub state_errors: Counter,
    pub dra_left_out: Gauge,
    pub kubelet_registered: Gauge,
    pub events_published: Counter,
    pub events_dropped: Counter,
    pub shaped_attachments: Gauge,
    pub shaped_bandwidth: Family<ShapedLabel, Gauge>,
    /// The CNI plugin's attachment records, read at each scrape for the
    /// shaping gauges (`None`: not counted).
    attachments: std::sync::OnceLock<PathBuf>,
    ready: AtomicBool,
    /// Why the kubelet has not registered the DRA plugin, once that is
    /// overdue or refused.
    kubelet_problem: std::sync::Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("surveyor"),
            interfaces: Gauge::default(),
            interfaces_up: Gauge::default(),
            neighbors: Gauge::default(),
            networks: Family::default(),
            api_writes: Family::default(),
            api_errors: Counter::default(),
            netlink_events: Counter::default(),
            lldp_frames: Counter::default(),
            lldp_rejected: Family::default(),
            neighbor_frames: Family::default(),
            neighbor_rejected: Family::default(),
            snapshot_writes: Counter::default(),
            state_errors: Counter::default(),
            dra_left_out: Gauge::default(),
            kubelet_registered: Gauge::default(),
            events_published: Counter::default(),
            events_dropped: Counter::default(),
            shaped_attachments: Gauge::default(),
            shaped_bandwidth: Family::default(),
            attachments: std::sync::OnceLock::new(),
            ready: AtomicBool::new(false),
            kubelet_problem: std::sync::Mutex::new(None),
        };
        let r = &mut m.registry;
        r.register("interfaces", "Surveyed interfaces", m.interfaces.clone());
        r.register(
            "interfaces_up",
            "Surveyed interfaces up with carrier",
            m.interfaces_up.clone(),
        );
        r.register(
            "lldp_neighbors",
            "Surveyed interfaces with a neighbor (LLDP, CDP, EDP, FDP or SONMP)",
            m.neighbors.clone(),
        );
        r.register(
            "networks",
            "Networks mapped on this node, by state (resolved, unresolved)",
            m.networks.clone(),
        );
        r.register(
            "api_writes",
            "Kubernetes API writes, by kind (create, status, slice, slice_delete)",
            m.api_writes.clone(),
        );
        r.register(
            "api_errors",
            "Kubernetes API requests and watches that failed",
            m.api_errors.clone(),
        );
        r.register(
            "netlink_events",
            "Link events applied",
            m.netlink_events.clone(),
        );
        r.register(
            "lldp_frames",
            "LLDP frames received from neighbors",
            m.lldp_frames.clone(),
        );
        r.register(
            "lldp_frames_rejected",
            "LLDP frames refused, by reason (truncated, missing_tlv, misordered, duplicate_tlv, bad_length, empty_id, ...)",
            m.lldp_rejected.clone(),
        );
        r.register(
            "neighbor_frames",
            "Neighbor protocol frames received, by protocol (lldp, cdp, edp, fdp, sonmp)",
            m.neighbor_frames.clone(),
        );
        r.register(
            "neighbor_frames_rejected",
            "Neighbor protocol frames refused, by protocol and reason",
            m.neighbor_rejected.clone(),
        );
        r.register(
            "dra_left_out",
            "Devices, attributes and capacities left out of the ResourceSlice because they do not fit the API's limits (the log says which)",
            m.dra_left_out.clone(),
        );
        r.register(
            "kubelet_plugin_registered",
            "1 while the kubelet has the DRA plugin registered (--dra), else 0",
            m.kubelet_registered.clone(),
        );
        r.register(
            "events_published",
            "Kubernetes Events published about this node's NodeSurvey",
            m.events_published.clone(),
        );
        r.register(
            "events_dropped",
            "Events not published: over the node's budget (5 a minute), or refused by the API",
            m.events_dropped.clone(),
        );
        r.register(
            "shaped_attachments",
            "Pod interfaces on this node held to a rate (runtimeConfig.bandwidth or a DRA claim)",
            m.shaped_attachments.clone(),
        );
        r.register(
            "shaped_bandwidth_bits_per_second",
            "The rates pod interfaces on this node are held to, summed by network and direction (egress: pod to network)",
            m.shaped_bandwidth.clone(),
        );
        r.register(
            "snapshot_writes",
            "State dir files written",
            m.snapshot_writes.clone(),
        );
        r.register(
            "state_write_errors",
            "State dir writes that failed (disk full, read-only); retried",
            m.state_errors.clone(),
        );
        m
    }

    /// The counters the Events publisher keeps.
    pub fn event_counters(&self) -> crate::events::EventCounters {
        crate::events::EventCounters {
            published: self.events_published.clone(),
            dropped: self.events_dropped.clone(),
        }
    }

    /// What the kubelet says of the DRA plugin: the gauge, and readiness
    /// once it is overdue or refused.
    pub fn set_kubelet(&self, registration: &Registration) {
        self.kubelet_registered
            .set(i64::from(*registration == Registration::Registered));
        let problem = (!registration.is_healthy()).then(|| match registration {
            Registration::Refused(why) => format!("the kubelet refused the DRA plugin: {why}"),
            _ => "the kubelet has not registered the DRA plugin (see the NodeSurvey's KubeletPlugin condition)".to_string(),
        });
        *self
            .kubelet_problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = problem;
    }

    /// Why the agent is not ready, if it is not.
    pub fn unready(&self) -> Option<String> {
        if !self.is_ready() {
            return Some("no snapshot written yet".into());
        }
        self.kubelet_problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Ready once the first snapshot is written.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Counts shaped attachments from the CNI plugin's records in `dir`
    /// (read at each scrape: they change with every pod, and a scrape is
    /// rarer than that).
    pub fn count_shaping_in(&self, dir: PathBuf) {
        let _ = self.attachments.set(dir);
    }

    /// Reads the records again into the shaping gauges.
    fn refresh_shaping(&self) {
        let Some(dir) = self.attachments.get() else {
            return;
        };
        let scan = match attachment::scan(dir) {
            Ok(scan) => scan,
            Err(e) => {
                tracing::debug!("cannot read {}: {e}", dir.display());
                return;
            }
        };
        let totals = attachment::shaped_totals(&scan.attachments);
        self.shaped_attachments
            .set(i64::try_from(totals.attachments).unwrap_or(i64::MAX));
        self.shaped_bandwidth.clear();
        for ((network, direction), bits) in totals.bandwidth {
            self.shaped_bandwidth
                .get_or_create(&ShapedLabel {
                    network,
                    direction: direction.as_str(),
                })
                .set(i64::try_from(bits).unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Raises a counter to `total` (a component's own running count).
pub fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// Serves the endpoints on `listener` until the runtime stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("serving /healthz, /readyz and /metrics on {addr}");
    }
    axum::serve(listener, app).await
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.unready() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn metrics_text(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let reader = m.clone();
    let _ = tokio::task::spawn_blocking(move || reader.refresh_shaping()).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_catching_up() {
        let m = Metrics::new();
        m.interfaces.set(3);
        m.networks
            .get_or_create(&StateLabel { state: "resolved" })
            .set(2);
        m.api_writes
            .get_or_create(&KindLabel { kind: "status" })
            .inc();
        catch_up(&m.netlink_events, 5);
        catch_up(&m.netlink_events, 4);
        assert_eq!(m.netlink_events.get(), 5);
        let text = m.encode();
        for line in [
            "surveyor_interfaces 3",
            "surveyor_networks{state=\"resolved\"} 2",
            "surveyor_api_writes_total{kind=\"status\"} 1",
            "surveyor_netlink_events_total 5",
            "surveyor_api_errors_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!m.is_ready());
        m.set_ready();
        assert!(m.is_ready());
    }

    #[test]
    fn shaped_attachments_are_counted_from_the_records_at_each_scrape() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new();
        m.refresh_shaping();
        assert!(
            m.encode()
                .lines()
                .any(|l| l == "surveyor_shaped_attachments 0")
        );
        m.count_shaping_in(dir.path().to_path_buf());
        let record = |name: &str, network: &str, shaped: serde_json::Value| {
            let mut r = serde_json::json!({"podUid": "p", "network": network, "device": "ens4",
                "interface": "net1", "claimed": false});
            if !shaped.is_null() {
                r["shaped"] = shaped;
            }
            std::fs::write(dir.path().join(name), r.to_string()).unwrap();
        };
        let limit =
            |rate: u64| serde_json::json!({"rate": rate, "burst": 524_288, "source": "claim"});
        record(
            "a:net1.json",
            "green",
            serde_json::json!({"egress": limit(2_000_000_000), "ingress": limit(1_000_000_000)}),
        );
        record(
            "b:net1.json",
            "green",
            serde_json::json!({"egress": limit(4_000_000_000u64)}),
        );
        record("c:net1.json", "blue", serde_json::Value::Null);
        m.refresh_shaping();
        let text = m.encode();
        for line in [
            "surveyor_shaped_attachments 2",
            "surveyor_shaped_bandwidth_bits_per_second{network=\"green\",direction=\"egress\"} 6000000000",
            "surveyor_shaped_bandwidth_bits_per_second{network=\"green\",direction=\"ingress\"} 1000000000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // Pods gone: the gauges follow.
        for f in ["a:net1.json", "b:net1.json"] {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
        m.refresh_shaping();
        let text = m.encode();
        assert!(
            text.lines().any(|l| l == "surveyor_shaped_attachments 0"),
            "{text}"
        );
        assert!(!text.contains("network=\"green\""), "{text}");
    }
}
