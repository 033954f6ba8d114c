//! The scheduler's Prometheus metrics. Queue depths are read from the broker at scrape time, so an
//! autoscaler on `rapid_queue_depth` sees the real backlog: the jobs ready for the workers and
//! those still waiting in the tenants' lanes.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rapid_fleet::queue::Lane;
use rapid_proto::{Priority, RequestKind};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabel {
    route: String,
    method: String,
    status: u16,
}

/// Why a request was turned away, as `rapid_requests_rejected_total{reason}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The fleet's backlog is over `scheduler.max_waiting_jobs` (429 `busy`).
    Busy,
    /// The tenant's quota (429 `quota_exceeded`).
    Quota,
    /// A body or parameter the API refuses (422, 413).
    Invalid,
    Unauthorized,
}

impl Rejection {
    const ALL: [Self; 4] = [Self::Busy, Self::Quota, Self::Invalid, Self::Unauthorized];

    fn label(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Quota => "quota",
            Self::Invalid => "invalid",
            Self::Unauthorized => "unauthorized",
        }
    }
}

/// What became of one callback attempt, as `rapid_callbacks_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    Delivered,
    Retried,
    DeadLettered,
}

impl CallbackOutcome {
    const ALL: [Self; 3] = [Self::Delivered, Self::Retried, Self::DeadLettered];

    fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabel {
    tenant: String,
    class: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<KindLabel, Counter>,
    jobs: Family<KindLabel, Counter>,
    queue_depth: Gauge<u64, AtomicU64>,
    lane_depth: Family<LaneLabel, Gauge<u64, AtomicU64>>,
    rejected: Family<ReasonLabel, Counter>,
    cancelled: Counter,
    callbacks: Family<OutcomeLabel, Counter>,
    http: Family<HttpLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rapid");
        let requests = Family::<KindLabel, Counter>::default();
        let jobs = Family::<KindLabel, Counter>::default();
        let queue_depth = Gauge::<u64, AtomicU64>::default();
        for kind in RequestKind::ALL {
            let label = KindLabel { kind: kind.name() };
            requests.get_or_create(&label).inc_by(0);
            jobs.get_or_create(&label).inc_by(0);
        }
        registry.register("requests_accepted", "Requests accepted, by kind", requests.clone());
        registry.register("jobs_enqueued", "Jobs published to the queue, by request kind", jobs.clone());
        let lane_depth = Family::<LaneLabel, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "queue_depth",
            "Jobs waiting: ready for the workers or in a tenant's lane",
            queue_depth.clone(),
        );
        registry.register("lane_depth", "Jobs waiting in a tenant's lane, by priority class", lane_depth.clone());
        // Every label value exported from the start at 0 (`rate` cannot see a series born at 1).
        let rejected = Family::<ReasonLabel, Counter>::default();
        for rejection in Rejection::ALL {
            rejected.get_or_create(&ReasonLabel { reason: rejection.label() }).inc_by(0);
        }
        registry.register("requests_rejected", "Requests turned away, by reason", rejected.clone());
        let cancelled = Counter::default();
        registry.register(
            "requests_cancelled",
            "Cancel calls (DELETE) answered; a repeated cancel of one request counts again",
            cancelled.clone(),
        );
        let callbacks = Family::<OutcomeLabel, Counter>::default();
        for outcome in CallbackOutcome::ALL {
            callbacks.get_or_create(&OutcomeLabel { outcome: outcome.label() }).inc_by(0);
        }
        registry.register("callbacks", "Callback attempts, by outcome", callbacks.clone());
        // 0.5 ms to about 16 s: a submit is a few ms; an idempotent one waiting for its twin, seconds.
        let http = Family::<HttpLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register("http_request_duration_seconds", "API requests, by route, method and status", http.clone());
        Self { registry, requests, jobs, queue_depth, lane_depth, rejected, cancelled, callbacks, http }
    }
}

impl Metrics {
    pub fn accepted(&self, kind: RequestKind, jobs: usize) {
        let label = KindLabel { kind: kind.name() };
        self.requests.get_or_create(&label).inc();
        self.jobs.get_or_create(&label).inc_by(jobs as u64);
    }

    pub fn rejected(&self, rejection: Rejection) {
        self.rejected.get_or_create(&ReasonLabel { reason: rejection.label() }).inc();
    }

    pub fn cancelled(&self) {
        self.cancelled.inc();
    }

    pub fn callback(&self, outcome: CallbackOutcome) {
        self.callbacks.get_or_create(&OutcomeLabel { outcome: outcome.label() }).inc();
    }

    /// One answered API request; `route` is the matched pattern (`/v1/requests/{id}`), never
    /// the path, so that ids do not explode the series.
    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let label = HttpLabel { route: route.to_owned(), method: method.to_owned(), status };
        self.http.get_or_create(&label).observe(took.as_secs_f64());
    }

    /// `ready`: jobs in the workers' queue; `lanes`: each lane with the jobs waiting in it.
    pub fn set_queue_depths(&self, ready: u32, lanes: &[(&Lane, u32)]) {
        let waiting: u64 = lanes.iter().map(|(_, depth)| u64::from(*depth)).sum();
        self.queue_depth.set(u64::from(ready) + waiting);
        for (lane, depth) in lanes {
            let class = match lane.class {
                Priority::Interactive => "interactive",
                Priority::Batch => "batch",
            };
            self.lane_depth.get_or_create(&LaneLabel { tenant: lane.tenant.clone(), class }).set(u64::from(*depth));
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encoding into a String");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_kind_is_exported_at_zero_before_its_first_request() {
        let metrics = Metrics::default();
        let text = metrics.render();
        for kind in RequestKind::ALL {
            assert!(text.contains(&format!("rapid_requests_accepted_total{{kind=\"{}\"}} 0", kind.name())), "{text}");
            assert!(text.contains(&format!("rapid_jobs_enqueued_total{{kind=\"{}\"}} 0", kind.name())), "{text}");
        }
        metrics.accepted(RequestKind::CuisineMenu, 3);
        let text = metrics.render();
        assert!(text.contains("rapid_requests_accepted_total{kind=\"cuisine_menu\"} 1"), "{text}");
        assert!(text.contains("rapid_jobs_enqueued_total{kind=\"cuisine_menu\"} 3"), "{text}");
    }
}
