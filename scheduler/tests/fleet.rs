//! The fleet end to end against real servers: RabbitMQ and Redis on localhost, an s3s-fs server
//! per test, the scheduler binary and worker processes (`support` starts them all).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::broker::PrivateBroker;
use support::{signal, Fleet, FleetOptions, ACME, GLOBEX};

const LONG: Duration = Duration::from_secs(90);

fn jobs(view: &Value) -> &Vec<Value> {
    view["jobs"].as_array().expect("jobs array")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fashion_request_reaches_s3_with_metadata_and_presigned_urls() {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    fleet.start_worker();
    let body = json!({
        "keywords": {"category": "dress", "fabric": ["silk", "linen"], "color": ["red", "ivory"]},
        "prompts": 2, "images_per_prompt": 2, "language": "en", "seed": 3, "steps": 3,
        "sampler": "dpmpp-2m", "karras_sigmas": true
    });
    let id = fleet.submit("/v1/fashion/designs", body).await;
    let view = fleet.wait_final(&id, LONG).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["prompts"].as_array().unwrap().len(), 2);
    assert_eq!(jobs(&view).len(), 4);

    let http = reqwest::Client::new();
    for job in jobs(&view) {
        assert_eq!(job["step"], job["total_steps"], "{job}");
        let images = job["images"].as_array().unwrap();
        assert_eq!(images.len(), 1, "{job}");
        let image = &images[0];
        assert!(image["key"].as_str().unwrap().starts_with(&format!("acme/{id}/")), "{image}");
        let response = http.get(image["url"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(response.status(), 200, "presigned URL {}", image["url"]);
        let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header("x-amz-meta-ai-generated").as_deref(), Some("true"));
        assert_eq!(header("x-amz-meta-model").as_deref(), Some("tiny-sd-clip-kg"));
        assert_eq!(header("x-amz-meta-seed"), Some(job["seed"].to_string()));
        let bytes = response.bytes().await.unwrap();
        // The bundled model links knowledge-graph entities: the job state and the PNG say which.
        let entities: Vec<&str> =
            job["entities"].as_array().unwrap().iter().map(|e| e["entity"].as_str().unwrap()).collect();
        assert!(entities.contains(&"dress"), "fashion keywords are graph entities: {job}");
        assert!(bytes.windows(b"entities".len()).any(|w| w == b"entities"), "no `entities` text chunk in the PNG");
        let karras = b"karras_sigmas\0true";
        assert!(bytes.windows(karras.len()).any(|w| w == karras), "the sampler option did not reach the worker");
        let decoded = image::load_from_memory(&bytes).expect("a PNG");
        assert_eq!((decoded.width(), decoded.height()), (256, 256), "64 px upscaled ×4");
    }
    // The event log tells each job's story: started, progress, the end with images and entities.
    let (status, log) = fleet.get(&format!("/v1/requests/{id}/events"), ACME).await;
    assert_eq!(status, 200, "{log}");
    let kinds: Vec<&str> =
        log["events"].as_array().unwrap().iter().map(|e| e["kind"]["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "started").count(), 4, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "succeeded").count(), 4, "{kinds:?}");
    let succeeded = log["events"].as_array().unwrap().iter().find(|e| e["kind"]["type"] == "succeeded").unwrap();
    assert!(!succeeded["kind"]["entities"].as_array().unwrap().is_empty(), "{succeeded}");
    assert!(!succeeded["timings_ms"].as_array().unwrap().is_empty(), "{succeeded}");
    assert_eq!(fleet.get(&format!("/v1/requests/{id}/events"), GLOBEX).await.0, 404);

    // A URL that was tampered with must not work: clients get signed URLs, not bucket access.
    let url = jobs(&view)[0]["images"][0]["url"].as_str().unwrap().replace("-0.png", "-1.png");
    assert_ne!(http.get(url).send().await.unwrap().status(), 200);
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuisine_menu_succeeds_and_expires_after_its_ttl() {
    let mut fleet = Fleet::start(FleetOptions { finished_ttl_secs: 2, ..FleetOptions::default() }).await;
    fleet.start_worker();
    let body = json!({
        "vendor": "Golden Wok",
        "dishes": ["mapo tofu", {"name": "kung pao chicken", "keywords": ["peanuts"]}],
        "images_per_dish": 1, "language": "zh", "steps": 2
    });
    let id = fleet.submit("/v1/cuisine/menus", body).await;
    let view = fleet.wait_final(&id, LONG).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(fleet.objects(&format!("acme/{id}/")).await.len(), 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = fleet.get(&format!("/v1/requests/{id}"), ACME).await;
    assert_eq!(status, 404, "a finished request expires after finished_ttl_secs");
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_skips_queued_jobs_and_stops_the_running_one() {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    fleet.start_worker();
    let body = json!({"prompts": ["a long job"], "images_per_prompt": 4, "steps": 1000, "sampler": "euler"});
    let id = fleet.submit("/v1/generations", body).await;
    fleet
        .wait_for(&id, LONG, "a running job past step 2", |v| {
            jobs(v).iter().any(|j| j["status"] == "running" && j["step"].as_u64() > Some(2))
        })
        .await;
    let (status, _) = fleet.delete(&format!("/v1/requests/{id}"), ACME).await;
    assert_eq!(status, 200);
    let view = fleet.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    for job in jobs(&view) {
        assert_eq!(job["status"], "cancelled", "{job}");
        assert!(job["images"].as_array().unwrap().is_empty());
    }
    let stopped = jobs(&view).iter().find(|j| j["attempts"] == 1).expect("the job that was running");
    assert!(stopped["step"].as_u64().unwrap() < 1000, "stopped between steps, not at the end: {stopped}");
    assert!(fleet.objects(&format!("acme/{id}/")).await.is_empty());
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_requests() {
    let fleet = Fleet::start(FleetOptions::default()).await;
    let id = fleet.submit("/v1/generations", json!({"prompts": ["a coat"]})).await;
    let path = format!("/v1/requests/{id}");
    assert_eq!(fleet.get(&path, ACME).await.0, 200);
    // Another tenant's id answers exactly as an id that does not exist: nothing tells them apart.
    let (status, foreign) = fleet.get(&path, GLOBEX).await;
    assert_eq!(status, 404, "another tenant's request is not found");
    let (_, unknown) = fleet.get("/v1/requests/no-such-request", GLOBEX).await;
    assert_eq!(foreign["error"]["code"], unknown["error"]["code"]);
    let message = |body: &Value, id: &str| body["error"]["message"].as_str().unwrap().replace(id, "<id>");
    assert_eq!(message(&foreign, &id), message(&unknown, "no-such-request"));
    assert_eq!(fleet.get(&format!("{path}/events"), GLOBEX).await.0, 404);
    assert_eq!(fleet.delete(&path, GLOBEX).await.0, 404);
    assert_eq!(fleet.get(&path, ACME).await.1["status"], "queued", "globex's DELETE changed nothing");
    assert_eq!(fleet.get(&path, "wrong-key").await.0, 401);
    let response = reqwest::get(format!("{}{path}", fleet.base)).await.unwrap();
    assert_eq!(response.status(), 401, "no key");

    // The open endpoints: the OpenAPI document lists every route, metrics count the request.
    let openapi: Value = reqwest::get(format!("{}/openapi.json", fleet.base)).await.unwrap().json().await.unwrap();
    for route in ["/v1/generations", "/v1/fashion/designs", "/v1/cuisine/menus", "/v1/requests/{id}"] {
        assert!(openapi["paths"][route].is_object(), "{route} missing from /openapi.json");
    }
    // The backlog is read from the broker at scrape time; a job the dispatcher is moving from its
    // lane into `jobs` (taken, its publish not yet confirmed) is in neither count for that instant.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = reqwest::get(format!("{}/metrics", fleet.base)).await.unwrap().text().await.unwrap();
        if metrics.contains("rapid_queue_depth 1") || std::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metrics.contains(r#"rapid_requests_accepted_total{kind="generation"} 1"#), "{metrics}");
    assert!(metrics.contains("rapid_queue_depth 1"), "{metrics}");
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field_and_enqueues_nothing() {
    let fleet = Fleet::start(FleetOptions::default()).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/generations", json!({"prompts": ["x"], "steps": 0}), "steps"),
        ("/v1/generations", json!({"prompts": ["x"], "steps": 1001}), "steps"),
        ("/v1/generations", json!({"prompts": ["x"], "steps": "many"}), "steps"),
        ("/v1/generations", json!({"prompts": ["x"], "width": 65}), "width"),
        ("/v1/generations", json!({"prompts": ["x"], "sampler": "heun"}), "sampler"),
        ("/v1/generations", json!({"prompts": ["x"], "sampler": "pndm", "karras_sigmas": true}), "karras_sigmas"),
        ("/v1/generations", json!({"prompts": ["x"], "format": "gif"}), "format"),
        ("/v1/generations", json!({"prompts": ["x"], "model": "sdxl"}), "model"),
        ("/v1/generations", json!({"prompts": ["x"], "stepz": 20}), "stepz"),
        ("/v1/generations", json!({"prompts": ["x"], "callback_url": "ftp://example.com/x"}), "callback_url"),
        ("/v1/generations", json!({"prompts": ["x"], "images_per_prompt": 0}), "images_per_prompt"),
        ("/v1/generations", json!({"prompts": []}), "prompts"),
        ("/v1/generations", json!({"prompts": ["ok", "  "]}), "prompts[1]"),
        ("/v1/generations", json!({"steps": 3}), "prompts"),
        ("/v1/fashion/designs", json!({"keywords": {}}), "keywords"),
        ("/v1/fashion/designs", json!({"keywords": {"color": "red"}, "prompts": 0}), "prompts"),
        ("/v1/fashion/designs", json!({"keywords": {"colour": "red"}}), "keywords"),
        ("/v1/fashion/designs", json!({"keywords": {"color": "red"}, "language": "fr"}), "language"),
        ("/v1/cuisine/menus", json!({"vendor": "v", "dishes": []}), "dishes"),
        ("/v1/cuisine/menus", json!({"vendor": "v", "dishes": ["soup", " "]}), "dishes[1].name"),
    ];
    for (path, body, field) in cases {
        let (status, error) = fleet.post(path, ACME, &body).await;
        assert!((400..500).contains(&status), "{path} {body}: {status} {error}");
        let named = error["error"]["field"].as_str().unwrap_or_default();
        assert!(named.starts_with(field), "{path} {body}: expected field `{field}`, got {error}");
        assert!(!error["error"]["message"].as_str().unwrap_or_default().is_empty(), "{error}");
    }
    let response = reqwest::Client::new()
        .post(format!("{}/v1/generations", fleet.base))
        .bearer_auth(ACME)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(fleet.jobs_waiting().await, 0, "a rejected request enqueues nothing");
    assert!(fleet.redis_keys().await.is_empty(), "a rejected request writes no state");
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_nothing() {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    fleet.start_worker();
    let id = fleet.submit("/v1/generations", json!({"prompts": ["a parka"], "steps": 150, "sampler": "euler"})).await;
    fleet.wait_for(&id, LONG, "the job past step 5", |v| jobs(v)[0]["step"].as_u64() > Some(5)).await;
    signal(&fleet.workers[0], "KILL");
    fleet.start_worker();
    let view = fleet.wait_final(&id, LONG).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(jobs(&view)[0]["attempts"], 2, "redelivered once: {view}");
    let objects = fleet.objects(&format!("acme/{id}/")).await;
    assert_eq!(objects.len(), 1, "exactly one set of objects: {objects:?}");
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_requeues_the_job_in_hand_after_the_grace_period() {
    let mut fleet = Fleet::start(FleetOptions { shutdown_grace_secs: 1, ..FleetOptions::default() }).await;
    fleet.start_worker();
    let id =
        fleet.submit("/v1/generations", json!({"prompts": ["a trench coat"], "steps": 400, "sampler": "euler"})).await;
    fleet.wait_for(&id, LONG, "the job running", |v| jobs(v)[0]["step"].as_u64() > Some(2)).await;
    signal(&fleet.workers[0], "TERM");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = fleet.workers[0].try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the worker did not exit after SIGTERM\n{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "clean exit after SIGTERM: {status}\n{}", fleet.logs());
    let (_, view) = fleet.get(&format!("/v1/requests/{id}"), ACME).await;
    assert_eq!(jobs(&view)[0]["status"], "queued", "the unfinished job went back to the queue: {view}");
    assert_eq!(fleet.jobs_waiting().await, 1);
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_compatible_jobs_is_denoised_in_one_batch() {
    let mut fleet = Fleet::start(FleetOptions { max_batch: 4, ..FleetOptions::default() }).await;
    // Four compatible jobs, then one with other steps, all waiting before the worker starts.
    let body = json!({"prompts": ["a scarf", "a wool coat"], "images_per_prompt": 2, "steps": 2, "seed": 9});
    let together_id = fleet.submit("/v1/generations", body).await;
    let apart_id = fleet.submit("/v1/generations", json!({"prompts": ["a hat"], "steps": 3})).await;
    fleet.start_worker();
    let together = fleet.wait_final(&together_id, LONG).await;
    let apart = fleet.wait_final(&apart_id, LONG).await;
    assert_eq!(together["status"], "succeeded", "{together}");
    assert_eq!(apart["status"], "succeeded", "{apart}");
    for job in jobs(&together) {
        assert_eq!(job["batch_size"], 4, "compatible waiting jobs share their U-Net calls: {job}");
        assert_eq!(job["step"], job["total_steps"], "{job}");
        assert_eq!(job["images"].as_array().unwrap().len(), 1, "{job}");
    }
    let images: std::collections::HashSet<_> = jobs(&together).iter().map(|j| j["images"][0]["key"].clone()).collect();
    assert_eq!(images.len(), 4, "each job of a batch stores its own image");
    assert_eq!(jobs(&apart)[0]["batch_size"], 1, "a job with other steps runs alone: {apart}");
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_work_overtakes_waiting_batch_work() {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    let batch = json!({"vendor": "v", "dishes": ["soup", "noodles", "dumplings", "rice", "tea"], "steps": 2});
    let batch_id = fleet.submit("/v1/cuisine/menus", batch).await;
    let interactive_id = fleet.submit("/v1/generations", json!({"prompts": ["a scarf"], "steps": 2})).await;
    fleet.start_worker();
    let batch_view = fleet.wait_final(&batch_id, LONG).await;
    let interactive_view = fleet.wait_final(&interactive_id, LONG).await;
    let interactive_start = jobs(&interactive_view)[0]["started_ms"].as_u64();
    assert!(interactive_start.is_some(), "{interactive_view}");
    for job in jobs(&batch_view) {
        assert!(job["started_ms"].as_u64() > interactive_start, "batch job {job} started before the interactive one");
    }
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_with_backoff_or_dead_letter_with_the_reason() {
    let mut fleet = Fleet::start(FleetOptions { phantom_model: true, ..FleetOptions::default() }).await;
    fleet.start_worker();
    fleet.wait_worker_ready(0).await;
    // Storage down: the upload fails, the job is retried after the back-off and then succeeds.
    fleet.stop_s3();
    let id = fleet.submit("/v1/generations", json!({"prompts": ["a beret"], "steps": 2})).await;
    let view = fleet
        .wait_for(&id, LONG, "a failed first attempt", |v| {
            jobs(v)[0]["attempts"] == 1 && jobs(v)[0]["status"] == "queued"
        })
        .await;
    assert!(jobs(&view)[0]["error"].as_str().unwrap().contains("S3"), "{view}");
    fleet.start_s3();
    let view = fleet.wait_final(&id, LONG).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert!(jobs(&view)[0]["attempts"].as_u64() >= Some(2), "{view}");

    // A model no worker serves is a permanent failure: dead-lettered at once, not retried.
    let id =
        fleet.submit("/v1/generations", json!({"prompts": ["a beret"], "model": "phantom", "upscale": false})).await;
    let view = fleet.wait_final(&id, LONG).await;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(jobs(&view)[0]["attempts"], 1);
    assert!(jobs(&view)[0]["error"].as_str().unwrap().contains("unknown model `phantom`"), "{view}");
    assert_eq!(fleet.queue_depth("jobs.dead").await, 1);
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_messages_are_dead_lettered_with_the_reason() {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    fleet.start_worker();
    let channel = fleet.amqp().await;
    let queue = format!("{}.jobs", fleet.prefix);
    let newer = json!({"v": 99, "id": "from-the-future"}).to_string();
    for body in [b"not json at all".as_slice(), newer.as_bytes()] {
        channel
            .basic_publish("", &queue, Default::default(), body, lapin::BasicProperties::default().with_priority(1))
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + LONG;
    while fleet.queue_depth("jobs.dead").await < 2 {
        assert!(std::time::Instant::now() < deadline, "not dead-lettered\n{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let message = channel
            .basic_get(&format!("{queue}.dead"), lapin::options::BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a dead letter");
        let headers = message.delivery.properties.headers().clone().unwrap();
        match headers.inner().get("x-rapid-reason") {
            Some(lapin::types::AMQPValue::LongString(reason)) => reasons.push(reason.to_string()),
            other => panic!("x-rapid-reason is {other:?}"),
        }
    }
    assert!(reasons.iter().any(|r| r.contains("not JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("unsupported schema version 99")), "{reasons:?}");
    assert_eq!(fleet.jobs_waiting().await, 0);
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_signed_and_retried() {
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::{Arc, Mutex};

    type Calls = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;
    let received: Calls = Arc::default();
    let sink = Arc::clone(&received);
    // The client's endpoint fails the first POST and accepts the second.
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                let mut calls = sink.lock().unwrap();
                calls.push((headers, body.to_vec()));
                if calls.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    // The receiver is on loopback, which callbacks may reach only when allowed.
    let options =
        FleetOptions { scheduler_extra: "callback_allow_private_addresses = true".into(), ..Default::default() };
    let mut fleet = Fleet::start(options).await;
    fleet.start_worker();
    let id = fleet.submit("/v1/generations", json!({"prompts": ["a hat"], "steps": 2, "callback_url": hook})).await;
    fleet.wait_final(&id, LONG).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "callback not retried\n{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = received.lock().unwrap().clone();
    for (headers, body) in &calls {
        let timestamp: u64 = headers["x-rapid-timestamp"].to_str().unwrap().parse().unwrap();
        let expected = format!("sha256={}", rapid_scheduler::callbacks::sign("test-secret", timestamp, body));
        assert_eq!(headers["x-rapid-signature"].to_str().unwrap(), expected);
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["request"]["request_id"], id.as_str());
        assert_eq!(payload["request"]["status"], "succeeded");
    }
    fleet.cleanup_amqp().await;
}

/// Issue 19's broker fault, once: RabbitMQ's application stopped for a few seconds mid-backlog,
/// on a node of the test's own. The scheduler says not-ready meanwhile; the scheduler, its
/// dispatcher and the worker reconnect by themselves; every job ends once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_backlog_loses_nothing_and_everyone_reconnects() {
    let broker = PrivateBroker::start();
    let fleet = Fleet::start(FleetOptions { amqp_urls: vec![broker.url()], ..FleetOptions::default() }).await;
    backlog_survives(fleet, || broker.stop_app(), || broker.start_app(), true).await;
}

/// Issue 19's high availability: quorum queues on a three-node cluster, and the node every
/// client is connected to stops for good mid-backlog. The clients move to the next node of
/// `amqp.url`; the queues, replicated, lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_cluster_loses_a_node_mid_backlog_and_loses_nothing() {
    let nodes = PrivateBroker::cluster(3);
    let amqp_urls = nodes.iter().map(PrivateBroker::url).collect();
    let fleet = Fleet::start(FleetOptions { amqp_urls, queue_type: "quorum", ..FleetOptions::default() }).await;
    backlog_survives(fleet, || nodes[0].stop(), || {}, false).await;
}

/// Starts a 16-job backlog on one worker, runs `fault` once a few jobs are done (when
/// `broker_away`, the scheduler must say not-ready then), then `recover`; every job must then
/// succeed once, the worker must still run, and a new request must go through.
async fn backlog_survives(mut fleet: Fleet, fault: impl FnOnce(), recover: impl FnOnce(), broker_away: bool) {
    fleet.start_worker();
    fleet.wait_worker_ready(0).await;
    // Jobs long enough (24 steps) that the backlog outlasts the seconds a fault takes to inject.
    let body =
        json!({"prompts": ["a red dress", "a navy coat"], "images_per_prompt": 8, "steps": 24, "priority": "batch"});
    let id = fleet.submit("/v1/generations", body).await;
    fleet.wait_for(&id, LONG, "a few jobs done", |v| v["progress"]["jobs_finished"].as_u64() >= Some(2)).await;

    fault();
    let readiness = fleet.readiness().await;
    let (_, during) = fleet.get(&format!("/v1/requests/{id}"), ACME).await;
    let finished = during["progress"]["jobs_finished"].as_u64().unwrap();
    println!("fault injected with {finished} of 16 jobs finished; /readyz answered {readiness:?}");
    assert!(finished < 16, "the fault must hit a backlog in flight: {during}");
    if broker_away {
        assert_eq!(readiness, Some(503), "not ready while the broker is away\n{}", fleet.logs());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    recover();

    let view = fleet.wait_final(&id, LONG).await;
    assert_eq!(view["status"], "succeeded", "{view}\n{}", fleet.logs());
    let keys: std::collections::HashSet<_> = jobs(&view).iter().map(|j| j["images"][0]["key"].clone()).collect();
    assert_eq!(keys.len(), 16, "16 jobs, 16 images: {view}");
    assert!(fleet.workers[0].try_wait().unwrap().is_none(), "the worker kept running\n{}", fleet.logs());

    // The scheduler is on the broker again: ready, and a new request goes through.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fleet.readiness().await != Some(200) {
        assert!(std::time::Instant::now() < deadline, "not ready again after the broker came back\n{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = fleet.submit("/v1/generations", json!({"prompts": ["a wool scarf"], "steps": 2})).await;
    assert_eq!(fleet.wait_final(&again, LONG).await["status"], "succeeded", "{}", fleet.logs());
}
