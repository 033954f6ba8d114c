//! Issue 19's faults, each injected many times while a backlog is in flight, and counted. Ignored
//! by `cargo test` (minutes per kind): `make faults` runs them with `RAPID_FAULTS` injections per
//! kind (default 100) and writes `deploy/bench/faults/{kind}.json`, which
//! `deploy/bench/faults/report.py` turns into `deploy/bench/faults/FAULTS.md`.
//!
//! Each kind runs one fleet (one worker) and, per injection, submits a two-job request, waits
//! until a job runs, and injects the fault. Then every request must end: each job succeeded,
//! failed with a reason, or was cancelled; none stuck; exactly one stored image per succeeded job
//! (no duplicate image sets); dead letters are counted.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::broker::PrivateBroker;
use support::redis_server::PrivateRedis;
use support::{Fleet, FleetOptions, ACME};

/// How long every request may take to end after the last injection.
const SETTLE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL the worker mid-job, then start a new one.
    WorkerKill,
    /// SIGKILL the scheduler with requests in flight, then start it again.
    SchedulerKill,
    /// The S3 server down for a second, then back.
    StorageOutage,
    /// The S3 server gone for good: each injection is a request submitted while it is away, whose
    /// jobs must end failed with the reason after their attempts.
    StorageGone,
    /// Redis (with an append-only file) restarted.
    RedisRestart,
    /// RabbitMQ's application stopped for a second, then started.
    BrokerRestart,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::WorkerKill => "worker-sigkill",
            Self::SchedulerKill => "scheduler-sigkill",
            Self::StorageOutage => "s3-outage",
            Self::StorageGone => "s3-gone",
            Self::RedisRestart => "redis-restart",
            Self::BrokerRestart => "rabbitmq-restart",
        }
    }
}

/// What the fault's own engines are: private ones where the fault restarts them.
struct Engines {
    broker: Option<PrivateBroker>,
    redis: Option<PrivateRedis>,
}

fn injections() -> usize {
    std::env::var("RAPID_FAULTS").ok().and_then(|n| n.parse().ok()).unwrap_or(100)
}

