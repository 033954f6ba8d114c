//! A real fleet for one test: its own s3s-fs server (own port and folder), the scheduler binary,
//! worker processes, and RabbitMQ queues and Redis keys under a prefix no other test uses. Needs
//! RabbitMQ and Redis on localhost and s3s-fs installed: `bash deploy/test-services.sh`.
//! Every child process is killed when the `Fleet` is dropped.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod broker;
pub mod redis_server;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ACME: &str = "acme-test-key";
pub const GLOBEX: &str = "globex-test-key";
const SHARED_BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The lanes of the two tenants, where new jobs wait for the dispatcher.
const LANES: [&str; 4] = ["jobs.interactive.acme", "jobs.batch.acme", "jobs.interactive.globex", "jobs.batch.globex"];
const S3_KEY: &str = "fleet-test";
const S3_SECRET: &str = "fleet-test-secret";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn s3s_fs() -> PathBuf {
    let installed = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|home| home.join("bin/s3s-fs"))
        .filter(|p| p.exists());
    installed.unwrap_or_else(|| PathBuf::from("s3s-fs"))
}

fn worker_binary() -> PathBuf {
    // Cargo builds every workspace binary into the same folder; rapid-worker's own integration
    // tests make `cargo test --workspace` build it.
    let path = Path::new(env!("CARGO_BIN_EXE_rapid-scheduler")).with_file_name("rapid-worker");
    assert!(path.exists(), "{} is missing: run `cargo build --release -p rapid-worker` first", path.display());
    path
}

fn hash(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// Knobs a test may turn.
#[derive(Clone)]
pub struct FleetOptions {
    pub max_attempts: u32,
    pub retry_backoff_ms: u64,
    pub shutdown_grace_secs: u64,
    pub finished_ttl_secs: u64,
    pub callback_backoff_ms: u64,
    /// `scheduler.callback_max_attempts`.
    pub callback_max_attempts: u32,
    /// More keys of the `[worker]` section, as TOML lines.
    pub worker_extra: String,
    /// Environment variables of every worker process (e.g. `FAILPOINTS`).
    pub worker_env: Vec<(String, String)>,
    /// More sections at the end of the configuration file (e.g. `[telemetry]`), as TOML.
    pub extra_sections: String,
    /// A model the scheduler accepts but no worker serves (to provoke a permanent failure).
    pub phantom_model: bool,
    /// The workers' `max_batch` (cross-request batching; 1 = off).
    pub max_batch: usize,
    /// More keys of the `[scheduler]` section, as TOML lines.
    pub scheduler_extra: String,
    /// `s3.presign_expiry_secs`.
    pub presign_expiry_secs: u64,
    /// The tenants' `limits` tables, as inline TOML (`{ requests_per_minute = 2 }`).
    pub acme_limits: String,
    pub globex_limits: String,
    /// The broker's nodes: the machine's RabbitMQ unless a test brings its own
    /// ([`broker::PrivateBroker`]).
    pub amqp_urls: Vec<String>,
    /// `amqp.queue_type`.
    pub queue_type: &'static str,
    /// The state store: the machine's Redis unless a test brings its own ([`redis_server::PrivateRedis`]).
    pub redis_url: String,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            retry_backoff_ms: 500,
            shutdown_grace_secs: 30,
            finished_ttl_secs: 600,
            callback_backoff_ms: 200,
            callback_max_attempts: 3,
            worker_extra: String::new(),
            worker_env: Vec::new(),
            extra_sections: String::new(),
            phantom_model: false,
            max_batch: 1,
            scheduler_extra: String::new(),
            presign_expiry_secs: 3600,
            acme_limits: "{}".into(),
            globex_limits: "{}".into(),
            amqp_urls: vec![SHARED_BROKER.into()],
            queue_type: "classic",
            redis_url: "redis://127.0.0.1:6379/0".into(),
        }
    }
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub prefix: String,
    pub base: String,
    amqp_urls: Vec<String>,
    pub s3_port: u16,
    pub bucket: String,
    s3: Option<Child>,
    scheduler: Option<Child>,
    pub workers: Vec<Child>,
    /// The environment of the workers started from now on.
    pub worker_env: Vec<(String, String)>,
    http: reqwest::Client,
}

