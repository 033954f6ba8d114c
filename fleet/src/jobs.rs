//! A job's records and events as every part of the fleet writes them: the record a queued job
//! starts with, the events that mark its progress and end, and the callback a finished request
//! queues. Workers write them as jobs run; the scheduler writes them when it queues or cancels.

use rapid_proto::{Event, EventKind, Job, JobRecord, JobStatus, RequestFinished, RequestRecord, SCHEMA_VERSION};

use crate::queue::{Queue, QueueError, Topic};
use crate::state::{now_ms, StateError, StateStore};

/// The broker or Redis failed: what stops a worker's loop (job failures never do) and what the
/// scheduler reports as "unavailable".
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Records a job's end; when it was the request's last, queues the client's callback (if any).
/// Shared by workers (a job ran) and the scheduler (a cancel ended queued jobs).
pub async fn notify_if_request_done(
    state: &StateStore,
    queue: &Queue,
    request: &RequestRecord,
    job_id: &str,
) -> Result<(), BackendError> {
    if state.finish_job(request, job_id).await? {
        tracing::info!(request = %request.id, "request finished");
        if let Some(callback_url) = &request.callback_url {
            let message = RequestFinished {
                v: SCHEMA_VERSION,
                request_id: request.id.clone(),
                tenant: request.tenant.clone(),
                callback_url: callback_url.clone(),
                attempt: 0,
            };
            queue.publish(Topic::Callbacks, &rapid_proto::encode(&message), 5).await?;
        }
    }
    Ok(())
}

/// An event about the job `record` describes, stamped now.
pub fn event(record: &JobRecord, kind: EventKind) -> Event {
    Event {
        v: SCHEMA_VERSION,
        job_id: record.id.clone(),
        request_id: record.request_id.clone(),
        at_ms: now_ms(),
        kind,
        timings_ms: Vec::new(),
    }
}

/// The event that ends a job, from its final record.
pub fn final_event(record: &JobRecord) -> Event {
    let kind = match record.status {
        JobStatus::Succeeded => {
            EventKind::Succeeded { images: record.images.clone(), entities: record.entities.clone() }
        }
        JobStatus::Cancelled => EventKind::Cancelled,
        _ => EventKind::Failed { reason: record.error.clone().unwrap_or_default(), retryable: false },
    };
    Event { timings_ms: record.timings_ms.clone(), ..event(record, kind) }
}

/// The record a job has before any worker touched it.
pub fn queued_record(job: &Job) -> JobRecord {
    JobRecord {
        v: SCHEMA_VERSION,
        id: job.id.clone(),
        request_id: job.request_id.clone(),
        prompt: job.prompt.clone(),
        seed: job.seed,
        status: JobStatus::Queued,
        step: 0,
        total_steps: 0,
        attempts: 0,
        error: None,
        images: Vec::new(),
        timings_ms: Vec::new(),
        entities: Vec::new(),
        batch_size: None,
        started_ms: None,
        updated_ms: now_ms(),
    }
}
