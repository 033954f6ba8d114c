//! Many tenants on one fleet: idempotent retries, hostile input that must get a 4xx in the API's
//! error shape with nothing enqueued, quotas, and fair share between tenants. Real RabbitMQ, Redis
//! and s3s-fs; only the fair-share test runs a worker, so elsewhere every accepted job stays
//! countable in the queues.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Fleet, FleetOptions, ACME, GLOBEX};

/// POSTs `body` with an `Idempotency-Key`; returns the status, the replay header and the body.
async fn post_with_key(base: &str, tenant: &str, key: &str, body: &Value) -> (u16, bool, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/generations"))
        .bearer_auth(tenant)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    (status, replayed, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_submit_gets_the_first_answer_and_enqueues_once() {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    let body = json!({"prompts": ["a navy coat"], "seed": 1});

    let (status, replayed, first) = post_with_key(&fleet.base, ACME, "order-1", &body).await;
    assert_eq!((status, replayed), (202, false), "{first}");
    let (status, replayed, again) = post_with_key(&fleet.base, ACME, "order-1", &body).await;
    assert_eq!((status, replayed), (202, true), "{again}");
    assert_eq!(again, first, "the retry gets the original answer, the same request id included");

    // Eight duplicates at once: one runs, the others wait for its answer.
    let concurrent = json!({"prompts": ["a red dress"], "seed": 2});
    let duplicates: Vec<_> = (0..8)
        .map(|_| {
            let (base, body) = (fleet.base.clone(), concurrent.clone());
            tokio::spawn(async move { post_with_key(&base, ACME, "order-2", &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for duplicate in duplicates {
        answers.push(duplicate.await.unwrap());
    }
    let ids: Vec<&str> = answers.iter().map(|(_, _, body)| body["request_id"].as_str().unwrap()).collect();
    assert!(answers.iter().all(|(status, _, _)| *status == 202), "{answers:?}");
    assert!(ids.iter().all(|id| *id == ids[0]), "one request for eight duplicates: {ids:?}");
    assert_eq!(answers.iter().filter(|(_, replayed, _)| !replayed).count(), 1, "exactly one ran");

    let (status, _, error) = post_with_key(&fleet.base, ACME, "order-1", &json!({"prompts": ["a hat"]})).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "Idempotency-Key", "{error}");

    let (status, replayed, other_tenant) = post_with_key(&fleet.base, GLOBEX, "order-1", &body).await;
    assert_eq!((status, replayed), (202, false), "keys are per tenant: {other_tenant}");
    assert_ne!(other_tenant["request_id"], first["request_id"]);

    // A rejected request gives its key up: the corrected retry runs.
    let (status, _, _) = post_with_key(&fleet.base, ACME, "order-3", &json!({"prompts": ["x"], "steps": 0})).await;
    assert_eq!(status, 422);
    let (status, replayed, _) = post_with_key(&fleet.base, ACME, "order-3", &json!({"prompts": ["x"]})).await;
    assert_eq!((status, replayed), (202, false));

    // The answers live in Redis, not in the scheduler's memory.
    fleet.restart_scheduler().await;
    let (status, replayed, after_restart) = post_with_key(&fleet.base, ACME, "order-1", &body).await;
    assert_eq!((status, replayed), (202, true), "{after_restart}");
    assert_eq!(after_restart, first);

    let enqueued = fleet.jobs_waiting().await;
    println!("idempotency: 15 submits with 3 keys of 2 tenants, 8 of them at once -> {enqueued} jobs enqueued");
    assert_eq!(enqueued, 4, "order-1 (acme), order-2, order-1 (globex), order-3");
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_a_4xx_naming_the_field_and_enqueues_nothing() {
    let options = FleetOptions {
        scheduler_extra: r#"blocked_terms = { en = ["gore"], zh = ["血腥"] }
limits = { max_prompt_bytes = 300 }"#
            .into(),
        ..Default::default()
    };
    let fleet = Fleet::start(options).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/generations", json!({"prompts": ["x"], "callback_url": "http://169.254.169.254/latest"}), "callback_url"),
        ("/v1/generations", json!({"prompts": ["x"], "callback_url": "http://127.0.0.1:9/hook"}), "callback_url"),
        ("/v1/generations", json!({"prompts": ["x"], "callback_url": "http://localhost/hook"}), "callback_url"),
        ("/v1/generations", json!({"prompts": ["x"], "callback_url": "http://[::1]/hook"}), "callback_url"),
        ("/v1/generations", json!({"prompts": ["x"], "callback_url": "http://10.0.0.8/hook"}), "callback_url"),
        ("/v1/generations", json!({"prompts": ["x"], "callback_url": "file:///etc/passwd"}), "callback_url"),
        ("/v1/generations", json!({"prompts": ["ok", "ＧＯＲＥ dress"]}), "prompts[1]"),
        ("/v1/generations", json!({"prompts": ["一件血腥的裙子"]}), "prompts[0]"),
        ("/v1/generations", json!({"prompts": ["裙".repeat(101)]}), "prompts[0]"),
        ("/v1/generations", json!({"prompts": ["x"], "negative_prompt": "é".repeat(151)}), "negative_prompt"),
        ("/v1/cuisine/menus", json!({"vendor": "v", "dishes": ["soup", "gore pie"]}), "prompts[1]"),
    ];
    for (path, body, field) in cases {
        let (status, error) = fleet.post(path, ACME, &body).await;
        assert_eq!(status, 422, "{path} {body}: {error}");
        assert_eq!(error["error"]["field"], field, "{path} {body}: {error}");
        assert!(!error["error"]["message"].as_str().unwrap_or_default().is_empty(), "{error}");
    }

    let huge = json!({"prompts": ["x".repeat(3 << 20)]});
    let (status, error) = fleet.post("/v1/generations", ACME, &huge).await;
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["error"]["code"], "too_large", "the API's error shape: {error}");

    let http = reqwest::Client::new();
    let wrong_method = http.put(format!("{}/v1/generations", fleet.base)).bearer_auth(ACME).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert!(wrong_method.headers().get("allow").is_some_and(|v| v.to_str().unwrap().contains("POST")));
    let error: Value = wrong_method.json().await.unwrap();
    assert_eq!(error["error"]["code"], "method_not_allowed", "{error}");
    let no_route = http.get(format!("{}/v1/nowhere", fleet.base)).bearer_auth(ACME).send().await.unwrap();
    assert_eq!(no_route.status(), 404);
    assert_eq!(no_route.json::<Value>().await.unwrap()["error"]["code"], "not_found");

    assert_eq!(fleet.jobs_waiting().await, 0, "a rejected request enqueues nothing");
    assert!(fleet.redis_keys().await.is_empty(), "a rejected request writes no state");
    fleet.cleanup_amqp().await;
}

/// POSTs `images` images of one prompt as `tenant`; returns the status, `Retry-After` and body.
async fn post_images(fleet: &Fleet, tenant: &str, images: u32) -> (u16, Option<u64>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/generations", fleet.base))
        .bearer_auth(tenant)
        .json(&json!({"prompts": ["a grey scarf"], "images_per_prompt": images}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    (status, retry_after, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_limits_answer_429_with_retry_after_and_enqueue_nothing() {
    // The per-minute window must not turn over during the test.
    let into_minute = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 60;
    if into_minute > 45 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - into_minute)).await;
    }
    let options = FleetOptions {
        acme_limits: "{ images_in_flight = 5 }".into(),
        globex_limits: "{ requests_per_minute = 2, images_per_day = 3 }".into(),
        ..Default::default()
    };
    let fleet = Fleet::start(options).await;

    // Images in flight: no worker runs, so accepted images stay in flight until cancelled.
    let (status, _, first) = post_images(&fleet, ACME, 3).await;
    assert_eq!(status, 202, "{first}");
    let (status, retry_after, refused) = post_images(&fleet, ACME, 3).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["code"], "quota_exceeded");
    assert!(refused["error"]["message"].as_str().unwrap().contains("images_in_flight"), "{refused}");
    assert!(retry_after.is_some_and(|s| s > 0), "Retry-After is set");
    assert_eq!(post_images(&fleet, ACME, 2).await.0, 202, "exactly up to the limit");
    let (status, _, too_big) = post_images(&fleet, ACME, 6).await;
    assert_eq!(status, 422, "more than the limit can ever hold: {too_big}");
    let (_, usage) = fleet.get("/v1/usage", ACME).await;
    assert_eq!(usage["images_in_flight"], 5, "{usage}");
    assert_eq!(usage["limits"]["images_in_flight"], 5, "{usage}");
    // Cancelling ends the queued jobs, which takes them out of flight.
    let id = first["request_id"].as_str().unwrap();
    assert_eq!(fleet.delete(&format!("/v1/requests/{id}"), ACME).await.0, 200);
    let (_, usage) = fleet.get("/v1/usage", ACME).await;
    assert_eq!(usage["images_in_flight"], 2, "{usage}");
    assert_eq!(post_images(&fleet, ACME, 3).await.0, 202);

    // Images per day, then requests per minute; refused requests count toward neither.
    assert_eq!(post_images(&fleet, GLOBEX, 2).await.0, 202);
    let (status, retry_after, refused) = post_images(&fleet, GLOBEX, 2).await;
    assert_eq!(status, 429, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("images_per_day"), "{refused}");
    assert!(retry_after.is_some_and(|s| s <= 86_400), "until the next UTC day");
    assert_eq!(post_images(&fleet, GLOBEX, 1).await.0, 202, "the refused request was not counted");
    let (status, retry_after, refused) = post_images(&fleet, GLOBEX, 1).await;
    assert_eq!(status, 429, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("requests_per_minute"), "{refused}");
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)), "until the next minute: {retry_after:?}");
    let (_, usage) = fleet.get("/v1/usage", GLOBEX).await;
    assert_eq!((usage["requests_this_minute"].as_u64(), usage["images_today"].as_u64()), (Some(2), Some(3)), "{usage}");

    let enqueued = fleet.jobs_waiting().await;
    println!("quotas: 11 submits, 5 refused with 429 and 1 with 422 -> {enqueued} jobs in the queue");
    assert_eq!(
        enqueued,
        3 + 2 + 3 + 2 + 1,
        "only admitted requests were enqueued (cancelled jobs stay queued until a worker skips them)"
    );
    fleet.cleanup_amqp().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_the_logs_and_presigned_urls_expire_as_configured() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = std::sync::Arc::clone(&calls);
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { axum::http::StatusCode::NO_CONTENT }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let options = FleetOptions {
        scheduler_extra: "callback_allow_private_addresses = true".into(),
        presign_expiry_secs: 5,
        ..Default::default()
    };
    let mut fleet = Fleet::start(options).await;
    fleet.start_worker();
    let body = json!({"prompts": ["a gold handbag"], "steps": 2, "callback_url": hook});
    let (status, _, accepted) = post_with_key(&fleet.base, ACME, "secret-test", &body).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["request_id"].as_str().unwrap();
    let view = fleet.wait_final(id, std::time::Duration::from_secs(90)).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    let url = view["jobs"][0]["images"][0]["url"].as_str().unwrap().to_owned();
    let fetched_at = std::time::Instant::now();
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200, "{url}");

    let query: std::collections::HashMap<String, String> =
        reqwest::Url::parse(&url).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert_eq!(query.get("X-Amz-Expires").map(String::as_str), Some("5"), "{url}");
    let signature = query.get("X-Amz-Signature").expect("a presigned URL").clone();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "no callback\n{}", fleet.logs());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The fleet's own logs; the S3 test server's log is not the product's.
    let logs = fleet.log("scheduler.log") + &fleet.log("worker-0.log");
    assert!(logs.contains("callback delivered"), "the run is logged at all:\n{logs}");
    for (what, secret) in [("API key", ACME), ("callback secret", "test-secret"), ("presigned signature", &signature)] {
        assert!(!logs.contains(secret), "the {what} is in the logs");
    }
    println!("logs: {} bytes of scheduler and worker logs hold no key, secret or signature", logs.len());

    tokio::time::sleep(std::time::Duration::from_secs(6).saturating_sub(fetched_at.elapsed())).await;
    let expired = reqwest::get(&url).await.unwrap().status();
    assert!(expired.is_client_error(), "a presigned URL past its 5 s answered {expired}");
    fleet.cleanup_amqp().await;
}

