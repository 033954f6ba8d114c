//! Backpressure: while more jobs wait than `scheduler.max_waiting_jobs` (ready for the workers
//! plus in the tenants' lanes), submits get 429 with `Retry-After`, so clients slow down instead of
//! piling up work the fleet cannot start. The count is read from the broker at most every
//! `REFRESH` and shared by all requests, so a burst of submits costs the broker one look, not one
//! per submit; a request is admitted when the count is under the limit, whatever its size.

use std::time::{Duration, Instant};

use rapid_fleet::queue::{Lane, Queue, QueueError, Topic};

use super::error::ApiError;

const REFRESH: Duration = Duration::from_millis(250);
/// What a refused client is told to wait: about the time a worker needs to take a few jobs.
const RETRY_AFTER_SECS: u64 = 5;

pub struct Backlog {
    limit: Option<u32>,
    seen: tokio::sync::Mutex<Option<(Instant, u32)>>,
}

impl Backlog {
    pub fn new(limit: Option<u32>) -> Self {
        Self { limit, seen: tokio::sync::Mutex::new(None) }
    }

    /// `Err(Busy)` while the fleet's backlog is at or over the limit.
    pub async fn admit(&self, queue: &Queue, lanes: &[Lane]) -> Result<(), ApiError> {
        let Some(limit) = self.limit else { return Ok(()) };
        let mut seen = self.seen.lock().await;
        let waiting = match *seen {
            Some((at, waiting)) if at.elapsed() < REFRESH => waiting,
            _ => {
                let waiting = waiting(queue, lanes).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
                *seen = Some((Instant::now(), waiting));
                waiting
            }
        };
        if waiting >= limit {
            return Err(ApiError::Busy { waiting, limit, retry_after_secs: RETRY_AFTER_SECS });
        }
        Ok(())
    }
}

/// Jobs not yet taken by a worker: ready in `jobs` and waiting in every lane.
async fn waiting(queue: &Queue, lanes: &[Lane]) -> Result<u32, QueueError> {
    let mut waiting = queue.depth(Topic::Jobs).await?;
    for lane in lanes {
        waiting += queue.lane_depth(lane).await?;
    }
    Ok(waiting)
}
