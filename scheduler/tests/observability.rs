//! Issue 20's observability, end to end on a real fleet: a caller's W3C `traceparent` reaches the
//! jobs' spans (exported over OTLP/HTTP by both binaries) and the stored images' metadata; logs
//! come out as JSON lines when configured; and a real Prometheus (Debian's, fetched by
//! `deploy/test-services.sh`) scrapes the scheduler and a worker.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, repo, Fleet, FleetOptions, ACME};

const LONG: Duration = Duration::from_secs(120);

/// An OTLP/HTTP collector stand-in: keeps the body of every `POST /v1/traces`.
async fn collector() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = Arc::clone(&received);
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().unwrap().push(body.to_vec());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (endpoint, received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_traceparent_reaches_the_jobs_spans_and_the_stored_image() {
    let (endpoint, exported) = collector().await;
    let options = FleetOptions {
        extra_sections: format!("[telemetry]\nlog_format = \"json\"\notlp_endpoint = \"{endpoint}\"\n"),
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start(options).await;
    fleet.start_worker();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = reqwest::Client::new()
        .post(format!("{}/v1/generations", fleet.base))
        .bearer_auth(ACME)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"prompts": ["a red dress"], "steps": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["request_id"].as_str().unwrap().to_owned();
    let view = fleet.wait_final(&id, LONG).await;
    assert_eq!(view["status"], "succeeded", "{view}");

    // The image names the caller's trace.
    let key = view["jobs"][0]["images"][0]["key"].as_str().unwrap();
    let head = fleet.s3_client().head_object().bucket(&fleet.bucket).key(key).send().await.unwrap();
    let traceparent = head.metadata().and_then(|m| m.get("traceparent")).cloned().unwrap_or_default();
    assert!(traceparent.starts_with(&format!("00-{trace_id}-")), "image metadata traceparent {traceparent:?}");

    // Both binaries export spans of that trace (OTLP protobuf carries the 16 trace-id bytes and
    // each service's name); the batch exporter sends every few seconds.
    let trace_bytes: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bodies = exported.lock().unwrap().clone();
        let of_trace =
            |service: &str| bodies.iter().any(|b| contains(b, &trace_bytes) && contains(b, service.as_bytes()));
        if of_trace("rapid-scheduler") && of_trace("rapid-worker") {
            break;
        }
        assert!(Instant::now() < deadline, "spans of the trace not exported by both binaries ({} posts)", bodies.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `log_format = "json"`: every line either binary writes is one JSON object.
    for name in ["scheduler.log", "worker-0.log"] {
        let log = fleet.log(name);
        assert!(!log.is_empty(), "{name} is empty");
        for line in log.lines() {
            let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
            assert!(parsed["level"].is_string() && parsed["fields"].is_object(), "{name}: {line}");
        }
    }
    fleet.cleanup_amqp().await;
}

/// A Prometheus server of the test's own, scraping every second.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[(&str, String)]) -> Self {
        let binary = repo().join("deploy/observability/.cache/prometheus");
        assert!(binary.exists(), "{} is missing: run `bash deploy/test-services.sh`", binary.display());
        let dir = tempfile::tempdir().unwrap();
        let jobs: String = targets
            .iter()
            .map(|(job, target)| format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"))
            .collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, format!("global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}")).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Self { child, base: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    /// The samples of an instant query, as (labels, value) pairs; empty while Prometheus starts.
    async fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let Ok(response) =
            reqwest::Client::new().get(format!("{}/api/v1/query", self.base)).query(&[("query", promql)]).send().await
        else {
            return Vec::new();
        };
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let samples = answer["data"]["result"].as_array().cloned().unwrap_or_default();
        samples
            .into_iter()
            .map(|s| (s["metric"].clone(), s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)))
            .collect()
    }

    /// Waits until `promql` has a sample that satisfies `wanted`.
    async fn wait_for(&self, promql: &str, wanted: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let samples = self.query(promql).await;
            if samples.iter().any(|(_, value)| wanted(*value)) {
                return;
            }
            let log = std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "`{promql}` never as wanted: {samples:?}\n{log}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_scheduler_and_a_worker() {
    let worker_port = free_port();
    let options =
        FleetOptions { worker_extra: format!("listen = \"127.0.0.1:{worker_port}\""), ..FleetOptions::default() };
    let mut fleet = Fleet::start(options).await;
    fleet.start_worker();
    fleet.wait_worker_ready(0).await;
    let worker = format!("127.0.0.1:{worker_port}");
    let ready = reqwest::get(format!("http://{worker}/readyz")).await.unwrap().status();
    assert_eq!(ready, 200, "a subscribed worker with warm models is ready");

    let scheduler = fleet.base.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&[("rapid-scheduler", scheduler), ("rapid-worker", worker)]);
    let id = fleet.submit("/v1/generations", json!({"prompts": ["a red dress"], "steps": 2})).await;
    assert_eq!(fleet.wait_final(&id, LONG).await["status"], "succeeded");

    prometheus.wait_for("sum(up)", |up| up == 2.0).await;
    prometheus.wait_for("rapid_worker_ready", |ready| ready == 1.0).await;
    prometheus.wait_for("sum(rapid_requests_accepted_total)", |n| n >= 1.0).await;
    prometheus.wait_for("rapid_worker_jobs_total{outcome=\"succeeded\"}", |n| n >= 1.0).await;
    prometheus.wait_for("rapid_worker_stage_seconds_count{stage=\"unet\"}", |n| n >= 1.0).await;
    prometheus.wait_for("rapid_worker_queue_wait_seconds_count{priority=\"interactive\"}", |n| n >= 1.0).await;
    prometheus
        .wait_for("sum(rapid_http_request_duration_seconds_count{route=\"/v1/generations\",status=\"202\"})", |n| {
            n >= 1.0
        })
        .await;
    fleet.cleanup_amqp().await;
}