/// Backpressure: over `max_waiting_jobs` every tenant gets 429 with `Retry-After`, before any
/// quota counts the request, and nothing is enqueued; under it, work is accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_answers_429_busy_and_enqueues_nothing() {
    let options = FleetOptions { scheduler_extra: "max_waiting_jobs = 6".into(), ..Default::default() };
    let fleet = Fleet::start(options).await;
    let (status, _, first) = post_images(&fleet, ACME, 6).await;
    assert_eq!(status, 202, "an empty fleet takes a request of any size: {first}");
    // The scheduler looks at the backlog at most every 250 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, retry_after, refused) = post_images(&fleet, GLOBEX, 1).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["code"], "busy", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("6 jobs waiting"), "{refused}");
    assert_eq!(retry_after, Some(5));
    let (_, usage) = fleet.get("/v1/usage", GLOBEX).await;
    assert_eq!(usage["requests_this_minute"], 0, "a refused request counts toward no quota: {usage}");
    assert_eq!(fleet.jobs_waiting().await, 6, "nothing more was enqueued");

    // As if workers had taken the backlog.
    fleet.purge_jobs().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post_images(&fleet, GLOBEX, 1).await.0, 202, "room again once the backlog drained");
    fleet.cleanup_amqp().await;
}

/// When each request of one fair-share run ended, in seconds after the large batch was submitted.
#[derive(Debug)]
struct FairShareRun {
    ready_jobs: u32,
    large_done: f64,
    small_submitted: f64,
    small_done: f64,
    interactive_done: f64,
}

