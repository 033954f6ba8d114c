//! The worker's section of the fleet's configuration file (`[worker]`) and the whole file as a
//! worker reads it; loading and the shared sections live in `rapid_fleet::config`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rapid_engine::autotune::{AutotuneOptions, ProviderSetting};
use rapid_engine::error::EngineError;
use rapid_engine::parts::upscaler::Tiling;
use rapid_engine::runtime::tensorrt::{ShapeLimits, TensorRtOptions};
use rapid_engine::runtime::{Part, Providers, RuntimeOptions};
use rapid_fleet::config::{AmqpConfig, RedisConfig, S3Config};
use serde::Deserialize;

/// The worker: which models it serves and how it treats failures and shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Model name (as jobs carry it) → model directory.
    pub models: BTreeMap<String, PathBuf>,
    /// `auto` (each part on the fastest setup this machine has, measured at start-up), or every
    /// part on `cpu`, `cuda`, `tensorrt` or `openvino`.
    #[serde(default = "default_provider")]
    pub execution_provider: String,
    /// Under `auto`, how long measuring may take at start-up before the best so far is kept.
    #[serde(default = "default_autotune_budget_secs")]
    pub autotune_budget_secs: u64,
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
    /// Absent: 128, or under `auto` the faster of 128 and the whole image.
    pub upscale_tile: Option<usize>,
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
    /// count as progress, so set it above the stretch after the last step (every member's VAE
    /// and ESRGAN); 0 = off.
    #[serde(default = "default_stall_timeout_secs")]
    pub stall_timeout_secs: u64,
    /// Groups of jobs whose marking, encoding, upload and acknowledgement may still run while the
    /// engine starts on the next group; 0 finishes each before taking the next.
    #[serde(default = "default_overlap_finishing")]
    pub overlap_finishing: usize,
    /// Where the worker serves `/livez`, `/readyz` and `/metrics` (e.g. `0.0.0.0:9100`); absent =
    /// no HTTP port.
    pub listen: Option<std::net::SocketAddr>,
    /// How parts on `tensorrt` are built and kept.
    #[serde(default)]
    pub tensorrt: TensorRtConfig,
}

/// `[worker.tensorrt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorRtConfig {
    /// Where built engines are kept between starts; absent = built at every start.
    pub engine_cache_dir: Option<PathBuf>,
    /// fp16 kernels where TensorRT finds them faster.
    #[serde(default = "default_true")]
    pub fp16: bool,
    /// Pull this GPU kind's engines from the object store before loading, push new ones after.
    #[serde(default)]
    pub share_engines: bool,
    /// Image sides (pixels, before ESRGAN) the engines are built for; all three or none.
    pub min_side: Option<usize>,
    pub opt_side: Option<usize>,
    pub max_side: Option<usize>,
}

impl Default for TensorRtConfig {
    fn default() -> Self {
        Self {
            engine_cache_dir: None,
            fp16: true,
            share_engines: false,
            min_side: None,
            opt_side: None,
            max_side: None,
        }
    }
}

impl TensorRtConfig {
    /// The folder to share through the store, when sharing is on; an error when it is on without
    /// a folder to share.
    pub fn shared_cache(&self) -> Result<Option<&std::path::Path>, ProviderConfigError> {
        match (self.share_engines, &self.engine_cache_dir) {
            (false, _) => Ok(None),
            (true, Some(dir)) => Ok(Some(dir)),
            (true, None) => Err(ProviderConfigError {
                key: "tensorrt.share_engines".into(),
                problem: "sharing engines needs tensorrt.engine_cache_dir, the folder they are kept in".into(),
            }),
        }
    }

    fn options(&self, max_batch: usize) -> Result<TensorRtOptions, ProviderConfigError> {
        let shapes = match (self.min_side, self.opt_side, self.max_side) {
            (None, None, None) => None,
            (Some(min_side), Some(opt_side), Some(max_side)) if min_side <= opt_side && opt_side <= max_side => {
                Some(ShapeLimits { min_side, opt_side, max_side, max_batch })
            }
            _ => {
                return Err(ProviderConfigError {
                    key: "tensorrt".into(),
                    problem: "min_side, opt_side and max_side go together, with min_side <= opt_side <= max_side"
                        .into(),
                })
            }
        };
        Ok(TensorRtOptions { engine_cache: self.engine_cache_dir.clone(), fp16: self.fp16, shapes })
    }
}

impl WorkerConfig {
    pub fn tiling(&self) -> Tiling {
        Tiling { tile: self.upscale_tile.unwrap_or(Tiling::default().tile), overlap: self.upscale_tile_overlap }
    }

    /// What `auto` measures at start-up; `None` when the providers are named.
    pub fn autotune_options(&self) -> Option<AutotuneOptions> {
        if self.execution_provider.parse::<ProviderSetting>().ok()? != ProviderSetting::Auto {
            return None;
        }
        let budget = Duration::from_secs(self.autotune_budget_secs);
        Some(match self.upscale_tile {
            Some(_) => AutotuneOptions { budget, tilings: vec![self.tiling()] },
            None => AutotuneOptions::tiled_or_whole(budget, self.tiling()),
        })
    }

    /// How this worker sets up ONNX Runtime: the provider of every part and the threads.
    pub fn runtime_options(&self) -> Result<RuntimeOptions, ProviderConfigError> {
        let error = |key: String| move |source: EngineError| ProviderConfigError { key, problem: source.to_string() };
        let setting: ProviderSetting = self.execution_provider.parse().map_err(error("execution_provider".into()))?;
        if setting == ProviderSetting::Auto && !self.part_providers.is_empty() {
            return Err(ProviderConfigError {
                key: "part_providers".into(),
                problem: "`auto` chooses every part's provider itself; name an execution_provider to set parts by \
                          hand"
                    .into(),
            });
        }
        let mut providers = Providers::all(setting.provider());
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
            autotune: setting == ProviderSetting::Auto,
            tensorrt: self.tensorrt.options(self.max_batch.get())?,
        })
    }
}

