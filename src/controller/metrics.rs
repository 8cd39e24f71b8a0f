//! What the controller counts and shows: Prometheus metrics, readiness,
//! and the latest picture of the fabric (served by [`super::http`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::topology::Topology;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabel {
    pub map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// The fabric as last built, with each map's `resolved/selected`.
#[derive(Debug, Default)]
pub struct View {
    pub topology: Topology,
    pub summary: Vec<(String, String)>,
}

pub struct Metrics {
    registry: Registry,
    pub leader: Gauge,
    pub maps: Gauge,
    pub nodes: Gauge,
    pub surveys: Gauge,
    pub selected: Family<MapLabel, Gauge>,
    pub resolved: Family<MapLabel, Gauge>,
    pub unresolved: Family<MapLabel, Gauge>,
    pub writes: Family<KindLabel, Counter>,
    pub api_errors: Counter,
    pub events_published: Counter,
    pub events_dropped: Counter,
    ready: AtomicBool,
    view: watch::Sender<Arc<View>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("surveyor_controller"),
            leader: Gauge::default(),
            maps: Gauge::default(),
            nodes: Gauge::default(),
            surveys: Gauge::default(),
            selected: Family::default(),
            resolved: Family::default(),
            unresolved: Family::default(),
            writes: Family::default(),
            api_errors: Counter::default(),
            events_published: Counter::default(),
            events_dropped: Counter::default(),
            ready: AtomicBool::new(false),
            view: watch::Sender::new(Arc::new(View::default())),
        };
        let r = &mut m.registry;
        r.register(
            "leader",
            "1 while this replica holds the Lease and writes",
            m.leader.clone(),
        );
        r.register("networkmaps", "NetworkMaps known", m.maps.clone());
        r.register("nodes", "Nodes known", m.nodes.clone());
        r.register("nodesurveys", "NodeSurveys known", m.surveys.clone());
        r.register(
            "selected_nodes",
            "Nodes each NetworkMap selects",
            m.selected.clone(),
        );
        r.register(
            "resolved_nodes",
            "Selected nodes where each NetworkMap has a device",
            m.resolved.clone(),
        );
        r.register(
            "unresolved_nodes",
            "Selected nodes where each NetworkMap has no device (or no agent)",
            m.unresolved.clone(),
        );
        r.register(
            "writes",
            "Kubernetes API writes, by kind (status, labels)",
            m.writes.clone(),
        );
        r.register(
            "api_errors",
            "Kubernetes API requests and watches that failed",
            m.api_errors.clone(),
        );
        r.register(
            "events_published",
            "Kubernetes Events published (a refused map, a label or DeviceClass put back)",
            m.events_published.clone(),
        );
        r.register(
            "events_dropped",
            "Events not published: over the budget, or refused by the API",
            m.events_dropped.clone(),
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

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Ready once NetworkMaps, Nodes and NodeSurveys have all been listed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn publish(&self, view: View) {
        self.view.send_replace(Arc::new(view));
    }

    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// Waits until a view newer than the one last returned is published.
    pub fn views(&self) -> watch::Receiver<Arc<View>> {
        self.view.subscribe()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let m = Metrics::new();
        m.leader.set(1);
        m.resolved
            .get_or_create(&MapLabel {
                map: "green".into(),
            })
            .set(47);
        m.writes.get_or_create(&KindLabel { kind: "status" }).inc();
        let text = m.encode();
        for line in [
            "surveyor_controller_leader 1",
            "surveyor_controller_resolved_nodes{map=\"green\"} 47",
            "surveyor_controller_writes_total{kind=\"status\"} 1",
            "surveyor_controller_api_errors_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
