//! The scheduler's Prometheus metrics. Queue depth is read from the broker at scrape time, so an
//! autoscaler on `rapid_queue_depth` sees the real backlog.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<KindLabel, Counter>,
    jobs: Family<KindLabel, Counter>,
    queue_depth: Gauge<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rapid");
        let requests = Family::<KindLabel, Counter>::default();
        let jobs = Family::<KindLabel, Counter>::default();
        let queue_depth = Gauge::<u64, AtomicU64>::default();
        registry.register("requests_accepted", "Requests accepted, by kind", requests.clone());
        registry.register("jobs_enqueued", "Jobs published to the queue, by request kind", jobs.clone());
        registry.register("queue_depth", "Jobs waiting in the job queue", queue_depth.clone());
        Self { registry, requests, jobs, queue_depth }
    }
}

impl Metrics {
    pub fn accepted(&self, kind: &str, jobs: usize) {
        let label = KindLabel { kind: kind.to_owned() };
        self.requests.get_or_create(&label).inc();
        self.jobs.get_or_create(&label).inc_by(jobs as u64);
    }

    pub fn set_queue_depth(&self, depth: u32) {
        self.queue_depth.set(u64::from(depth));
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encoding into a String");
        text
    }
}
