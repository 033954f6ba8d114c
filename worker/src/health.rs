//! The worker's own small HTTP endpoint (`worker.listen`): liveness, readiness and metrics for
//! Kubernetes probes and Prometheus. Off unless configured: a worker needs no port to work.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::WorkerMetrics;

/// Serves until the process ends. The worker starts it before loading its models, so a port
/// already in use stops it at once, and `/livez` answers during a long load while `/readyz` does
/// not.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<WorkerMetrics>) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/livez", get(|| async { "alive" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(metrics);
    axum::serve(listener, app).await
}

/// Ready while the worker is subscribed to the jobs queue, which it does only once its models are
/// loaded and warm; not ready while it waits for the broker to come back.
async fn readyz(State(metrics): State<Arc<WorkerMetrics>>) -> impl IntoResponse {
    if metrics.is_subscribed() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not subscribed to the jobs queue")
    }
}

async fn render_metrics(State(metrics): State<Arc<WorkerMetrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.render())
}
