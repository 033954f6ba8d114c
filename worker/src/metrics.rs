//! The worker's Prometheus metrics and its readiness, which `health.rs` serves and the consumer
//! feeds. Counters and histograms live in the process: a restarted worker starts them at zero, as
//! Prometheus' `rate` and `increase` expect.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rapid_proto::Priority;

/// What became of one job run, as `rapid_worker_jobs_total{outcome}` counts it: each run under
/// exactly one outcome, so that a failure ratio adds `failed` and `dead_lettered` without counting
/// a job twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobOutcome {
    Succeeded,
    /// Ended failed without a dead letter (its deadline passed before it could start).
    Failed,
    Cancelled,
    /// Failed and published again for a later attempt.
    Retried,
    /// Sent to the dead-letter queue (unreadable, permanent failure, or out of attempts).
    DeadLettered,
    /// Handed back to the queue untouched at shutdown.
    Requeued,
}

impl JobOutcome {
    const ALL: [Self; 6] =
        [Self::Succeeded, Self::Failed, Self::Cancelled, Self::Retried, Self::DeadLettered, Self::Requeued];

    fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
            Self::Requeued => "requeued",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabel {
    priority: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

/// Seconds from 1 ms to about 9 minutes: a 64-px CPU step and a 1024-px ESRGAN pass both land
/// inside.
fn stage_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 20)
}

/// Queue waits from 5 ms to about 11 hours (a night's batch backlog).
fn wait_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.005, 2.0, 24)
}

pub struct WorkerMetrics {
    registry: Registry,
    jobs: Family<OutcomeLabel, Counter>,
    queue_wait: Family<PriorityLabel, Histogram>,
    stages: Family<StageLabel, Histogram>,
    busy: Gauge<i64, AtomicI64>,
    /// 1 while subscribed to the jobs queue with models loaded: what `/readyz` answers.
    ready: Gauge<i64, AtomicI64>,
    stalls: Counter,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rapid_worker");
        let jobs = Family::<OutcomeLabel, Counter>::default();
        // Every outcome exported from the start at 0: a series first seen at 1 is invisible to
        // `rate` and `increase`, so the first dead letter would fire no alert.
        for outcome in JobOutcome::ALL {
            jobs.get_or_create(&OutcomeLabel { outcome: outcome.label() }).inc_by(0);
        }
        registry.register("jobs", "Job runs ended, by outcome", jobs.clone());
        let queue_wait = Family::<PriorityLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(wait_buckets())) as fn() -> Histogram,
        );
        registry.register(
            "queue_wait_seconds",
            "From the request's acceptance to its job's first start, by priority class",
            queue_wait.clone(),
        );
        let stages = Family::<StageLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(stage_buckets())) as fn() -> Histogram,
        );
        registry.register(
            "stage_seconds",
            "Time in each stage of a job (engine stages and the upload)",
            stages.clone(),
        );
        let busy = Gauge::<i64, AtomicI64>::default();
        registry.register("busy", "1 while the worker runs jobs", busy.clone());
        let ready = Gauge::<i64, AtomicI64>::default();
        registry.register("ready", "1 while the worker is subscribed to the jobs queue, models warm", ready.clone());
        let stalls = Counter::default();
        registry.register(
            "stalls",
            "Jobs the watchdog found without progress (the worker then requeues them and exits)",
            stalls.clone(),
        );
        Self { registry, jobs, queue_wait, stages, busy, ready, stalls }
    }
}

impl WorkerMetrics {
    pub fn job_ended(&self, outcome: JobOutcome) {
        self.jobs.get_or_create(&OutcomeLabel { outcome: outcome.label() }).inc();
    }

    pub fn queue_wait(&self, priority: Priority, wait: Duration) {
        let priority = match priority {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        };
        self.queue_wait.get_or_create(&PriorityLabel { priority }).observe(wait.as_secs_f64());
    }

    /// One stage's time; engine stages arrive in milliseconds as the engine reports them.
    pub fn stage_ms(&self, stage: &str, milliseconds: f64) {
        self.stages.get_or_create(&StageLabel { stage: stage.to_owned() }).observe(milliseconds / 1000.0);
    }

    pub fn set_busy(&self, busy: bool) {
        self.busy.set(i64::from(busy));
    }

    pub fn stalled(&self) {
        self.stalls.inc();
    }

    pub fn set_subscribed(&self, subscribed: bool) {
        self.ready.set(i64::from(subscribed));
    }

    /// What `/readyz` answers: the `ready` gauge is the one record of it.
    pub fn is_subscribed(&self) -> bool {
        self.ready.get() == 1
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
    fn the_text_names_each_series_with_its_labels() {
        let metrics = WorkerMetrics::default();
        metrics.job_ended(JobOutcome::DeadLettered);
        metrics.queue_wait(Priority::Interactive, Duration::from_millis(20));
        metrics.stage_ms("unet", 116.0);
        metrics.set_subscribed(true);
        let text = metrics.render();
        assert!(text.contains("rapid_worker_jobs_total{outcome=\"dead_lettered\"} 1"), "{text}");
        assert!(
            text.contains("rapid_worker_queue_wait_seconds_bucket{le=\"0.02\",priority=\"interactive\"} 1"),
            "{text}"
        );
        assert!(text.contains("rapid_worker_stage_seconds_sum{stage=\"unet\"} 0.116"), "{text}");
        assert!(text.contains("rapid_worker_ready 1"), "{text}");
        assert!(metrics.is_subscribed());
    }
}
