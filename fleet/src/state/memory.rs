//! State in process memory for standalone mode: the same semantics as the Redis store, expiry
//! included (checked lazily on access).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rapid_proto::{Event, JobRecord, RequestRecord};

#[derive(Clone, Default)]
pub struct MemoryState {
    inner: Arc<Mutex<Inner>>,
    finished_ttl: Duration,
}

#[derive(Default)]
struct Inner {
    requests: HashMap<String, RequestRecord>,
    jobs: HashMap<String, JobRecord>,
    done: HashMap<String, HashSet<String>>,
    cancelled: HashSet<String>,
    events: HashMap<String, Vec<Event>>,
    expires: HashMap<String, Instant>,
}

impl Inner {
    fn purge_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> =
            self.expires.iter().filter(|(_, at)| **at <= now).map(|(id, _)| id.clone()).collect();
        for id in expired {
            self.expires.remove(&id);
            if let Some(request) = self.requests.remove(&id) {
                for job in &request.job_ids {
                    self.jobs.remove(job);
                }
            }
            self.done.remove(&id);
            self.cancelled.remove(&id);
            self.events.remove(&id);
        }
    }
}

impl MemoryState {
    pub fn new(finished_ttl: Duration) -> Self {
        Self { inner: Arc::default(), finished_ttl }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.purge_expired();
        inner
    }

    pub(super) fn create_request(&self, request: &RequestRecord, jobs: &[JobRecord]) -> Result<(), super::StateError> {
        let mut inner = self.lock();
        for job in jobs {
            inner.jobs.insert(job.id.clone(), job.clone());
        }
        inner.requests.insert(request.id.clone(), request.clone());
        Ok(())
    }

    pub(super) fn request(&self, id: &str) -> Option<RequestRecord> {
        self.lock().requests.get(id).cloned()
    }

    pub(super) fn jobs(&self, ids: &[String]) -> Vec<Option<JobRecord>> {
        let inner = self.lock();
        ids.iter().map(|id| inner.jobs.get(id).cloned()).collect()
    }

    pub(super) fn put_job(&self, job: &JobRecord) {
        self.lock().jobs.insert(job.id.clone(), job.clone());
    }

    pub(super) fn cancel(&self, request_id: &str) {
        self.lock().cancelled.insert(request_id.to_owned());
    }

    pub(super) fn is_cancelled(&self, request_id: &str) -> bool {
        self.lock().cancelled.contains(request_id)
    }

    pub(super) fn append_event(&self, event: &Event) {
        let mut inner = self.lock();
        let log = inner.events.entry(event.request_id.clone()).or_default();
        log.push(event.clone());
        if log.len() > super::MAX_EVENTS {
            log.remove(0);
        }
    }

    pub(super) fn events(&self, request_id: &str) -> Vec<Event> {
        self.lock().events.get(request_id).cloned().unwrap_or_default()
    }

    pub(super) fn finish_job(&self, request: &RequestRecord, job_id: &str) -> bool {
        let mut inner = self.lock();
        let done = inner.done.entry(request.id.clone()).or_default();
        let last = done.insert(job_id.to_owned()) && done.len() >= request.job_ids.len();
        if last {
            inner.expires.insert(request.id.clone(), Instant::now() + self.finished_ttl);
        }
        last
    }
}
