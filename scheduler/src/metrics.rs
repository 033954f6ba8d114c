//! The scheduler's Prometheus metrics. Queue depths are read from the broker at scrape time, so an
//! autoscaler on `rapid_queue_depth` sees the real backlog: the jobs ready for the workers and
//! those still waiting in the tenants' lanes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rapid_fleet::queue::Lane;
use rapid_proto::Priority;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
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
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rapid");
        let requests = Family::<KindLabel, Counter>::default();
        let jobs = Family::<KindLabel, Counter>::default();
        let queue_depth = Gauge::<u64, AtomicU64>::default();
        registry.register("requests_accepted", "Requests accepted, by kind", requests.clone());
        registry.register("jobs_enqueued", "Jobs published to the queue, by request kind", jobs.clone());
        let lane_depth = Family::<LaneLabel, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "queue_depth",
            "Jobs waiting: ready for the workers or in a tenant's lane",
            queue_depth.clone(),
        );
        registry.register("lane_depth", "Jobs waiting in a tenant's lane, by priority class", lane_depth.clone());
        Self { registry, requests, jobs, queue_depth, lane_depth }
    }
}

impl Metrics {
    pub fn accepted(&self, kind: &str, jobs: usize) {
        let label = KindLabel { kind: kind.to_owned() };
        self.requests.get_or_create(&label).inc();
        self.jobs.get_or_create(&label).inc_by(jobs as u64);
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
