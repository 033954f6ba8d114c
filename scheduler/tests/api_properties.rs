//! Property tests of every submission body (`proptest`), against the real router in process (the
//! standalone mode's in-memory queue, state and store): whatever JSON or bytes a client sends, the
//! answer is a 202 or a 4xx in the API's error shape, never a 5xx or a panic. Bodies are built from
//! the endpoints' own field names with arbitrary and plausible values, so most get past the parser
//! and reach the planner's checks. `deploy/fuzz/` fuzzes the running server from its OpenAPI
//! document as well.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use rapid_fleet::queue::{MemoryQueue, Queue};
use rapid_fleet::state::{MemoryState, StateStore};
use rapid_fleet::storage::{LocalStore, ObjectStore};
use rapid_scheduler::config::SchedulerFile;
use serde_json::{json, Value};
use tower::ServiceExt;

const ENDPOINTS: &[&str] = &["/v1/generations", "/v1/fashion/designs", "/v1/cuisine/menus"];
const FIELDS: &[&str] = &[
    "prompts",
    "images_per_prompt",
    "model",
    "negative_prompt",
    "steps",
    "guidance_scale",
    "sampler",
    "karras_sigmas",
    "seed",
    "width",
    "height",
    "upscale",
    "format",
    "priority",
    "deadline_ms",
    "callback_url",
    "keywords",
    "language",
    "vendor",
    "dishes",
    "images_per_dish",
    "colour",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap())
}

/// The router of `deploy/config.example.toml` (tenant `acme`, key `acme-key`) on in-memory parts.
fn router() -> axum::Router {
    static OUTPUT: OnceLock<tempfile::TempDir> = OnceLock::new();
    let output = OUTPUT.get_or_init(|| tempfile::tempdir().unwrap());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.example.toml");
    let file: SchedulerFile = rapid_fleet::config::load(&example).unwrap();
    let state = rapid_scheduler::serve::app_state(
        &file,
        StateStore::Memory(MemoryState::new(Duration::from_secs(60))),
        Queue::Memory(MemoryQueue::default()),
        ObjectStore::Local(LocalStore::new(output.path())),
        Duration::from_secs(60),
    );
    rapid_scheduler::api::app(state)
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Values of the kinds the fields take, so that bodies reach the checks behind the parser.
fn plausible() -> impl Strategy<Value = Value> {
    let words = "[a-z 红色丝绸裙ＧＯ]{0,24}";
    prop_oneof![
        prop::collection::vec(words, 0..5).prop_map(|v| json!(v)),
        words.prop_map(Value::String),
        (0u64..2100).prop_map(|n| json!(n)),
        (-1.0f64..60.0).prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "euler",
            "pndm",
            "ddim",
            "dpmpp-2m",
            "png",
            "webp",
            "zh",
            "en",
            "interactive",
            "batch"
        ])
        .prop_map(|s| json!(s)),
        // Callback targets that need no DNS: public, internal, and not http at all.
        prop::sample::select(vec![
            "http://93.184.216.34/hook",
            "http://127.0.0.1/hook",
            "http://[fe80::1]/x",
            "ftp://example/x",
            "not a url",
        ])
        .prop_map(|s| json!(s)),
        prop::collection::btree_map(
            prop::sample::select(vec!["category", "trend", "fabric", "color", "style", "colour"]),
            prop_oneof![words.prop_map(Value::String), prop::collection::vec(words, 0..4).prop_map(|v| json!(v))],
            0..5,
        )
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        prop::collection::vec(
            prop_oneof![
                words.prop_map(Value::String),
                words.prop_map(|name| json!({"name": name, "keywords": ["chili"]}))
            ],
            0..4
        )
        .prop_map(Value::Array),
    ]
}

/// A body for `endpoint`: its minimal valid body with random fields laid over it (half of the
/// cases, so the planner's checks and the 202 path are exercised), or random fields alone.
fn body(endpoint: &'static str) -> impl Strategy<Value = Value> {
    let base = match endpoint {
        "/v1/generations" => json!({"prompts": ["a red dress"]}),
        "/v1/fashion/designs" => json!({"keywords": {"color": "red"}}),
        _ => json!({"vendor": "Golden Wok", "dishes": ["mapo tofu"]}),
    };
    let fields =
        prop::collection::btree_map(prop::sample::select(FIELDS.to_vec()), prop_oneof![plausible(), any_json()], 0..5);
    (any::<bool>(), fields).prop_map(move |(from_base, fields)| {
        let mut body = if from_base { base.as_object().unwrap().clone() } else { serde_json::Map::new() };
        body.extend(fields.into_iter().map(|(k, v)| (k.to_owned(), v)));
        Value::Object(body)
    })
}

fn endpoint_and_body() -> impl Strategy<Value = (&'static str, Value)> {
    prop::sample::select(ENDPOINTS).prop_flat_map(|endpoint| (Just(endpoint), body(endpoint)))
}

/// Posts `body` and checks the answer's contract; returns the status.
fn post(endpoint: &str, body: Vec<u8>) -> Result<u16, TestCaseError> {
    runtime().block_on(async {
        let request = Request::post(endpoint)
            .header("Authorization", "Bearer acme-key")
            .header("Content-Type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = router().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        prop_assert!(status == 202 || (400..500).contains(&status), "{endpoint}: {status} {answer}");
        if status == 202 {
            prop_assert!(answer["request_id"].is_string(), "{answer}");
        } else {
            prop_assert!(answer["error"]["code"].is_string(), "{endpoint}: {status} not in the error shape: {answer}");
            prop_assert!(!answer["error"]["message"].as_str().unwrap_or_default().is_empty(), "{answer}");
        }
        Ok(status)
    })
}

#[test]
fn any_json_body_gets_202_or_a_4xx_in_the_error_shape() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(3000));
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let result = runner.run(&endpoint_and_body(), |(endpoint, body)| {
        let status = post(endpoint, serde_json::to_vec(&body).unwrap())?;
        *statuses.borrow_mut().entry(status).or_default() += 1;
        Ok(())
    });
    let statuses = statuses.into_inner();
    println!("api_properties: statuses of {} generated bodies: {statuses:?}", statuses.values().sum::<u32>());
    result.unwrap();
    // A generator that never got past the parser would prove little.
    assert!(statuses.get(&202).copied().unwrap_or_default() >= 100, "too few bodies were accepted: {statuses:?}");
    assert!(statuses.get(&422).copied().unwrap_or_default() >= 100, "too few bodies were refused: {statuses:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn any_bytes_get_a_4xx_in_the_error_shape(endpoint in prop::sample::select(ENDPOINTS), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let status = post(endpoint, bytes.clone())?;
        // Only a well-formed JSON object can be accepted.
        prop_assert!(status != 202 || serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes).is_ok());
    }
}
