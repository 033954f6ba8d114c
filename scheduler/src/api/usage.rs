//! `GET /v1/usage`: a tenant's quota counters and limits, so a backend can pace itself instead of
//! learning its limits from 429s.

use axum::extract::State;
use axum::Extension;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Tenant;
use super::error::{ApiError, ErrorBody};
use super::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    pub tenant: String,
    /// Requests accepted in the current minute (UTC).
    pub requests_this_minute: u32,
    /// Images accepted and not yet ended (succeeded, failed, cancelled or dead-lettered).
    pub images_in_flight: u32,
    /// Images accepted today (UTC).
    pub images_today: u32,
    /// The configured limits; absent = unlimited.
    pub limits: LimitsView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LimitsView {
    pub requests_per_minute: Option<u32>,
    pub images_in_flight: Option<u32>,
    pub images_per_day: Option<u32>,
}

#[utoipa::path(get, path = "/v1/usage", security(("bearer" = [])),
    responses((status = 200, body = UsageView), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn usage(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
) -> Result<axum::Json<UsageView>, ApiError> {
    let counts = state.state.usage(&tenant).await?;
    let quota = state.quotas.get(&tenant).copied().unwrap_or_default();
    Ok(axum::Json(UsageView {
        tenant,
        requests_this_minute: counts.requests_this_minute,
        images_in_flight: counts.images_in_flight,
        images_today: counts.images_today,
        limits: LimitsView {
            requests_per_minute: quota.requests_per_minute,
            images_in_flight: quota.images_in_flight,
            images_per_day: quota.images_per_day,
        },
    }))
}
