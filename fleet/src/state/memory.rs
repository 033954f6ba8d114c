//! State in process memory for standalone mode: the same semantics as the Redis store, expiry
//! included (checked lazily on access).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rapid_proto::{Event, JobRecord, RequestRecord};

use super::quota::{self, Admission, Quota, Usage};
use super::Claim;

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
    /// Claimed keys: value and expiry.
    claims: HashMap<String, (Vec<u8>, Instant)>,
    /// Per tenant: (minute, requests in it), (day, images on it), images in flight.
    usage: HashMap<String, TenantCounters>,
}

#[derive(Default)]
struct TenantCounters {
    minute: (u64, u32),
    day: (u64, u32),
    in_flight: u32,
}

impl TenantCounters {
    /// The counts as of `now_ms`: a window that has passed counts zero.
    fn usage(&self, now_ms: u64) -> Usage {
        let (minute, day) = quota::windows(now_ms);
        let in_window = |(window, count): (u64, u32), current: u64| if window == current { count } else { 0 };
        Usage {
            requests_this_minute: in_window(self.minute, minute),
            images_in_flight: self.in_flight,
            images_today: in_window(self.day, day),
        }
    }
}

impl Inner {
    fn purge_expired(&mut self) {
        let now = Instant::now();
        self.claims.retain(|_, (_, expiry)| *expiry > now);
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
        let added = done.insert(job_id.to_owned());
        let last = added && done.len() >= request.job_ids.len();
        if added {
            let counters = inner.usage.entry(request.tenant.clone()).or_default();
            counters.in_flight = counters.in_flight.saturating_sub(1);
        }
        if last {
            inner.expires.insert(request.id.clone(), Instant::now() + self.finished_ttl);
        }
        last
    }

    pub(super) fn claim(&self, key: &str, value: &[u8], ttl: Duration) -> Claim {
        let mut inner = self.lock();
        match inner.claims.get(key) {
            Some((held, _)) => Claim::Held(held.clone()),
            None => {
                inner.claims.insert(key.to_owned(), (value.to_vec(), Instant::now() + ttl));
                Claim::Claimed
            }
        }
    }

    pub(super) fn update_claim(&self, key: &str, value: &[u8], ttl: Duration) {
        self.lock().claims.insert(key.to_owned(), (value.to_vec(), Instant::now() + ttl));
    }

    pub(super) fn release_claim(&self, key: &str) {
        self.lock().claims.remove(key);
    }

    pub(super) fn admit(&self, tenant: &str, images: u32, limits: &Quota, now_ms: u64) -> Admission {
        let mut inner = self.lock();
        let counters = inner.usage.entry(tenant.to_owned()).or_default();
        let usage = counters.usage(now_ms);
        if let Some(limit) = quota::first_broken(limits, &usage, images) {
            return Admission::Refused(limit);
        }
        let (minute, day) = quota::windows(now_ms);
        counters.minute = (minute, usage.requests_this_minute + 1);
        counters.day = (day, usage.images_today.saturating_add(images));
        counters.in_flight = counters.in_flight.saturating_add(images);
        Admission::Admitted
    }

    pub(super) fn usage(&self, tenant: &str, now_ms: u64) -> Usage {
        self.lock().usage.get(tenant).map(|c| c.usage(now_ms)).unwrap_or_default()
    }
}