/// Issue 18's scenario on one worker: acme submits a 32-job batch, then 0.3 s later one
/// interactive job of its own and globex a 4-job batch at the same (batch) priority.
async fn fair_share_run(ready_jobs: u32) -> FairShareRun {
    let mut fleet = Fleet::start(FleetOptions {
        scheduler_extra: format!("dispatch_ready_jobs = {ready_jobs}"),
        ..Default::default()
    })
    .await;
    fleet.start_worker();
    fleet.wait_worker_ready(0).await;
    let prompts = ["a red dress", "a navy coat", "a white shirt", "a black skirt"];
    let large = json!({"prompts": prompts, "images_per_prompt": 8, "priority": "batch", "steps": 2});
    let small = json!({"prompts": ["a green scarf"], "images_per_prompt": 4, "priority": "batch", "steps": 2});
    let interactive = json!({"prompts": ["a silk tie"], "priority": "interactive", "steps": 2});

    let start = Instant::now();
    let large = (ACME, fleet.submit_as(ACME, "/v1/generations", large).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let small_submitted = start.elapsed().as_secs_f64();
    let interactive = (ACME, fleet.submit_as(ACME, "/v1/generations", interactive).await);
    let small = (GLOBEX, fleet.submit_as(GLOBEX, "/v1/generations", small).await);

    let mut done: [Option<f64>; 3] = [None; 3];
    while done.iter().any(Option::is_none) {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out: {done:?}\n{}", fleet.logs());
        for (slot, (key, id)) in done.iter_mut().zip([&large, &small, &interactive]) {
            if slot.is_none() {
                let (_, view) = fleet.get(&format!("/v1/requests/{id}"), key).await;
                match view["status"].as_str() {
                    Some("succeeded") => *slot = Some(start.elapsed().as_secs_f64()),
                    Some("queued" | "running") => {}
                    _ => panic!("{id} ended badly: {view}\n{}", fleet.logs()),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    fleet.cleanup_amqp().await;
    let [large_done, small_done, interactive_done] = done.map(Option::unwrap);
    FairShareRun { ready_jobs, large_done, small_submitted, small_done, interactive_done }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_batch_behind_another_tenant_s_large_one_finishes_long_before_it() {
    let fair = fair_share_run(2).await;
    // The same scenario with every job handed to the workers at once: one FIFO within a priority,
    // as before the lanes. It shows what the test would see without fair share.
    let fifo = fair_share_run(1000).await;
    for run in [&fair, &fifo] {
        println!(
            "fair share, dispatch_ready_jobs = {}: acme's 32 jobs done at {:.2} s; globex's 4 jobs, submitted at \
             {:.2} s, done at {:.2} s ({:.2} s after submitting); acme's interactive job done at {:.2} s",
            run.ready_jobs,
            run.large_done,
            run.small_submitted,
            run.small_done,
            run.small_done - run.small_submitted,
            run.interactive_done
        );
    }
    assert!(
        fair.small_done - fair.small_submitted < 0.5 * fair.large_done,
        "the small batch waited for half the large one or more: {fair:?}"
    );
    assert!(fair.interactive_done < fair.small_done, "interactive work still goes first: {fair:?}");
    assert!(fifo.small_done > fifo.large_done, "without lanes the small batch waits for the large one: {fifo:?}");
    if let Ok(path) = std::env::var("RAPID_FAIR_SHARE_RESULTS") {
        std::fs::write(&path, fair_share_report(&fair, &fifo)).unwrap();
        println!("wrote {path}");
    }
}

fn fair_share_report(fair: &FairShareRun, fifo: &FairShareRun) -> String {
    let row = |label: &str, run: &FairShareRun| {
        format!(
            "| {label} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            run.ready_jobs,
            run.large_done,
            run.small_done,
            run.small_done - run.small_submitted,
            run.interactive_done
        )
    };
    format!(
        "# Fair share between tenants\n\n\
         Written by `make fair-share` (the test `a_small_batch_behind_another_tenant_s_large_one_finishes_long_before_it` \
         in `scheduler/tests/tenancy.rs`): real RabbitMQ, Redis and s3s-fs, one worker, the tiny test model at 2 steps. \
         acme submits 32 batch jobs; {:.2} s later acme submits one interactive job and globex 4 batch jobs. \
         Times are seconds after acme's batch was submitted, as a client polling the requests saw them.\n\n\
         | dispatcher | dispatch_ready_jobs | acme's 32 done | globex's 4 done | globex's wait | acme's interactive done |\n\
         |---|---:|---:|---:|---:|---:|\n{}{}\n\
         With lanes and fair share (`dispatch_ready_jobs = 2`) globex's jobs alternate with acme's as soon as they \
         arrive; handing every job to the workers at once (1000) is one FIFO per priority, as before the lanes, and \
         globex waits for all of acme's batch.\n",
        fair.small_submitted,
        row("fair share", fair),
        row("all at once (FIFO)", fifo)
    )
}
