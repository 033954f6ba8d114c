//! The worker's section of the fleet's configuration file (`[worker]`) and the whole file as a
//! worker reads it; loading and the shared sections live in `rapid_fleet::config`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rapid_engine::error::EngineError;
use rapid_engine::parts::upscaler::Tiling;
use rapid_engine::runtime::{ExecutionProvider, Part, Providers, RuntimeOptions};
use rapid_fleet::config::{AmqpConfig, RedisConfig, S3Config};
use serde::Deserialize;

/// The worker: which models it serves and how it treats failures and shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Model name (as jobs carry it) → model directory.
    pub models: BTreeMap<String, PathBuf>,
    /// `cpu`, `cuda`, `tensorrt` or `openvino`.
    #[serde(default = "default_provider")]
    pub execution_provider: String,
    /// Parts that run on another provider than `execution_provider`: part (`text_encoder`,
    /// `unet`, `vae_decoder`, `upscaler`) → provider. `cpu` mixes with any other provider.
    #[serde(default)]
    pub part_providers: BTreeMap<String, String>,
    /// Threads per ONNX Runtime operator; absent = every core.
    pub threads: Option<usize>,
    /// Folder for the CPU provider's optimized graphs, reused by the next start; absent = none.
    pub session_cache_dir: Option<PathBuf>,
    /// `fp32`, or `bf16` for the parts on `openvino` on CPUs with AVX512-BF16 or AMX (faster; the
    /// images change, by what deploy/bench/precision/PRECISION.md states).
    #[serde(default = "default_precision")]
    pub precision: String,
    /// Unacknowledged jobs the broker hands one worker at a time.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Runs of one job before it is dead-lettered (1 = no retry).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; each later retry doubles it.
    #[serde(default = "default_retry_ms")]
    pub retry_backoff_ms: u64,
    /// After SIGTERM: how long an in-flight job may run on before it is requeued.
    #[serde(default = "default_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// How often a running job checks its request's cancel flag and reports progress.
    #[serde(default = "default_poll_ms")]
    pub progress_interval_ms: u64,
    /// Most compatible jobs (same model, size, steps, sampler) denoised together, one U-Net call
    /// per step for all; 1 turns cross-request batching off. The worker asks the broker for at
    /// least this many unacknowledged jobs.
    #[serde(default = "default_max_batch")]
    pub max_batch: std::num::NonZeroUsize,
    /// Once a job arrived, how long to wait for more waiting jobs to fill a batch.
    #[serde(default = "default_batch_window_ms")]
    pub batch_window_ms: u64,
    /// ESRGAN tile side in input pixels; 0 upscales the whole image in one call. Which side is
    /// fastest depends on the CPU (deploy/bench/session/SESSION.md); larger tiles need more memory.
    #[serde(default = "default_upscale_tile")]
    pub upscale_tile: usize,
    /// Context pixels around each ESRGAN tile, computed and thrown away so that seams do not show.
    #[serde(default = "default_upscale_tile_overlap")]
    pub upscale_tile_overlap: usize,
    /// Run every model once at start-up, before taking jobs, so that the first job does not pay
    /// for ONNX Runtime's first-call planning (or OpenVINO's graph compilation).
    #[serde(default = "default_warm_up")]
    pub warm_up: bool,
    /// The watchdog: a running job (or batch) that finishes no U-Net step for this long is treated
    /// as hung; its jobs go back to the queue as a failed attempt and the worker exits (status 1)
    /// for its supervisor to restart it, since a hung engine thread cannot be stopped. Only steps
    /// count as progress, so set it above the stretch after the last step (every member's VAE,
    /// ESRGAN and encoding); 0 = off.
    #[serde(default = "default_stall_timeout_secs")]
    pub stall_timeout_secs: u64,
    /// Where the worker serves `/livez`, `/readyz` and `/metrics` (e.g. `0.0.0.0:9100`); absent =
    /// no HTTP port.
    pub listen: Option<std::net::SocketAddr>,
}

impl WorkerConfig {
    pub fn tiling(&self) -> Tiling {
        Tiling { tile: self.upscale_tile, overlap: self.upscale_tile_overlap }
    }

    /// How this worker sets up ONNX Runtime: the provider of every part and the threads.
    pub fn runtime_options(&self) -> Result<RuntimeOptions, ProviderConfigError> {
        let error = |key: String| move |source| ProviderConfigError { key, source };
        let default: ExecutionProvider = self.execution_provider.parse().map_err(error("execution_provider".into()))?;
        let mut providers = Providers::all(default);
        for (part, provider) in &self.part_providers {
            let key = format!("part_providers.{part}");
            let part: Part = part.parse().map_err(error(key.clone()))?;
            providers = providers.with(part, provider.parse().map_err(error(key))?);
        }
        Ok(RuntimeOptions {
            providers,
            library: None,
            intra_threads: self.threads,
            session_cache: self.session_cache_dir.clone(),
            precision: self.precision.parse().map_err(error("precision".into()))?,
            profile: None,
        })
    }
}