impl Fleet {
    pub async fn start(options: FleetOptions) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "test-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("s3")).unwrap();
        let (s3_port, http_port) = (free_port(), free_port());
        let bucket = "images".to_owned();
        let model = repo().join("tests/fixtures/models/tiny-sd-clip-kg");
        let phantom = if options.phantom_model {
            "[scheduler.models.phantom]\nwidth = 64\nheight = 64\nhas_upscaler = false\n"
        } else {
            ""
        };
        let config = format!(
            r#"
[amqp]
url = {amqp_urls:?}
queue_prefix = "{prefix}"
queue_type = "{queue_type}"
[redis]
url = "{redis_url}"
key_prefix = "{prefix}"
finished_ttl_secs = {ttl}
[s3]
endpoint = "http://127.0.0.1:{s3_port}"
region = "us-east-1"
bucket = "{bucket}"
path_style = true
access_key = "{S3_KEY}"
secret_key = "{S3_SECRET}"
create_bucket = true
presign_expiry_secs = {presign_expiry}
[scheduler]
listen = "127.0.0.1:{http_port}"
callback_secret = "test-secret"
callback_backoff_ms = {callback_backoff}
callback_max_attempts = {callback_attempts}
default_model = "tiny-sd-clip-kg"
{scheduler_extra}
[scheduler.models.tiny-sd-clip-kg]
width = 64
height = 64
{phantom}
[scheduler.defaults]
steps = 4
[worker]
max_attempts = {attempts}
retry_backoff_ms = {backoff}
shutdown_grace_secs = {grace}
progress_interval_ms = 50
threads = 1
max_batch = {max_batch}
{worker_extra}
[worker.models]
tiny-sd-clip-kg = "{model}"
[[tenants]]
name = "acme"
api_key_sha256 = "{acme}"
limits = {acme_limits}
[[tenants]]
name = "globex"
api_key_sha256 = "{globex}"
limits = {globex_limits}
{extra_sections}
"#,
            extra_sections = options.extra_sections,
            ttl = options.finished_ttl_secs,
            callback_backoff = options.callback_backoff_ms,
            callback_attempts = options.callback_max_attempts,
            worker_extra = options.worker_extra,
            attempts = options.max_attempts,
            backoff = options.retry_backoff_ms,
            grace = options.shutdown_grace_secs,
            max_batch = options.max_batch,
            scheduler_extra = options.scheduler_extra,
            presign_expiry = options.presign_expiry_secs,
            acme_limits = options.acme_limits,
            globex_limits = options.globex_limits,
            model = model.display(),
            amqp_urls = options.amqp_urls,
            queue_type = options.queue_type,
            redis_url = options.redis_url,
            acme = hash(ACME),
            globex = hash(GLOBEX),
        );
        let config_path = dir.path().join("fleet.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut fleet = Self {
            s3: None,
            scheduler: None,
            dir,
            config: config_path,
            prefix,
            base: format!("http://127.0.0.1:{http_port}"),
            amqp_urls: options.amqp_urls.clone(),
            s3_port,
            bucket,
            workers: Vec::new(),
            worker_env: options.worker_env.clone(),
            http: reqwest::Client::new(),
        };
        // S3 first: the scheduler checks its bucket when it starts.
        fleet.start_s3();
        fleet.start_scheduler().await;
        fleet
    }

    /// Starts the scheduler (its log goes on in `scheduler.log`) and waits until it is ready.
    async fn start_scheduler(&mut self) {
        let log = self.dir.path().join("scheduler.log");
        let scheduler = spawn(
            Command::new(env!("CARGO_BIN_EXE_rapid-scheduler")).args(["serve", "--config"]).arg(&self.config),
            &log,
        );
        self.scheduler = Some(scheduler);
        self.wait_ready().await;
    }

    /// Kills the scheduler (SIGKILL: whatever it was doing is cut) and starts a new one.
    pub async fn kill_scheduler_and_restart(&mut self) {
        if let Some(mut scheduler) = self.scheduler.take() {
            scheduler.kill().ok();
            scheduler.wait().ok();
        }
        self.start_scheduler().await;
    }

    /// Stops the scheduler as an orchestrator does (SIGTERM: it finishes what it is doing, the
    /// dispatcher's move in hand included) and starts it again.
    pub async fn restart_scheduler(&mut self) {
        if let Some(mut scheduler) = self.scheduler.take() {
            signal(&scheduler, "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while scheduler.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "the scheduler did not stop on SIGTERM\n{}", self.logs());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.start_scheduler().await;
    }

    pub fn start_s3(&mut self) {
        let child = spawn(
            Command::new(s3s_fs())
                .args(["--host", "127.0.0.1", "--port", &self.s3_port.to_string()])
                .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
                .arg(self.dir.path().join("s3")),
            &self.dir.path().join("s3s-fs.log"),
        );
        self.s3 = Some(child);
        wait_port(self.s3_port);
    }

    pub fn stop_s3(&mut self) {
        if let Some(mut s3) = self.s3.take() {
            s3.kill().ok();
            s3.wait().ok();
        }
    }

    /// The status `/readyz` answers, or `None` when the scheduler does not answer at all.
    pub async fn readiness(&self) -> Option<u16> {
        let response = self.http.get(format!("{}/readyz", self.base)).send().await.ok()?;
        Some(response.status().as_u16())
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "scheduler not ready in 30 s; log:\n{}", self.log("scheduler.log"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a worker process; its log is `worker-{n}.log` in the test folder.
    pub fn start_worker(&mut self) -> usize {
        let n = self.workers.len();
        let log = self.dir.path().join(format!("worker-{n}.log"));
        let mut command = Command::new(worker_binary());
        command.args(["run", "--config"]).arg(&self.config).current_dir(repo()).envs(self.worker_env.iter().cloned());
        let child = spawn(&mut command, &log);
        self.workers.push(child);
        n
    }

    /// Waits until worker `n` is connected and consuming.
    pub async fn wait_worker_ready(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log(&format!("worker-{n}.log")).contains("waiting for jobs") {
            assert!(Instant::now() < deadline, "worker {n} not ready in 30 s\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Every log of this fleet, for assertion messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") {
                all.push_str(&format!("--- {name} ---\n{}\n", self.log(&name)));
            }
        }
        all
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let response = self.http.post(format!("{}{path}", self.base)).bearer_auth(key).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str, key: &str) -> (u16, Value) {
        let response = self.http.delete(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits and returns the request id, failing the test on anything but 202.
    pub async fn submit(&self, path: &str, body: Value) -> String {
        self.submit_as(ACME, path, body).await
    }

    /// [`Self::submit`] as the tenant whose API key is `key`.
    pub async fn submit_as(&self, key: &str, path: &str, body: Value) -> String {
        let (status, accepted) = self.post(path, key, &body).await;
        assert_eq!(status, 202, "{path}: {accepted}");
        accepted["request_id"].as_str().unwrap().to_owned()
    }

    /// Polls the request until `done` holds for its view, or fails after `limit`.
    pub async fn wait_for(&self, id: &str, limit: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (status, view) = self.get(&format!("/v1/requests/{id}"), ACME).await;
            if status == 200 && done(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; last view: {view}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_final(&self, id: &str, limit: Duration) -> Value {
        self.wait_for(id, limit, "the request to end", |v| !matches!(v["status"].as_str(), Some("queued" | "running")))
            .await
    }

    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        let credentials = aws_sdk_s3::config::Credentials::new(S3_KEY, S3_SECRET, None, None, "test");
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{}", self.s3_port))
            .force_path_style(true)
            .credentials_provider(credentials)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Keys of every object stored under `prefix`.
    pub async fn objects(&self, prefix: &str) -> Vec<String> {
        let listed = self.s3_client().list_objects_v2().bucket(&self.bucket).prefix(prefix).send().await.unwrap();
        listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
    }

    /// A channel on the first of the broker's nodes that answers.
    pub async fn amqp(&self) -> lapin::Channel {
        for url in &self.amqp_urls {
            if let Ok(connection) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await {
                return connection.create_channel().await.unwrap();
            }
        }
        panic!("no RabbitMQ node of {:?} answers", self.amqp_urls)
    }

    /// Messages waiting in one of this fleet's queues (`jobs`, `jobs.dead`, …).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let channel = self.amqp().await;
        let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let name = format!("{}.{queue}", self.prefix);
        channel.queue_declare(&name, options, Default::default()).await.map(|q| q.message_count()).unwrap_or(0)
    }

    /// Every job not yet taken by a worker, once the dispatcher has settled: counted while it
    /// moves jobs from the lanes into `jobs`, a job between the two would be missed. So this
    /// waits (up to 5 s) for empty lanes and a steady `jobs`; the tests that call it queue fewer
    /// jobs than `dispatch_ready_jobs`, so the lanes do empty.
    pub async fn jobs_waiting(&self) -> u32 {
        let started = Instant::now();
        let mut last = None;
        loop {
            let mut lanes = 0;
            for lane in LANES {
                lanes += self.queue_depth(lane).await;
            }
            let ready = self.queue_depth("jobs").await;
            if (lanes == 0 && last == Some(ready)) || started.elapsed() > Duration::from_secs(5) {
                return ready + lanes;
            }
            last = (lanes == 0).then_some(ready);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Empties `jobs` and the lanes (the messages are gone; their records stay queued).
    pub async fn purge_jobs(&self) {
        let channel = self.amqp().await;
        for queue in ["jobs"].into_iter().chain(LANES) {
            channel.queue_purge(&format!("{}.{queue}", self.prefix), Default::default()).await.ok();
        }
    }

    pub async fn redis_keys(&self) -> Vec<String> {
        let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query_async(&mut connection).await.unwrap()
    }

    pub async fn cleanup_amqp(&self) {
        let channel = self.amqp().await;
        for queue in ["jobs", "jobs.dead", "callbacks", "callbacks.dead"].into_iter().chain(LANES) {
            let name = format!("{}.{queue}", self.prefix);
            channel.queue_delete(&name, Default::default()).await.ok();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain(self.scheduler.as_mut()).chain(self.s3.as_mut()) {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

fn spawn(command: &mut Command, log: &Path) -> Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    command
        .env("RAPID_LOG", "info")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e} (run `bash deploy/test-services.sh`)"))
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port} after 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGKILL (what `Child::kill` sends on Unix) or SIGTERM to a child.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success(), "kill -{name} failed");
}
