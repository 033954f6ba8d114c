//! Liveness, readiness and Prometheus metrics (no authentication: they carry no tenant data).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use rapid_fleet::queue::Topic;

use super::AppState;

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process is up")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the state store and the broker answer.
#[utoipa::path(get, path = "/readyz", responses((status = 200), (status = 503)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if let Err(e) = state.state.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("state store: {e}"));
    }
    if let Err(e) = state.queue.depth(Topic::Jobs).await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("queue: {e}"));
    }
    (StatusCode::OK, "ready".to_owned())
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(ready) = state.queue.depth(Topic::Jobs).await {
        let mut lanes = Vec::with_capacity(state.lanes.len());
        for lane in state.lanes.iter() {
            match state.queue.lane_depth(lane).await {
                Ok(depth) => lanes.push((lane, depth)),
                Err(error) => tracing::warn!(%error, tenant = %lane.tenant, "metrics: cannot read a lane's depth"),
            }
        }
        state.metrics.set_queue_depths(ready, &lanes);
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
}
