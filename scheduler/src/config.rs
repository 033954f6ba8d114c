//! The scheduler's sections of the fleet configuration file (CONFIG.md describes every key).
//! The broker, state and storage sections are `rapid_fleet::config` types, so both binaries read
//! one file the same way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use rapid_fleet::config::{AmqpConfig, RedisConfig, S3Config};
use rapid_proto::{ImageFormat, Sampler};
use rapid_worker::config::WorkerConfig;
use serde::Deserialize;

/// The whole file as the scheduler reads it. `amqp`, `redis` and `s3` are required by `serve`;
/// `standalone` replaces all three with in-process parts and needs `worker` for its models.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerFile {
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    pub amqp: Option<AmqpConfig>,
    pub redis: Option<RedisConfig>,
    pub s3: Option<S3Config>,
    pub worker: Option<WorkerConfig>,
    pub standalone: Option<StandaloneConfig>,
    #[serde(default)]
    pub telemetry: rapid_fleet::telemetry::TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Key of the HMAC-SHA256 signature on callback POSTs (header `X-Rapid-Signature`).
    pub callback_secret: String,
    /// POSTs of one callback before it is dead-lettered.
    #[serde(default = "default_callback_attempts")]
    pub callback_max_attempts: u32,
    /// Delay before the first callback retry; each later retry doubles it.
    #[serde(default = "default_callback_backoff_ms")]
    pub callback_backoff_ms: u64,
    /// Timeout of one callback POST.
    #[serde(default = "default_callback_timeout_ms")]
    pub callback_timeout_ms: u64,
    /// Models clients may ask for, by the name jobs carry (the workers map names to directories).
    pub models: BTreeMap<String, ModelDefaults>,
    /// The model used when a request names none.
    pub default_model: String,
    /// Generation parameters a request may leave out.
    #[serde(default)]
    pub defaults: GenerationDefaults,
    /// Limits that keep one request from monopolising the fleet.
    #[serde(default)]
    pub limits: Limits,
    /// How long the answer to a request with an `Idempotency-Key` is kept for its retries.
    #[serde(default = "default_idempotency_ttl_secs")]
    pub idempotency_ttl_secs: u64,
    /// Lets `callback_url` point at loopback, private and link-local addresses (a test rig or a
    /// receiver inside the cluster). Off, such callbacks are refused at submit and at delivery, so
    /// the scheduler cannot be made to call its own network's services.
    #[serde(default)]
    pub callback_allow_private_addresses: bool,
    /// Terms no prompt may contain, per language.
    #[serde(default)]
    pub blocked_terms: BlockedTerms,
    /// Jobs the dispatcher keeps ready in the workers' queue; the rest wait in their tenants'
    /// lanes, where fair share orders them. Enough to fill every worker's batch between two looks
    /// (every 20 ms), few enough that a tenant arriving late waits behind few jobs.
    #[serde(default = "default_dispatch_ready_jobs")]
    pub dispatch_ready_jobs: u32,
    /// Backpressure: while this many jobs or more wait (ready plus in the lanes), submits get 429
    /// with `Retry-After`. Absent: no limit.
    #[serde(default)]
    pub max_waiting_jobs: Option<u32>,
}

/// Blocked prompt terms. Matching ignores case and character width (NFKC, then lower case):
/// `ＧＯＲＥ` and `Gore` both match `gore`. English terms match whole words (`ass` does not
/// block `class`); Chinese terms match anywhere, as Chinese has no spaces between words. Every
/// prompt is checked against both lists, whatever language it was asked in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockedTerms {
    pub en: Vec<String>,
    pub zh: Vec<String>,
}

/// Per-model facts the scheduler needs before any worker sees the job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDefaults {
    /// Image size before upscaling when the request names none.
    pub width: u32,
    pub height: u32,
    /// Sizes must be multiples of this (the VAE factor × the U-Net's downsampling; 8 for SD 1.x).
    #[serde(default = "default_size_multiple")]
    pub size_multiple: u32,
    /// Whether the model directory has `upscaler/model.onnx`.
    #[serde(default = "default_true")]
    pub has_upscaler: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationDefaults {
    pub steps: u32,
    pub guidance_scale: f32,
    pub sampler: Sampler,
    /// Karras sigmas for requests that do not say, applied only with `euler` and `dpmpp-2m`;
    /// absent = each model's scheduler config.
    pub karras_sigmas: Option<bool>,
    pub upscale: bool,
    pub format: ImageFormat,
}

impl Default for GenerationDefaults {
    /// The paper's settings: 50 PNDM steps, guidance 7.5, ESRGAN ×4, PNG.
    fn default() -> Self {
        Self {
            steps: 50,
            guidance_scale: 7.5,
            sampler: Sampler::Pndm,
            karras_sigmas: None,
            upscale: true,
            format: ImageFormat::Png,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_steps: u32,
    pub max_side: u32,
    pub max_images_per_prompt: u32,
    pub max_jobs_per_request: u32,
    pub max_prompt_chars: usize,
    /// A prompt's UTF-8 size: a cap in bytes as well as characters, as a character may take four.
    pub max_prompt_bytes: usize,
    /// The largest request body; a larger one gets 413 in the API's error shape.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_steps: 1000,
            max_side: 2048,
            max_images_per_prompt: 16,
            max_jobs_per_request: 400,
            max_prompt_chars: 2000,
            max_prompt_bytes: 8000,
            max_body_bytes: 1 << 20,
        }
    }
}

