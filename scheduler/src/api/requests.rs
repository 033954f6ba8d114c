//! Reading and cancelling a request. Status is aggregated from the job records the workers write.

use axum::extract::{Path, State};
use axum::Extension;
use rapid_fleet::jobs::{final_event, notify_if_request_done};
use rapid_fleet::state::now_ms;
use rapid_proto::{JobRecord, JobStatus, RequestRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Tenant;
use super::error::{ApiError, ErrorBody};
use super::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Queued,
    Running,
    Succeeded,
    /// Some images succeeded, others failed.
    Partial,
    Failed,
    Cancelled,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RequestView {
    pub request_id: String,
    /// `generation`, `fashion_design` or `cuisine_menu`.
    pub kind: String,
    pub status: RequestStatus,
    pub progress: ProgressView,
    pub prompts: Vec<String>,
    pub created_ms: u64,
    pub jobs: Vec<JobView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProgressView {
    pub jobs_total: usize,
    pub jobs_finished: usize,
    /// Denoising steps done over all jobs, and in all (known once each job has started).
    pub steps_done: u64,
    pub steps_total: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub prompt: String,
    pub seed: u64,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = String)]
    pub status: JobStatus,
    pub step: u32,
    pub total_steps: u32,
    pub attempts: u32,
    pub error: Option<String>,
    /// When the latest attempt started running (Unix ms).
    pub started_ms: Option<u64>,
    /// Knowledge-graph entities linked in the prompts (`role`, `entity`, `text`).
    #[schema(value_type = Vec<Object>)]
    pub entities: Vec<rapid_proto::EntityLink>,
    /// How many jobs shared this job's U-Net calls when it succeeded (cross-request batching,
    /// worker setting `max_batch`); 1 = it ran alone.
    pub batch_size: Option<u32>,
    pub images: Vec<ImageView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImageView {
    pub key: String,
    /// Presigned download URL (a `file://` URL in standalone mode).
    pub url: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

#[utoipa::path(get, path = "/v1/requests/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "request id from the submission")),
    responses((status = 200, body = RequestView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_request(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<axum::Json<RequestView>, ApiError> {
    let request = owned_request(&state, &tenant, &id).await?;
    Ok(axum::Json(view(&state, &request).await?))
}

#[utoipa::path(delete, path = "/v1/requests/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "request id from the submission")),
    responses((status = 200, body = RequestView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn cancel_request(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<axum::Json<RequestView>, ApiError> {
    let request = owned_request(&state, &tenant, &id).await?;
    state.state.cancel(&request).await?;
    // Queued jobs end now; running ones stop at their next step (their worker sees the flag).
    for record in state.state.jobs(&request.job_ids).await?.into_iter().flatten() {
        if record.status == JobStatus::Queued {
            let cancelled = JobRecord { status: JobStatus::Cancelled, updated_ms: now_ms(), ..record };
            state.state.put_job(&cancelled).await?;
            state.state.append_event(&final_event(&cancelled)).await?;
            notify_if_request_done(&state.state, &state.queue, &request, &cancelled.id).await?;
        }
    }
    tracing::info!(request = %id, tenant, "request cancelled");
    state.metrics.cancelled();
    Ok(axum::Json(view(&state, &request).await?))
}

/// The request's event log, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventsView {
    pub request_id: String,
    /// `{job_id, at_ms, kind: {type: started|step|succeeded|failed|cancelled, ...}, timings_ms}`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<rapid_proto::Event>,
}

#[utoipa::path(get, path = "/v1/requests/{id}/events", security(("bearer" = [])),
    params(("id" = String, Path, description = "request id from the submission")),
    responses((status = 200, body = EventsView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn request_events(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<axum::Json<EventsView>, ApiError> {
    let request = owned_request(&state, &tenant, &id).await?;
    Ok(axum::Json(EventsView { events: state.state.events(&request.id).await?, request_id: request.id }))
}

/// The request if it exists and belongs to `tenant`; another tenant's request is "not found".
async fn owned_request(state: &AppState, tenant: &str, id: &str) -> Result<RequestRecord, ApiError> {
    match state.state.request(id).await? {
        Some(request) if request.tenant == tenant => Ok(request),
        _ => Err(ApiError::NotFound(id.to_owned())),
    }
}

/// The aggregated view of a request, with download URLs (used by GET and by callbacks).
pub async fn view(state: &AppState, request: &RequestRecord) -> Result<RequestView, ApiError> {
    let records = state.state.jobs(&request.job_ids).await?;
    let mut jobs = Vec::with_capacity(records.len());
    for (id, record) in request.job_ids.iter().zip(records) {
        let record =
            record.ok_or_else(|| ApiError::Internal(format!("job {id} of request {} has no record", request.id)))?;
        let mut images = Vec::with_capacity(record.images.len());
        for image in &record.images {
            let url = state
                .store
                .download_url(&image.key, state.presign_expiry)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?;
            images.push(ImageView {
                key: image.key.clone(),
                url,
                width: image.width,
                height: image.height,
                bytes: image.bytes,
            });
        }
        jobs.push(JobView {
            id: record.id,
            prompt: record.prompt,
            seed: record.seed,
            status: record.status,
            step: record.step,
            total_steps: record.total_steps,
            attempts: record.attempts,
            error: record.error,
            started_ms: record.started_ms,
            entities: record.entities,
            batch_size: record.batch_size,
            images,
        });
    }
    let progress = ProgressView {
        jobs_total: jobs.len(),
        jobs_finished: jobs.iter().filter(|j| j.status.is_final()).count(),
        steps_done: jobs.iter().map(|j| u64::from(j.step)).sum(),
        steps_total: jobs.iter().map(|j| u64::from(j.total_steps)).sum(),
    };
    Ok(RequestView {
        request_id: request.id.clone(),
        kind: request.kind.name().to_owned(),
        status: aggregate(jobs.iter().map(|j| j.status)),
        progress,
        prompts: request.prompts.clone(),
        created_ms: request.created_ms,
        jobs,
    })
}

/// One status for many jobs: unfinished while any job is; then succeeded, cancelled (if any job
/// was), failed (if none succeeded) or partial.
pub fn aggregate(statuses: impl Iterator<Item = JobStatus> + Clone) -> RequestStatus {
    let count = |wanted: JobStatus| statuses.clone().filter(|s| *s == wanted).count();
    let total = statuses.clone().count();
    let (queued, running, succeeded) =
        (count(JobStatus::Queued), count(JobStatus::Running), count(JobStatus::Succeeded));
    if running > 0 || (queued > 0 && queued < total) {
        RequestStatus::Running
    } else if queued > 0 {
        RequestStatus::Queued
    } else if succeeded == total {
        RequestStatus::Succeeded
    } else if count(JobStatus::Cancelled) > 0 {
        RequestStatus::Cancelled
    } else if succeeded == 0 {
        RequestStatus::Failed
    } else {
        RequestStatus::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    #[test]
    fn aggregate_follows_the_documented_order() {
        let of = |s: &[JobStatus]| aggregate(s.iter().copied());
        assert_eq!(of(&[Queued, Queued]), RequestStatus::Queued);
        assert_eq!(of(&[Succeeded, Queued]), RequestStatus::Running);
        assert_eq!(of(&[Running, Queued]), RequestStatus::Running);
        assert_eq!(of(&[Succeeded, Succeeded]), RequestStatus::Succeeded);
        assert_eq!(of(&[Succeeded, Cancelled]), RequestStatus::Cancelled);
        assert_eq!(of(&[Failed, Failed]), RequestStatus::Failed);
        assert_eq!(of(&[Succeeded, Failed]), RequestStatus::Partial);
    }
}
