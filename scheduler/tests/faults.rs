//! Issue 19's faults, each injected many times while a backlog is in flight, and counted. Ignored
//! by `cargo test` (minutes per kind): `make faults` runs them with `RAPID_FAULTS` injections per
//! kind (default 100) and writes `deploy/bench/faults/{kind}.json`, which
//! `deploy/bench/faults/report.py` turns into `deploy/bench/faults/FAULTS.md`.
//!
//! Each kind runs one fleet (one worker) and, per injection, submits a two-job request, waits
//! until a job runs, and injects the fault. Then every request must end: each job succeeded,
//! failed with a reason, or was cancelled; none stuck; exactly one stored image per succeeded job
//! (no duplicate image sets); dead letters are counted; with a webhook, every request is called
//! back once the receiver is back.
//!
//! The hung-worker fault needs the worker built with fault injection (`cargo build --release -p
//! rapid-worker --features failpoints`, which `make faults` does).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    /// A message on the jobs queue that is no job a worker can run: not JSON, a schema from the
    /// future, or a job of a request the state store never heard of (in turn).
    Poison,
    /// The tenant's webhook receiver answers 503 (its app down behind its load balancer) until it
    /// has refused the request's callback, then 2xx again; the callback must then arrive.
    WebhookDown,
    /// The worker hangs inside a step (fault injection: the first step of the first job it runs
    /// on a first attempt); its watchdog hands the job back and exits; a new worker starts, as
    /// a supervisor would start it.
    WorkerHang,
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
            Self::Poison => "poison-message",
            Self::WebhookDown => "webhook-down",
            Self::WorkerHang => "worker-hang",
        }
    }
}

/// What the fault's own engines are: private ones where the fault restarts them, and the
/// tenant's webhook receiver.
struct Engines {
    broker: Option<PrivateBroker>,
    redis: Option<PrivateRedis>,
    webhook: Option<Webhook>,
}

/// Request id → callbacks received for it.
type Calls = Arc<Mutex<HashMap<String, usize>>>;

/// The tenant's callback receiver: records each callback it accepts, and each it refuses (503)
/// while down.
struct Webhook {
    url: String,
    up: Arc<AtomicBool>,
    accepted: Calls,
    refused: Calls,
}