/// Submits, retrying while the scheduler is away or answers 503 (a fault is being injected).
async fn submit(fleet: &Fleet, body: &Value) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/generations", fleet.base))
            .bearer_auth(ACME)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(response) = response {
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if status == 202 {
                return answer["request_id"].as_str().unwrap().to_owned();
            }
            assert!(status == 503, "submit answered {status}: {answer}\n{}", fleet.logs());
        }
        assert!(Instant::now() < deadline, "no submit accepted in 60 s\n{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The request's view, or `None` while the scheduler cannot answer.
async fn view(fleet: &Fleet, id: &str) -> Option<Value> {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/requests/{id}", fleet.base))
        .bearer_auth(ACME)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    (response.status() == 200).then_some(response.json().await.ok()?)
}

async fn inject(fault: Fault, fleet: &mut Fleet, engines: &mut Engines) {
    match fault {
        Fault::WorkerKill => {
            let last = fleet.workers.len() - 1;
            fleet.workers[last].kill().unwrap();
            fleet.workers[last].wait().unwrap();
            let next = fleet.start_worker();
            fleet.wait_worker_ready(next).await;
        }
        Fault::SchedulerKill => fleet.kill_scheduler_and_restart().await,
        Fault::StorageOutage => {
            fleet.stop_s3();
            tokio::time::sleep(Duration::from_secs(1)).await;
            fleet.start_s3();
        }
        // The store went away before the first request; nothing more to break.
        Fault::StorageGone => {}
        Fault::RedisRestart => engines.redis.as_mut().expect("a private Redis").restart(),
        Fault::BrokerRestart => {
            let broker = engines.broker.as_ref().expect("a private broker");
            broker.stop_app();
            tokio::time::sleep(Duration::from_secs(1)).await;
            broker.start_app();
        }
    }
}

async fn run(fault: Fault) {
    let count = injections();
    let mut engines = Engines {
        broker: matches!(fault, Fault::BrokerRestart).then(PrivateBroker::start),
        redis: matches!(fault, Fault::RedisRestart).then(PrivateRedis::start),
    };
    let mut options = FleetOptions { max_attempts: 5, retry_backoff_ms: 300, ..FleetOptions::default() };
    if let Some(broker) = &engines.broker {
        options.amqp_urls = vec![broker.url()];
    }
    if let Some(redis) = &engines.redis {
        options.redis_url = redis.url();
    }
    let mut fleet = Fleet::start(options).await;
    fleet.start_worker();
    fleet.wait_worker_ready(0).await;
    if matches!(fault, Fault::StorageGone) {
        fleet.stop_s3();
    }
    let started = Instant::now();
    // With the store gone every job runs all its attempts: shorter jobs keep that within `SETTLE`.
    let steps = if matches!(fault, Fault::StorageGone) { 2 } else { 6 };
    let body = json!({"prompts": ["a red dress"], "images_per_prompt": 2, "steps": steps, "priority": "batch"});

    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = submit(&fleet, &body).await;
        // Inject while a job runs, where that happens within a few seconds (with the store gone
        // there is nothing to wait for).
        let wait = if matches!(fault, Fault::StorageGone) { Duration::ZERO } else { Duration::from_secs(5) };
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let running = view(&fleet, &id)
                .await
                .is_some_and(|v| v["jobs"].as_array().unwrap().iter().any(|j| j["status"] == "running"));
            if running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ids.push(id);
        inject(fault, &mut fleet, &mut engines).await;
    }

    // Every request must end.
    let deadline = Instant::now() + SETTLE;
    let mut views = Vec::with_capacity(ids.len());
    for id in &ids {
        loop {
            if let Some(v) =
                view(&fleet, id).await.filter(|v| !matches!(v["status"].as_str(), Some("queued" | "running")))
            {
                views.push(v);
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let stuck = ids.len() - views.len();
    let jobs: Vec<&Value> = views.iter().flat_map(|v| v["jobs"].as_array().unwrap()).collect();
    let with_status = |status: &str| jobs.iter().filter(|j| j["status"] == status).count();
    let failed_without_reason = jobs.iter().filter(|j| j["status"] == "failed" && j["error"].is_null()).count();
    let succeeded = with_status("succeeded");
    let images: HashSet<String> = jobs
        .iter()
        .filter(|j| j["status"] == "succeeded")
        .flat_map(|j| j["images"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap().to_owned()))
        .collect();
    if matches!(fault, Fault::StorageGone) {
        fleet.start_s3();
    }
    let objects = fleet.objects("acme/").await;
    let tally = json!({
        "fault": fault.name(),
        "injections": count,
        "requests": ids.len(),
        "jobs": ids.len() * 2,
        "ended": views.len(),
        "stuck_requests": stuck,
        "succeeded": succeeded,
        "failed_with_reason": with_status("failed") - failed_without_reason,
        "failed_without_reason": failed_without_reason,
        "cancelled": with_status("cancelled"),
        "dead_lettered": fleet.queue_depth("jobs.dead").await,
        "lost_jobs": ids.len() * 2 - jobs.len(),
        "images_of_succeeded_jobs": images.len(),
        "stored_objects": objects.len(),
        "seconds": started.elapsed().as_secs(),
    });
    println!("{tally}");
    if let Ok(folder) = std::env::var("RAPID_FAULTS_RESULTS") {
        let path = std::path::Path::new(&folder).join(format!("{}.json", fault.name()));
        std::fs::write(&path, serde_json::to_string_pretty(&tally).unwrap() + "\n").unwrap();
    }
    assert_eq!(stuck, 0, "every request ends: {tally}\n{}", fleet.logs());
    assert_eq!(failed_without_reason, 0, "a failed job says why: {tally}");
    if matches!(fault, Fault::StorageGone) {
        assert_eq!(succeeded, 0, "nothing can succeed without the store: {tally}");
    }
    assert_eq!(images.len(), succeeded, "one image per succeeded job: {tally}");
    assert_eq!(objects.len(), images.len(), "no stored image without its succeeded job, none twice: {tally}");
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes; run by make faults"]
async fn worker_sigkill_mid_job() {
    run(Fault::WorkerKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes; run by make faults"]
async fn scheduler_sigkill_with_requests_in_flight() {
    run(Fault::SchedulerKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes; run by make faults"]
async fn storage_down_then_back() {
    run(Fault::StorageOutage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes; run by make faults"]
async fn storage_gone_for_good() {
    run(Fault::StorageGone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes; run by make faults"]
async fn redis_restarted_with_its_append_only_file() {
    run(Fault::RedisRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes; run by make faults"]
async fn rabbitmq_restarted() {
    run(Fault::BrokerRestart).await;
}
