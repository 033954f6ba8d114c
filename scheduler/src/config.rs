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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_steps: 1000,
            max_side: 2048,
            max_images_per_prompt: 16,
            max_jobs_per_request: 400,
            max_prompt_chars: 2000,
        }
    }
}

/// A client of the API. Keys are stored only as SHA-256 hashes (`rapid-scheduler hash-key`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// Hex SHA-256 of the tenant's bearer API key.
    pub api_key_sha256: String,
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
        assert_eq!(file.scheduler.defaults.sampler, Sampler::Euler);
        assert_eq!(file.scheduler.defaults.format, ImageFormat::Png);
    }

    #[test]
    fn a_misspelt_default_fails_at_load_naming_the_key_and_the_file() {
        let error = load_error("sampler = \"euler\"", "sampler = \"eulr\"");
        assert!(error.contains("`eulr` is not one of pndm, ddim, euler, euler-a, dpmpp-2m"), "{error}");
        assert!(error.contains("scheduler.defaults.sampler"), "{error}");

        let error = load_error("format = \"png\"", "format = \"gif\"");
        assert!(error.contains("`gif` is not one of png, jpeg, webp"), "{error}");
        assert!(error.contains("scheduler.defaults.format"), "{error}");
    }
}
