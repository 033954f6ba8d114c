//! The consumer's job lifecycle on the in-process queue, state and object store (the parts the
//! standalone mode runs) with a real tiny model: acknowledge only after the effect, skip a
//! duplicate, retry then dead-letter, cancel, and drain or requeue on shutdown. The fleet tests
//! (scheduler/tests/fleet.rs) cover the same rules across RabbitMQ, Redis and S3.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rapid_engine::runtime::Runtime;
use rapid_fleet::jobs::queued_record;
use rapid_fleet::queue::{MemoryQueue, Queue, Topic};
use rapid_fleet::state::{now_ms, MemoryState, StateStore};
use rapid_fleet::storage::{image_key, LocalStore, ObjectStore};
use rapid_proto::{
    EventKind, ImageFormat, Job, JobStatus, Priority, RequestKind, RequestRecord, Sampler, SCHEMA_VERSION,
};
use rapid_worker::config::WorkerFile;
use rapid_worker::consumer::{ConsumerOptions, JobConsumer, Stop};
use rapid_worker::metrics::WorkerMetrics;
use rapid_worker::runner::Engines;
use tokio::sync::watch;

const MODEL: &str = "tiny";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// One worker on in-process parts, with a handle to stop it.
struct Harness {
    queue: MemoryQueue,
    state: StateStore,
    store_root: PathBuf,
    stop: watch::Sender<bool>,
    worker: tokio::task::JoinHandle<Stop>,
    engines: Arc<Mutex<Engines>>,
    metrics: Arc<WorkerMetrics>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// `store_root` relative to a fresh temporary folder; `shutdown_grace` as the worker's.
    fn start(store_root: &str, shutdown_grace: Duration) -> Self {
        Self::start_with_watchdog(store_root, shutdown_grace, None)
    }

    fn start_with_watchdog(store_root: &str, shutdown_grace: Duration, stall_timeout: Option<Duration>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("worker.toml");
        let model = repo().join("tests/fixtures/models/tiny-sd-clip");
        std::fs::write(
            &config,
            format!(
                r#"
[amqp]
url = "amqp://unused"
[redis]
url = "redis://unused"
[s3]
region = "unused"
bucket = "unused"
access_key = "unused"
secret_key = "unused"
[worker]
models = {{ {MODEL} = "{}" }}
warm_up = false
max_attempts = 2
retry_backoff_ms = 10
progress_interval_ms = 10
"#,
                model.display()
            ),
        )
        .unwrap();
        let file: WorkerFile = rapid_fleet::config::load(&config).unwrap();
        let runtime = Runtime::new(&file.worker.runtime_options().unwrap()).unwrap();
        let engines = Engines::start(&runtime, &file.worker).unwrap();
        let queue = MemoryQueue::default();
        let state = StateStore::Memory(MemoryState::new(Duration::from_secs(600)));
        let store_root = dir.path().join(store_root);
        let engines = Arc::new(Mutex::new(engines));
        let metrics = Arc::new(WorkerMetrics::default());
        let consumer = JobConsumer {
            queue: Queue::Memory(queue.clone()),
            state: state.clone(),
            store: ObjectStore::Local(LocalStore::new(&store_root)),
            engines: Arc::clone(&engines),
            options: ConsumerOptions { shutdown_grace, stall_timeout, ..ConsumerOptions::from(&file.worker) },
            metrics: Arc::clone(&metrics),
        };
        let (stop, stopped) = watch::channel(false);
        let worker = tokio::spawn(async move { consumer.run(rapid_fleet::shutdown::stopped(stopped)).await });
        Self { queue, state, store_root, stop, worker, engines, metrics, _dir: dir }
    }

    /// Records a one-job request and publishes its job, as the scheduler's planner does.
    async fn submit(&self, id: &str, steps: u32) -> Job {
        let job = job(id, steps);
        let request = request(&job);
        self.state.create_request(&request, &[queued_record(&job)]).await.unwrap();
        self.publish(&job).await;
        job
    }

    async fn publish(&self, job: &Job) {
        Queue::Memory(self.queue.clone()).publish(Topic::Jobs, &rapid_proto::encode(job), 1).await.unwrap();
    }

    async fn status(&self, job: &Job) -> JobStatus {
        self.state.job(&job.id).await.unwrap().expect("the job has a record").status
    }