/// A client of the API. Keys are stored only as SHA-256 hashes (`rapid-scheduler hash-key`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// Hex SHA-256 of the tenant's bearer API key, or a list of two while a key is rotated: the
    /// new key works as soon as its hash is added, the old one until its hash is removed.
    pub api_key_sha256: KeyHashes,
    /// Requests per minute, images in flight and images per day; each absent limit is unlimited.
    #[serde(default)]
    pub limits: rapid_fleet::state::Quota,
    /// The tenant's share of the workers while several tenants have work waiting in the same
    /// priority class: a tenant of weight 2 is served twice as often as one of weight 1.
    #[serde(default = "default_weight")]
    pub weight: std::num::NonZeroU32,
}

/// One or two SHA-256 key hashes, checked when the file loads.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "OneOrTwo")]
pub struct KeyHashes(pub Vec<[u8; 32]>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrTwo {
    One(String),
    Many(Vec<String>),
}

impl TryFrom<OneOrTwo> for KeyHashes {
    type Error = String;

    fn try_from(value: OneOrTwo) -> Result<Self, String> {
        let hashes = match value {
            OneOrTwo::One(hash) => vec![hash],
            OneOrTwo::Many(hashes) => hashes,
        };
        if !(1..=2).contains(&hashes.len()) {
            return Err(format!("give one key hash, or two while rotating (got {})", hashes.len()));
        }
        let parse = |hash: &String| {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hash.trim(), &mut bytes).map(|()| bytes).map_err(|_| {
                format!("`{hash}` is not a hex SHA-256 (64 hex digits); make one with `rapid-scheduler hash-key <key>`")
            })
        };
        hashes.iter().map(parse).collect::<Result<_, _>>().map(Self)
    }
}

/// Standalone mode: the scheduler with in-process workers, queue and state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandaloneConfig {
    /// In-process workers (each loads its own copy of every model).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Folder standing in for the S3 bucket.
    pub output_dir: PathBuf,
    /// How long finished requests stay readable.
    #[serde(default = "default_ttl_secs")]
    pub finished_ttl_secs: u64,
}

fn default_callback_attempts() -> u32 {
    5
}
fn default_callback_backoff_ms() -> u64 {
    1000
}
fn default_callback_timeout_ms() -> u64 {
    10_000
}
fn default_idempotency_ttl_secs() -> u64 {
    86_400
}
fn default_dispatch_ready_jobs() -> u32 {
    16
}
fn default_weight() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::MIN
}
fn default_size_multiple() -> u32 {
    8
}
fn default_true() -> bool {
    true
}
fn default_workers() -> usize {
    1
}
fn default_ttl_secs() -> u64 {
    86_400
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config.example.toml");

    /// The error of loading the example with `from` replaced by `to`; it must name the file.
    fn load_error(from: &str, to: &str) -> String {
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let edited = text.replacen(from, to, 1);
        assert_ne!(edited, text, "the example has `{from}`");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), edited).unwrap();
        let error = rapid_fleet::config::load::<SchedulerFile>(file.path()).unwrap_err().to_string();
        assert!(error.contains(&file.path().display().to_string()), "the file is named: {error}");
        error
    }

    #[test]
    fn the_example_s_defaults_load_as_typed_values() {
        let file: SchedulerFile = rapid_fleet::config::load(Path::new(EXAMPLE)).unwrap();
        assert_eq!(file.scheduler.defaults.sampler, Sampler::DpmSolverMultistep);
        assert_eq!(file.scheduler.defaults.format, ImageFormat::Png);
    }

    #[test]
    fn a_misspelt_default_fails_at_load_naming_the_key_and_the_file() {
        let error = load_error("sampler = \"dpmpp-2m\"", "sampler = \"dpmpp-3m\"");
        assert!(error.contains("`dpmpp-3m` is not one of pndm, ddim, euler, euler-a, dpmpp-2m"), "{error}");
        assert!(error.contains("scheduler.defaults.sampler"), "{error}");

        let error = load_error("format = \"png\"", "format = \"gif\"");
        assert!(error.contains("`gif` is not one of png, jpeg, webp"), "{error}");
        assert!(error.contains("scheduler.defaults.format"), "{error}");
    }

    #[test]
    fn key_hashes_are_checked_at_load_and_two_may_be_valid_while_rotating() {
        let error = load_error("api_key_sha256 = \"afacab", "api_key_sha256 = \"zzacab");
        assert!(error.contains("is not a hex SHA-256"), "{error}");
        assert!(error.contains("tenants"), "{error}");

        let hash = "afacab3575137afa4e00d9cbcafcb14c9ae25f779d964eb0ea5b2c4eb5dfd163";
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let rotating = text.replacen(&format!("\"{hash}\""), &format!("[\"{hash}\", \"{}\"]", "0".repeat(64)), 1);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), rotating).unwrap();
        let loaded: SchedulerFile = rapid_fleet::config::load(file.path()).unwrap();
        assert_eq!(loaded.tenants[0].api_key_sha256.0.len(), 2);
    }

    #[test]
    fn a_tenant_s_weight_is_at_least_one() {
        let error = load_error("weight = 2", "weight = 0");
        assert!(error.contains("nonzero"), "{error}");
        assert!(error.contains("weight"), "{error}");
    }
}