/// A provider or part name in the `[worker]` section that the engine does not know.
#[derive(Debug, thiserror::Error)]
#[error("worker.{key}: {problem} (CONFIG.md describes the key)")]
pub struct ProviderConfigError {
    key: String,
    problem: String,
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
    "auto".into()
}
fn default_autotune_budget_secs() -> u64 {
    300
}
fn default_max_batch() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::MIN
}
fn default_batch_window_ms() -> u64 {
    20
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
fn default_true() -> bool {
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
fn default_overlap_finishing() -> usize {
    1
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rapid_engine::runtime::Precision;
    use rapid_fleet::config::load;

    use super::*;
    use rapid_engine::runtime::ExecutionProvider;

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

        let mut mixed = worker_section("part_providers = { upscaler = \"openvino\" }");
        mixed.execution_provider = "cpu".into();
        let options = mixed.runtime_options().unwrap();
        assert_eq!(options.providers.for_part(Part::Upscaler), ExecutionProvider::OpenVino);
        assert_eq!(options.providers.for_part(Part::Unet), ExecutionProvider::Cpu);
    }

    /// A `[worker]` section with nothing but a model and `extra`: every other key at its default.
    fn bare_worker_section(extra: &str) -> WorkerConfig {
        let file = tempfile::NamedTempFile::new().unwrap();
        let text = format!(
            "[amqp]\nurl = \"amqp://unused\"\n[redis]\nurl = \"redis://unused\"\n\
             [s3]\nregion = \"r\"\nbucket = \"b\"\naccess_key = \"a\"\nsecret_key = \"s\"\n\
             [worker]\nmodels = {{ tiny = \"unused\" }}\n{extra}\n"
        );
        std::fs::write(file.path(), text).unwrap();
        load::<WorkerFile>(file.path()).unwrap().worker
    }

    #[test]
    fn a_group_finishes_beside_the_next_unless_told_not_to() {
        assert_eq!(bare_worker_section("").overlap_finishing, 1);
        assert_eq!(bare_worker_section("overlap_finishing = 0").overlap_finishing, 0);
    }

    #[test]
    fn auto_is_the_default_and_measures_both_tilings_unless_one_is_named() {
        let auto = bare_worker_section("");
        let options = auto.runtime_options().unwrap();
        assert!(options.autotune && options.providers == Providers::default(), "{options:?}");
        let tune = auto.autotune_options().expect("auto measures");
        assert_eq!(tune.tilings, vec![Tiling::default(), Tiling { tile: 0, ..Tiling::default() }]);
        assert_eq!(tune.budget, Duration::from_secs(300));
        let one_tile = bare_worker_section("upscale_tile = 64").autotune_options().unwrap();
        assert_eq!(one_tile.tilings, vec![Tiling { tile: 64, overlap: 8 }], "a named tile is kept");

        let fixed = bare_worker_section("execution_provider = \"cpu\"");
        assert!(fixed.autotune_options().is_none() && !fixed.runtime_options().unwrap().autotune);
        let mixed = bare_worker_section("part_providers = { upscaler = \"openvino\" }");
        let error = mixed.runtime_options().unwrap_err().to_string();
        assert!(error.contains("worker.part_providers") && error.contains("`auto`"), "{error}");
    }

    #[test]
    fn tensorrt_engines_are_fp16_and_profiled_only_when_every_side_is_named() {
        let plain = bare_worker_section("").runtime_options().unwrap().tensorrt;
        assert_eq!(plain, TensorRtOptions::default());
        assert!(plain.fp16 && plain.shapes.is_none() && plain.engine_cache.is_none());
        let section = "max_batch = 4\n[worker.tensorrt]\nengine_cache_dir = \"/var/cache/trt\"\n\
                       min_side = 256\nopt_side = 512\nmax_side = 1024";
        let named = bare_worker_section(section).runtime_options().unwrap().tensorrt;
        assert_eq!(named.engine_cache.as_deref(), Some(Path::new("/var/cache/trt")));
        assert_eq!(named.shapes, Some(ShapeLimits { min_side: 256, opt_side: 512, max_side: 1024, max_batch: 4 }));
        let half = bare_worker_section("[worker.tensorrt]\nmax_side = 1024").runtime_options().unwrap_err().to_string();
        assert!(half.contains("worker.tensorrt") && half.contains("go together"), "{half}");
        let shared = bare_worker_section("[worker.tensorrt]\nshare_engines = true\nengine_cache_dir = \"/c\"");
        assert_eq!(shared.tensorrt.shared_cache().unwrap(), Some(Path::new("/c")));
        assert_eq!(bare_worker_section("").tensorrt.shared_cache().unwrap(), None, "not shared unless asked");
        let nowhere = bare_worker_section("[worker.tensorrt]\nshare_engines = true");
        let error = nowhere.tensorrt.shared_cache().unwrap_err().to_string();
        assert!(error.contains("worker.tensorrt.share_engines") && error.contains("engine_cache_dir"), "{error}");
    }

    #[test]
    fn workers_warm_up_unless_told_not_to() {
        assert!(worker_section("").warm_up, "warming up is the default");
        assert!(!worker_section("warm_up = false").warm_up);
    }

    #[test]
    fn an_unknown_part_or_provider_names_its_key() {
        let error = |extra| {
            let mut section = worker_section(extra);
            section.execution_provider = "cpu".into();
            section.runtime_options().unwrap_err().to_string()
        };
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