    async fn wait_for(&self, job: &Job, wanted: impl Fn(JobStatus) -> bool) -> JobStatus {
        for _ in 0..3000 {
            let status = self.status(job).await;
            if wanted(status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let record = self.state.job(&job.id).await.unwrap();
        panic!("job {} never reached the wanted status; its record: {record:?}", job.id);
    }

    /// Waits until every delivery taken was acknowledged or requeued (none dropped).
    async fn wait_until_settled(&self) {
        for _ in 0..3000 {
            if self.queue.unacknowledged(Topic::Jobs) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("a delivery was never acknowledged nor requeued");
    }

    async fn depth(&self) -> u32 {
        Queue::Memory(self.queue.clone()).depth(Topic::Jobs).await.unwrap()
    }

    fn image_path(&self, job: &Job) -> PathBuf {
        LocalStore::new(&self.store_root).path_of(&image_key(&job.tenant, &job.request_id, &job.id, 0, "png"))
    }

    async fn shut_down(self) {
        self.stop.send_replace(true);
        assert_eq!(self.worker.await.unwrap(), Stop::Shutdown);
    }
}

fn job(id: &str, steps: u32) -> Job {
    Job {
        v: SCHEMA_VERSION,
        id: id.into(),
        request_id: format!("req-{id}"),
        tenant: "acme".into(),
        model: MODEL.into(),
        prompt: "a red silk evening dress".into(),
        negative_prompt: String::new(),
        seed: 7,
        width: 64,
        height: 64,
        steps,
        guidance_scale: 7.5,
        sampler: Sampler::Ddim,
        karras_sigmas: None,
        upscale: false,
        format: ImageFormat::Png,
        priority: Priority::Interactive,
        deadline_ms: None,
        attempt: 0,
    }
}

fn request(job: &Job) -> RequestRecord {
    RequestRecord {
        v: SCHEMA_VERSION,
        id: job.request_id.clone(),
        tenant: job.tenant.clone(),
        kind: RequestKind::Generation,
        prompts: vec![job.prompt.clone()],
        job_ids: vec![job.id.clone()],
        callback_url: None,
        created_ms: now_ms(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_acknowledged_after_its_image_and_final_state_are_written() {
    let fleet = Harness::start("images", Duration::from_secs(30));
    let job = fleet.submit("ok", 4).await;
    assert_eq!(fleet.wait_for(&job, JobStatus::is_final).await, JobStatus::Succeeded);
    let record = fleet.state.job(&job.id).await.unwrap().unwrap();
    assert_eq!(record.attempts, 1);
    assert_eq!(record.images.len(), 1);
    let image = std::fs::read(fleet.image_path(&job)).expect("the image was stored before the job was final");
    assert_eq!(record.images[0].bytes, image.len() as u64);
    let kinds: Vec<_> = fleet.state.events(&job.request_id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert!(matches!(kinds.first(), Some(EventKind::Started { attempt: 1 })), "{kinds:?}");
    assert!(matches!(kinds.last(), Some(EventKind::Succeeded { .. })), "{kinds:?}");
    fleet.wait_until_settled().await;
    assert_eq!(fleet.depth().await, 0, "acknowledged, not requeued");
    assert!(fleet.queue.dead_letters().is_empty());
    fleet.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_of_a_finished_job_is_acknowledged_without_running_again() {
    let fleet = Harness::start("images", Duration::from_secs(30));
    let job = fleet.submit("dup", 4).await;
    fleet.wait_for(&job, JobStatus::is_final).await;
    let first = std::fs::metadata(fleet.image_path(&job)).unwrap().modified().unwrap();
    fleet.publish(&job).await;
    while fleet.depth().await > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fleet.wait_until_settled().await;
    assert_eq!(fleet.depth().await, 0, "the duplicate was taken and acknowledged");
    let record = fleet.state.job(&job.id).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts), (JobStatus::Succeeded, 1), "it did not run a second time");
    assert_eq!(std::fs::metadata(fleet.image_path(&job)).unwrap().modified().unwrap(), first);
    assert!(fleet.queue.dead_letters().is_empty());
    fleet.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_upload_keeps_failing_is_retried_then_dead_lettered() {
    // The store's root is a file, so every upload fails: a retryable error.
    let fleet = Harness::start("blocked", Duration::from_secs(30));
    std::fs::write(&fleet.store_root, b"not a folder").unwrap();
    let job = fleet.submit("retry", 2).await;
    assert_eq!(fleet.wait_for(&job, JobStatus::is_final).await, JobStatus::Failed);
    let record = fleet.state.job(&job.id).await.unwrap().unwrap();
    assert_eq!(record.attempts, 2, "max_attempts = 2: the first try and one retry");
    let error = record.error.unwrap();
    assert!(error.starts_with("gave up after 2 attempts"), "{error}");
    let dead = fleet.queue.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let retried: Job = rapid_proto::decode(&dead[0].1).unwrap();
    assert_eq!((retried.id.as_str(), retried.attempt), ("retry", 1));
    let kinds: Vec<_> = fleet.state.events(&job.request_id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert!(kinds.iter().any(|k| matches!(k, EventKind::Failed { retryable: true, .. })), "{kinds:?}");
    fleet.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_is_dead_lettered_with_its_reason() {
    let fleet = Harness::start("images", Duration::from_secs(30));
    Queue::Memory(fleet.queue.clone()).publish(Topic::Jobs, b"{\"v\": 9}", 1).await.unwrap();
    for _ in 0..300 {
        if !fleet.queue.dead_letters().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dead = fleet.queue.dead_letters();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].2.contains("unsupported schema version 9"), "{}", dead[0].2);
    fleet.wait_until_settled().await;
    assert_eq!(fleet.depth().await, 0, "and acknowledged, not redelivered forever");
    fleet.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_cancelled_request_ends_cancelled_without_an_image() {
    let fleet = Harness::start("images", Duration::from_secs(30));
    let job = job("cancelled", 4);
    let request = request(&job);
    fleet.state.create_request(&request, &[queued_record(&job)]).await.unwrap();
    fleet.state.cancel(&request).await.unwrap();
    fleet.publish(&job).await;
    assert_eq!(fleet.wait_for(&job, JobStatus::is_final).await, JobStatus::Cancelled);
    assert!(!fleet.image_path(&job).exists());
    fleet.wait_until_settled().await;
    fleet.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_job_in_hand_finish_within_the_grace_period() {
    let fleet = Harness::start("images", Duration::from_secs(60));
    let job = fleet.submit("drain", 100).await;
    fleet.wait_for(&job, |s| s == JobStatus::Running).await;
    fleet.stop.send_replace(true);
    let (state, path) = (fleet.state.clone(), fleet.image_path(&job));
    fleet.worker.await.unwrap();
    let record = state.job(&job.id).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Succeeded, "{record:?}");
    assert!(path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_the_grace_period_requeues_the_job_in_hand() {
    let fleet = Harness::start("images", Duration::ZERO);
    let job = fleet.submit("requeue", 900).await;
    fleet.wait_for(&job, |s| s == JobStatus::Running).await;
    fleet.stop.send_replace(true);
    let (state, fleet_queue) = (fleet.state.clone(), fleet.queue.clone());
    let queue = Queue::Memory(fleet_queue.clone());
    fleet.worker.await.unwrap();
    let record = state.job(&job.id).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Queued, "handed back, not failed");
    assert_eq!(queue.depth(Topic::Jobs).await.unwrap(), 1, "the delivery went back to the queue");
    assert_eq!(fleet_queue.unacknowledged(Topic::Jobs), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_engine_is_caught_by_the_watchdog_and_its_job_goes_back_as_a_failed_attempt() {
    let fleet = Harness::start_with_watchdog("images", Duration::from_secs(30), Some(Duration::from_millis(500)));
    // From the consumer's side, an engine that holds its lock and never returns is a hung step:
    // no progress arrives. This thread holds the lock until the test lets go.
    let engines = Arc::clone(&fleet.engines);
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _guard = engines.lock().unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().ok();
    });
    locked_rx.recv().unwrap();

    let job = fleet.submit("hung", 4).await;
    let stop = tokio::time::timeout(Duration::from_secs(30), fleet.worker).await.expect("the watchdog fires");
    assert_eq!(stop.unwrap(), Stop::Stalled, "a hung engine ends the consumer so that the process can restart");

    let record = fleet.state.job(&job.id).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Queued, "handed back for another attempt: {record:?}");
    assert_eq!(record.attempts, 1);
    assert!(record.error.as_deref().is_some_and(|e| e.contains("no progress")), "{record:?}");
    // The retry is published (after its back-off) and the hung delivery acknowledged: nothing lost.
    for _ in 0..300 {
        if Queue::Memory(fleet.queue.clone()).depth(Topic::Jobs).await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(Queue::Memory(fleet.queue.clone()).depth(Topic::Jobs).await.unwrap(), 1, "the retry waits in the queue");
    assert_eq!(fleet.queue.unacknowledged(Topic::Jobs), 0);
    let metrics = fleet.metrics.render();
    assert!(metrics.contains("rapid_worker_stalls_total 1"), "{metrics}");
    assert!(metrics.contains("rapid_worker_jobs_total{outcome=\"retried\"} 1"), "{metrics}");
    release_tx.send(()).unwrap();
    holder.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finishing_beside_the_next_one_are_all_settled_and_shutdown_waits_for_them() {
    let mut fleet = Harness::start("images", Duration::from_secs(60));
    let mut jobs = Vec::new();
    for index in 0..4 {
        jobs.push(fleet.submit(&format!("overlap-{index}"), 2).await);
    }
    fleet.wait_for(&jobs[1], JobStatus::is_final).await;
    // Stop while the backlog runs: what was taken finishes and is acknowledged, the rest waits.
    fleet.stop.send_replace(true);
    let (state, queue) = (fleet.state.clone(), fleet.queue.clone());
    assert_eq!((&mut fleet.worker).await.unwrap(), Stop::Shutdown);
    assert_eq!(queue.unacknowledged(Topic::Jobs), 0, "every delivery taken was settled before the worker returned");
    let mut succeeded = 0;
    for job in &jobs {
        let record = state.job(&job.id).await.unwrap().unwrap();
        match record.status {
            JobStatus::Succeeded => {
                succeeded += 1;
                assert!(fleet.image_path(job).exists(), "a succeeded job's image is stored: {record:?}");
            }
            JobStatus::Queued => {}
            other => panic!("a job ended {other:?} across a clean shutdown: {record:?}"),
        }
    }
    let waiting = Queue::Memory(queue.clone()).depth(Topic::Jobs).await.unwrap() as usize;
    assert!(succeeded >= 2, "{succeeded}");
    assert_eq!(succeeded + waiting, jobs.len(), "each job either finished or waits in the queue: none lost");
}
