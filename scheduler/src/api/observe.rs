//! The metrics middleware: each answered request's latency by route, method and status, and each
//! refusal by its reason (which `error::ApiError` leaves in the response's extensions).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::metrics::Rejection;

pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Only matched routes reach a `route_layer`, so the pattern is always there.
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.http_request(&route, &method, response.status().as_u16(), started.elapsed());
    if let Some(rejection) = response.extensions().get::<Rejection>() {
        state.metrics.rejected(*rejection);
    }
    response
}
