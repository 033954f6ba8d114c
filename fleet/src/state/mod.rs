//! Request and job state: Redis in the fleet, a map in memory in standalone mode.
//!
//! Redis is the source of truth for status: workers write job records, the scheduler writes the
//! request record and reads everything. An enum rather than a trait object because there are
//! exactly two stores and both binaries pick one at start-up.

mod memory;
pub mod quota;
mod redis;

use std::time::Duration;

use rapid_proto::{Event, JobRecord, RequestRecord};

pub use self::memory::MemoryState;
pub use self::quota::{Admission, Quota, QuotaLimit, Usage};
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

    /// Records that `job_id` reached a final state, taking its image out of the tenant's flight.
    /// Returns true exactly once per request: for the call that completes its last job (a
    /// redelivered job counts once). The request then starts to expire.
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

    /// Counts a request of `images` images against `tenant`'s quota, unless that would break one
    /// of its limits: then nothing is counted and the limit is named. Atomic across schedulers.
    pub async fn admit(&self, tenant: &str, images: u32, limits: &Quota) -> Result<Admission, StateError> {
        match self {
            Self::Redis(s) => s.admit(tenant, images, limits, now_ms()).await,
            Self::Memory(s) => Ok(s.admit(tenant, images, limits, now_ms())),
        }
    }

    /// `tenant`'s counters now.
    pub async fn usage(&self, tenant: &str) -> Result<Usage, StateError> {
        match self {
            Self::Redis(s) => s.usage(tenant, now_ms()).await,
            Self::Memory(s) => Ok(s.usage(tenant, now_ms())),
        }
    }

    /// Takes `key` for `ttl` with `value` if nobody holds it; otherwise returns what the holder
    /// stored. The scheduler keeps idempotency records this way: the first of two concurrent
    /// submits with one key wins, the other sees its record.
    pub async fn claim(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Claim, StateError> {
        match self {
            Self::Redis(s) => s.claim(key, value, ttl).await,
            Self::Memory(s) => Ok(s.claim(key, value, ttl)),
        }
    }

    /// Replaces a claimed key's value and its time to live.
    pub async fn update_claim(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StateError> {
        match self {
            Self::Redis(s) => s.update_claim(key, value, ttl).await,
            Self::Memory(s) => {
                s.update_claim(key, value, ttl);
                Ok(())
            }
        }
    }

    /// Gives a claimed key up, so the next claim succeeds.
    pub async fn release_claim(&self, key: &str) -> Result<(), StateError> {
        match self {
            Self::Redis(s) => s.release_claim(key).await,
            Self::Memory(s) => {
                s.release_claim(key);
                Ok(())
            }
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

/// What [`StateStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now the caller's.
    Claimed,
    /// Someone holds the key; this is the value they stored.
    Held(Vec<u8>),
}

/// Unix time in milliseconds, the timestamps every record carries.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
}