impl Webhook {
    async fn start() -> Self {
        use axum::http::StatusCode;
        let up = Arc::new(AtomicBool::new(true));
        let (accepted, refused): (Calls, Calls) = (Arc::default(), Arc::default());
        let (up_flag, sink, refusals) = (Arc::clone(&up), Arc::clone(&accepted), Arc::clone(&refused));
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::Json<Value>| {
                let (up, sink, refusals) = (Arc::clone(&up_flag), Arc::clone(&sink), Arc::clone(&refusals));
                async move {
                    let id = body["request"]["request_id"].as_str().unwrap_or_default().to_owned();
                    if !up.load(Ordering::SeqCst) {
                        *refusals.lock().unwrap().entry(id).or_default() += 1;
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    *sink.lock().unwrap().entry(id).or_default() += 1;
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, up, accepted, refused }
    }

    /// Waits until `calls` has one for request `id`.
    async fn wait_for(calls: &Calls, id: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !calls.lock().unwrap().contains_key(id) {
            assert!(Instant::now() < deadline, "request {id}: no callback {what} in 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
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

/// Injects one fault; `id` is the request just submitted, `n` the injection's number.
async fn inject(fault: Fault, id: &str, n: usize, last: bool, fleet: &mut Fleet, engines: &mut Engines) {
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
        Fault::Poison => {
            let body = match n % 3 {
                0 => b"not json at all".to_vec(),
                1 => json!({"v": 99, "id": format!("from-the-future-{n}")}).to_string().into_bytes(),
                _ => {
                    let job = rapid_proto::Job {
                        v: rapid_proto::SCHEMA_VERSION,
                        id: format!("orphan-{n}"),
                        request_id: format!("never-accepted-{n}"),
                        tenant: "acme".into(),
                        model: "tiny-sd-clip-kg".into(),
                        prompt: "a red dress".into(),
                        negative_prompt: String::new(),
                        seed: 1,
                        width: 64,
                        height: 64,
                        steps: 2,
                        guidance_scale: 7.5,
                        sampler: rapid_proto::Sampler::Ddim,
                        karras_sigmas: None,
                        upscale: false,
                        format: rapid_proto::ImageFormat::Png,
                        priority: rapid_proto::Priority::Batch,
                        deadline_ms: None,
                        attempt: 0,
                    };
                    rapid_proto::encode(&job)
                }
            };
            let queue = format!("{}.jobs", fleet.prefix);
            let properties = lapin::BasicProperties::default().with_priority(1).with_delivery_mode(2);
            let channel = fleet.amqp().await;
            channel.basic_publish("", &queue, Default::default(), &body, properties).await.unwrap().await.unwrap();
            channel.close(200, "done").await.ok();
        }
        Fault::WebhookDown => {
            // Down since before the request was submitted (so its callback cannot slip through),
            // until it has been refused; then back, and the scheduler's retry must deliver it.
            let webhook = engines.webhook.as_ref().expect("a webhook receiver");
            Webhook::wait_for(&webhook.refused, id, "refused while the receiver is down").await;
            webhook.up.store(true, Ordering::SeqCst);
            Webhook::wait_for(&webhook.accepted, id, "delivered once the receiver is back").await;
        }
        Fault::WorkerHang => {
            let last_worker = fleet.workers.len() - 1;
            let deadline = Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(status) = fleet.workers[last_worker].try_wait().unwrap() {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "the watchdog did not end the hung worker in 60 s\n{}",
                    fleet.logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let log = fleet.log(&format!("worker-{last_worker}.log"));
            assert!(!status.success() && log.contains("watchdog"), "the worker exits by its watchdog: {status}\n{log}");
            // The supervisor's restart. After the last injection the new worker hangs no more, so
            // the backlog can drain.
            if last {
                fleet.worker_env.clear();
            }
            let next = fleet.start_worker();
            fleet.wait_worker_ready(next).await;
        }
    }
}

async fn run(fault: Fault) {
    let count = injections();
    let mut engines = Engines {
        broker: matches!(fault, Fault::BrokerRestart).then(PrivateBroker::start),
        redis: matches!(fault, Fault::RedisRestart).then(PrivateRedis::start),
        webhook: None,
    };
    if matches!(fault, Fault::WebhookDown) {
        engines.webhook = Some(Webhook::start().await);
    }
    let mut options = FleetOptions { max_attempts: 5, retry_backoff_ms: 300, ..FleetOptions::default() };
    match fault {
        Fault::WebhookDown => {
            // The receiver is on loopback; retries from 200 ms, doubling, outlast its outages.
            options.scheduler_extra = "callback_allow_private_addresses = true".into();
            options.callback_max_attempts = 6;
        }
        Fault::WorkerHang => {
            options.worker_extra = "stall_timeout_secs = 2".into();
            options.worker_env = vec![("FAILPOINTS".into(), "worker-step=1*pause".into())];
        }
        _ => {}
    }
    if let Some(broker) = &engines.broker {
        options.amqp_urls = vec![broker.url()];
    }
    if let Some(redis) = &engines.redis {
        options.redis_url = redis.url();
    }
    let mut fleet = Fleet::start(options).await;
    fleet.start_worker();
    fleet.wait_worker_ready(0).await;
    if matches!(fault, Fault::WorkerHang) {
        assert!(
            fleet.log("worker-0.log").contains("fault injection is compiled in"),
            "the hung-worker fault needs `cargo build --release -p rapid-worker --features failpoints` (make faults)"
        );
    }
    if matches!(fault, Fault::StorageGone) {
        fleet.stop_s3();
    }
    let started = Instant::now();
    // With the store gone every job runs all its attempts: shorter jobs keep that within `SETTLE`.
    let steps = if matches!(fault, Fault::StorageGone) { 2 } else { 6 };
    let mut body = json!({"prompts": ["a red dress"], "images_per_prompt": 2, "steps": steps, "priority": "batch"});
    if let Some(webhook) = &engines.webhook {
        body["callback_url"] = json!(webhook.url);
    }

    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        if let Some(webhook) = &engines.webhook {
            webhook.up.store(false, Ordering::SeqCst);
        }
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
        inject(fault, &id, n, n + 1 == count, &mut fleet, &mut engines).await;
        ids.push(id);
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
    let mut checks = serde_json::Map::new();
    if let Some(webhook) = &engines.webhook {
        // Callbacks go out after the last job; give the retries their time.
        let deadline = Instant::now() + Duration::from_secs(60);
        while webhook.accepted.lock().unwrap().len() < ids.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let accepted = webhook.accepted.lock().unwrap().clone();
        let called_back = ids.iter().filter(|id| accepted.contains_key(*id)).count();
        let duplicates: usize = accepted.values().map(|n| n - 1).sum();
        checks.insert("requests_called_back".into(), json!(called_back));
        let refused = webhook.refused.lock().unwrap().clone();
        checks.insert("requests_refused_while_down".into(), json!(refused.len()));
        checks.insert("callbacks_refused_while_down".into(), json!(refused.values().sum::<usize>()));
        checks.insert("duplicate_callbacks".into(), json!(duplicates));
        checks.insert("callbacks_dead_lettered".into(), json!(fleet.queue_depth("callbacks.dead").await));
    }
    if matches!(fault, Fault::WorkerHang) {
        let exits = (0..fleet.workers.len())
            .filter(|n| fleet.log(&format!("worker-{n}.log")).contains("the watchdog found the engine hung"))
            .count();
        checks.insert("watchdog_exits".into(), json!(exits));
    }
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
        "checks": checks,
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
    match fault {
        Fault::Poison => {
            assert_eq!(tally["dead_lettered"], count, "every poison message dead-lettered, no job: {tally}");
            assert_eq!(succeeded, count * 2, "the real jobs all succeed: {tally}");
        }
        Fault::WebhookDown => {
            assert_eq!(checks["requests_called_back"], count, "every request called back: {tally}");
            assert_eq!(checks["duplicate_callbacks"], 0, "none twice: {tally}");
            assert_eq!(checks["callbacks_dead_lettered"], 0, "{tally}");
        }
        Fault::WorkerHang => {
            assert_eq!(checks["watchdog_exits"], count, "one watchdog exit per injection: {tally}");
            assert_eq!(succeeded, count * 2, "each hung job succeeds on its next attempt: {tally}");
        }
        _ => {}
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes; run by make faults"]
async fn poison_messages_on_the_jobs_queue() {
    run(Fault::Poison).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes; run by make faults"]
async fn webhook_receiver_down_then_back() {
    run(Fault::WebhookDown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes; run by make faults (needs the worker built with --features failpoints)"]
async fn worker_hung_inside_a_step() {
    run(Fault::WorkerHang).await;
}