/// A provider or part name in the `[worker]` section that the engine does not know.
#[derive(Debug, thiserror::Error)]
#[error("worker.{key}: {source} (CONFIG.md describes the key)")]
pub struct ProviderConfigError {
    key: String,
    source: EngineError,
}

/// What a worker process reads: its own section and the shared ones. The scheduler's sections
/// are accepted and ignored (they are checked when the scheduler reads the same file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    pub s3: S3Config,
    pub worker: WorkerConfig,
    #[serde(default)]
    pub telemetry: rapid_fleet::telemetry::TelemetryConfig,
    #[serde(default)]
    pub scheduler: serde::de::IgnoredAny,
    #[serde(default)]
    pub tenants: serde::de::IgnoredAny,
}

fn default_provider() -> String {
    "cpu".into()
}
fn default_max_batch() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::MIN
}
fn default_batch_window_ms() -> u64 {
    20
}
fn default_upscale_tile() -> usize {
    Tiling::default().tile
}
fn default_upscale_tile_overlap() -> usize {
    Tiling::default().overlap
}
fn default_precision() -> String {
    "fp32".into()
}

fn default_warm_up() -> bool {
    true
}
fn default_prefetch() -> u16 {
    1
}
fn default_max_attempts() -> u32 {
    3
}
fn default_retry_ms() -> u64 {
    2000
}
fn default_grace_secs() -> u64 {
    30
}
fn default_poll_ms() -> u64 {
    250
}
fn default_stall_timeout_secs() -> u64 {
    300
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rapid_engine::runtime::Precision;
    use rapid_fleet::config::load;

    use super::*;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config.example.toml");

    #[test]
    fn upscale_tiling_defaults_to_the_engines_and_is_read_from_the_worker_section() {
        let example: WorkerFile = load(Path::new(EXAMPLE)).unwrap();
        assert_eq!(example.worker.tiling(), Tiling::default());

        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let edited = text.replacen("[worker]\n", "[worker]\nupscale_tile = 0\nupscale_tile_overlap = 4\n", 1);
        assert_ne!(edited, text, "the example has a [worker] section");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), edited).unwrap();
        let whole: WorkerFile = load(file.path()).unwrap();
        assert_eq!(whole.worker.tiling(), Tiling { tile: 0, overlap: 4 });
    }

    fn worker_section(extra: &str) -> WorkerConfig {
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let edited = text.replacen("[worker]\n", &format!("[worker]\n{extra}\n"), 1);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), edited).unwrap();
        load::<WorkerFile>(file.path()).unwrap().worker
    }

    #[test]
    fn part_providers_override_the_worker_provider_part_by_part() {
        let example: WorkerFile = load(Path::new(EXAMPLE)).unwrap();
        let options = example.worker.runtime_options().unwrap();
        assert_eq!(options.providers, Providers::all(ExecutionProvider::Cpu));

        let mixed = worker_section("part_providers = { upscaler = \"openvino\" }");
        let options = mixed.runtime_options().unwrap();
        assert_eq!(options.providers.for_part(Part::Upscaler), ExecutionProvider::OpenVino);
        assert_eq!(options.providers.for_part(Part::Unet), ExecutionProvider::Cpu);
    }

    #[test]
    fn workers_warm_up_unless_told_not_to() {
        assert!(worker_section("").warm_up, "warming up is the default");
        assert!(!worker_section("warm_up = false").warm_up);
    }

    #[test]
    fn an_unknown_part_or_provider_names_its_key() {
        let error = |extra| worker_section(extra).runtime_options().unwrap_err().to_string();
        let part = error("part_providers = { vae = \"openvino\" }");
        assert!(part.contains("worker.part_providers.vae") && part.contains("vae_decoder"), "{part}");
        let provider = error("part_providers = { upscaler = \"openvin\" }");
        assert!(provider.contains("worker.part_providers.upscaler") && provider.contains("`openvin`"), "{provider}");
        let mut gpu = worker_section("");
        gpu.execution_provider = "gpu".into();
        let default = gpu.runtime_options().unwrap_err().to_string();
        assert!(default.contains("worker.execution_provider") && default.contains("`gpu`"), "{default}");
    }

    #[test]
    fn precision_is_fp32_unless_told_and_a_wrong_one_names_its_key() {
        assert_eq!(worker_section("").runtime_options().unwrap().precision, Precision::Fp32);
        assert_eq!(worker_section("precision = \"bf16\"").runtime_options().unwrap().precision, Precision::Bf16);
        let error = worker_section("precision = \"fp16\"").runtime_options().unwrap_err().to_string();
        assert!(error.contains("worker.precision") && error.contains("fp32, bf16"), "{error}");
    }
}
