//! Request and job state: Redis in the fleet, a map in memory in standalone mode.
//!
//! Redis is the source of truth for status: workers write job records, the scheduler writes the
//! request record and reads everything. An enum rather than a trait object because there are
//! exactly two stores and both binaries pick one at start-up.

mod memory;
mod redis;

use std::time::Duration;

use rapid_proto::{Event, JobRecord, RequestRecord};

pub use self::memory::MemoryState;
pub use self::redis::RedisState;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("Redis: {0} (is Redis running and `redis.url` right?)")]
    Redis(#[from] ::redis::RedisError),
    #[error("state key {key} holds something this build cannot read: {message}")]
    Corrupt { key: String, message: String },
}

/// Events kept per request: enough for every job's start, sampled progress and end, bounded so a
/// huge request cannot grow one key without limit.
pub const MAX_EVENTS: usize = 2000;

#[derive(Clone)]
pub enum StateStore {
    Redis(RedisState),
    Memory(MemoryState),
}

impl StateStore {
    /// Writes a new request and its jobs (all queued) before any job is published.
    pub async fn create_request(&self, request: &RequestRecord, jobs: &[JobRecord]) -> Result<(), StateError> {
        match self {
            Self::Redis(s) => s.create_request(request, jobs).await,
            Self::Memory(s) => s.create_request(request, jobs),
        }
    }

    pub async fn request(&self, id: &str) -> Result<Option<RequestRecord>, StateError> {
        match self {
            Self::Redis(s) => s.request(id).await,
            Self::Memory(s) => Ok(s.request(id)),
        }
    }

    /// The records of `ids`, in order; `None` where a record is missing.
    pub async fn jobs(&self, ids: &[String]) -> Result<Vec<Option<JobRecord>>, StateError> {
        match self {
            Self::Redis(s) => s.jobs(ids).await,
            Self::Memory(s) => Ok(s.jobs(ids)),
        }
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, StateError> {
        Ok(self.jobs(&[id.to_owned()]).await?.pop().flatten())
    }

    pub async fn put_job(&self, job: &JobRecord) -> Result<(), StateError> {
        match self {
            Self::Redis(s) => s.put_job(job).await,
            Self::Memory(s) => {
                s.put_job(job);
                Ok(())
            }
        }
    }

    /// Raises the request's cancel flag: queued jobs are skipped, running ones stop at their next step.
    pub async fn cancel(&self, request: &RequestRecord) -> Result<(), StateError> {
        match self {
            Self::Redis(s) => s.cancel(request).await,
            Self::Memory(s) => {
                s.cancel(&request.id);
                Ok(())
            }
        }
    }

    pub async fn is_cancelled(&self, request_id: &str) -> Result<bool, StateError> {
        match self {
            Self::Redis(s) => s.is_cancelled(request_id).await,
            Self::Memory(s) => Ok(s.is_cancelled(request_id)),
        }
    }

    /// Records that `job_id` reached a final state. Returns true exactly once per request: for
    /// the call that completes its last job (a redelivered job counts once). The request then
    /// starts to expire.
    pub async fn finish_job(&self, request: &RequestRecord, job_id: &str) -> Result<bool, StateError> {
        match self {
            Self::Redis(s) => s.finish_job(request, job_id).await,
            Self::Memory(s) => Ok(s.finish_job(request, job_id)),
        }
    }

    /// Appends to the request's event log (capped at [`MAX_EVENTS`], oldest dropped first).
    pub async fn append_event(&self, event: &Event) -> Result<(), StateError> {
        match self {
            Self::Redis(s) => s.append_event(event).await,
            Self::Memory(s) => {
                s.append_event(event);
                Ok(())
            }
        }
    }

    /// The request's event log, oldest first.
    pub async fn events(&self, request_id: &str) -> Result<Vec<Event>, StateError> {
        match self {
            Self::Redis(s) => s.events(request_id).await,
            Self::Memory(s) => Ok(s.events(request_id)),
        }
    }

    /// Can the store be reached (for `/readyz`)?
    pub async fn ping(&self) -> Result<(), StateError> {
        match self {
            Self::Redis(s) => s.ping().await,
            Self::Memory(_) => Ok(()),
        }
    }
}

/// Unix time in milliseconds, the timestamps every record carries.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
}
