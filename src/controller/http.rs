//! The controller's endpoints: `/healthz`, `/readyz`, `/metrics`, and the
//! fabric at `/topology` (an HTML page holding the SVG, nothing loaded
//! from elsewhere) with `/topology.svg`, `/topology.json`, `/topology.dot`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;
use crate::topology;

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/topology", get(page))
        .route("/topology.svg", get(svg))
        .route("/topology.json", get(json))
        .route("/topology.dot", get(dot))
        .with_state(metrics)
}

/// Serves until the runtime stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("serving /topology, /metrics, /healthz and /readyz on {addr}");
    }
    axum::serve(listener, router(metrics)).await
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "NetworkMaps, Nodes and NodeSurveys not all listed yet\n",
        )
    }
}

async fn metrics_text(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, kind)], m.encode())
}

async fn page(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let view = m.view();
    let kind = "text/html; charset=utf-8";
    (
        [(header::CONTENT_TYPE, kind)],
        topology::html(&view.topology, &view.summary),
    )
}

async fn svg(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "image/svg+xml")],
        topology::svg(&m.view().topology),
    )
}

async fn json(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        topology::json(&m.view().topology),
    )
}

async fn dot(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let kind = "text/vnd.graphviz; charset=utf-8";
    (
        [(header::CONTENT_TYPE, kind)],
        topology::dot(&m.view().topology),
    )
}
