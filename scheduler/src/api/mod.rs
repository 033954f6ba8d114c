//! The HTTP API of DESIGN.md. [`app`] builds the whole router from an [`AppState`], so tests and
//! standalone mode drive exactly what `serve` runs.

pub mod auth;
pub mod backpressure;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod observe;
pub mod requests;
pub mod submit;
pub mod usage;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use rapid_fleet::queue::{Lane, Queue};
use rapid_fleet::state::{Quota, StateStore};
use rapid_fleet::storage::ObjectStore;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::config::SchedulerConfig;
use crate::metrics::Metrics;
use crate::policy::PromptPolicy;
use crate::prompts::PromptGenerator;

/// Everything a handler needs; cheap to clone (all shared).
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<SchedulerConfig>,
    pub keys: auth::ApiKeys,
    pub state: StateStore,
    pub queue: Queue,
    pub store: ObjectStore,
    pub prompts: Arc<PromptGenerator>,
    pub policy: Arc<PromptPolicy>,
    /// Each tenant's limits, by name.
    pub quotas: Arc<HashMap<String, Quota>>,
    /// Every tenant's lanes, for the backlog metrics and backpressure.
    pub lanes: Arc<Vec<Lane>>,
    pub backlog: Arc<backpressure::Backlog>,
    pub metrics: Arc<Metrics>,
    /// Validity of presigned image URLs.
    pub presign_expiry: Duration,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Rapid Diffusion scheduler", description = "Submit text-to-image work and follow it."),
    paths(
        submit::generations,
        submit::fashion_designs,
        submit::cuisine_menus,
        requests::get_request,
        requests::cancel_request,
        requests::request_events,
        usage::usage,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn app(state: AppState) -> Router {
    let tenant_routes = Router::new()
        .route("/v1/generations", post(submit::generations))
        .route("/v1/fashion/designs", post(submit::fashion_designs))
        .route("/v1/cuisine/menus", post(submit::cuisine_menus))
        .route("/v1/requests/{id}", get(requests::get_request).delete(requests::cancel_request))
        .route("/v1/requests/{id}/events", get(requests::request_events))
        .route("/v1/usage", get(usage::usage))
        // The last layer added runs first: authentication, then idempotency (whose keys are per
        // tenant). Both wrap only the tenant routes; health and metrics stay open for probes.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::replay_or_run))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_tenant));
    let body_limit = state.config.limits.max_body_bytes;
    Router::new()
        .merge(tenant_routes)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(|| async { axum::Json(ApiDoc::openapi()) }))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe::observe))
        // Unknown paths and methods answer in the API's error shape too, not with an empty body.
        .fallback(|| async { error::ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
        // Bodies over the limit get the API's 413 from the JSON extractor (`error::Json`).
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// Each API request's span, a child of the caller's trace when it sent a W3C `traceparent`; the
/// jobs the request makes carry the same trace to the workers and onto the stored images.
fn request_span(request: &axum::extract::Request) -> tracing::Span {
    let span = tracing::info_span!("request", method = %request.method(), uri = %request.uri());
    let traceparent = request.headers().get(rapid_fleet::telemetry::TRACEPARENT).and_then(|v| v.to_str().ok());
    if let Some(traceparent) = traceparent {
        rapid_fleet::telemetry::continue_trace(&span, traceparent);
    }
    span
}
