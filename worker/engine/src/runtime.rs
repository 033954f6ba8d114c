//! ONNX Runtime: locating and loading its shared library, choosing the execution provider, and
//! building sessions (with the project's custom operators, `crate::operators`, registered).
//!
//! The library is loaded at run time (`ort`'s `load-dynamic`) instead of linked, so one binary runs
//! with the CPU wheel's library or the GPU wheel's. A requested provider that cannot load is an
//! error, never a silent fall-back to CPU: a fleet that believes it runs on CUDA while it runs on
//! CPU is far worse than one that refuses to start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use ort::environment::Environment;
use ort::ep::{self, ArbitrarilyConfigurableExecutionProvider, ExecutionProviderDispatch};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use crate::error::{EngineError, Result};
use crate::operators;
use crate::session_cache::{SessionCache, WEIGHTS};

/// `Display` and `FromStr` by `name()` over `ALL`, for the enums a configuration names.
macro_rules! named_in_config {
    ($type:ty, $what:literal) => {
        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $type {
            type Err = EngineError;

            fn from_str(s: &str) -> Result<Self> {
                by_name(&Self::ALL, Self::name, s, $what)
            }
        }
    };
}

/// Where ONNX Runtime executes the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda,
    TensorRt,
    /// OpenVINO's CPU plugin (oneDNN kernels), from the `onnxruntime-openvino` wheel's library.
    /// Measured on AVX-512 Xeon and EPYC, warm: ESRGAN 1.15–1.2× faster than the CPU provider, and
    /// on a Zen 5 the VAE and U-Net faster too (deploy/bench/speed/NOTES.md); an option, chosen per part
    /// (`Providers`), because it needs its own library and was level on the Xeon's U-Net.
    OpenVino,
}

impl ExecutionProvider {
    pub const ALL: [ExecutionProvider; 4] = [Self::Cpu, Self::Cuda, Self::TensorRt, Self::OpenVino];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
            Self::OpenVino => "openvino",
        }
    }

    /// The wheel whose library this provider needs: CUDA and TensorRT ship only in `onnxruntime-gpu`,
    /// OpenVINO only in `onnxruntime-openvino`.
    fn library_flavour(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda | Self::TensorRt => "gpu",
            Self::OpenVino => "openvino",
        }
    }

    /// What a provider that failed to register needs.
    fn requirements(self) -> &'static str {
        match self {
            Self::Cpu => "nothing beyond the library",
            Self::Cuda | Self::TensorRt => {
                "the onnxruntime-gpu library (`bash deploy/setup.sh --gpu`), an NVIDIA driver and the CUDA/cuDNN \
                 (and for tensorrt, TensorRT) libraries on the loader path"
            }
            Self::OpenVino => {
                "the onnxruntime-openvino library with its OpenVINO plugins beside it (`bash deploy/setup.sh --openvino`)"
            }
        }
    }
}

named_in_config!(ExecutionProvider, "execution provider");

/// The arithmetic of the parts on OpenVINO. The other providers run what the graph holds (for CUDA,
/// fp16 comes from fp16 model files: `deploy/export/fp16.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// The graph's own float32, as diffusers' references are computed.
    #[default]
    Fp32,
    /// bfloat16 matrix products (OpenVINO's `INFERENCE_PRECISION_HINT`), for CPUs with AVX512-BF16
    /// or AMX: on a 2-core Xeon with AMX a Table 6 image ran 3.4× faster (U-Net 655 against 2194 ms
    /// a step), and images moved by the amounts deploy/bench/precision/PRECISION.md states. Opt-in, because
    /// the images change.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Self::Fp32, Self::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        }
    }

    /// Refuses bf16 where it would not do what it says: on no OpenVINO part (the only provider that
    /// takes the hint), or on a CPU without bf16 instructions, where OpenVINO would emulate it
    /// more slowly than fp32. `cpu_flags` gives the `flags` line of /proc/cpuinfo, read only for bf16.
    fn check(self, providers: &Providers, cpu_flags: impl FnOnce() -> String) -> Result<()> {
        if self == Self::Fp32 {
            return Ok(());
        }
        if !Part::ALL.iter().any(|&part| providers.for_part(part) == ExecutionProvider::OpenVino) {
            return Err(EngineError::invalid(
                "precision",
                format!(
                    "bf16 runs only on the openvino provider and no part is on it ({providers}); put the parts \
                     that should run in bf16 on openvino (execution_provider or part_providers), or use fp32"
                ),
            ));
        }
        if !has_bf16(&cpu_flags()) {
            return Err(EngineError::invalid(
                "precision",
                "bf16 needs a CPU with avx512_bf16 or amx_bf16 (see /proc/cpuinfo), and this one has neither: \
                 OpenVINO would emulate it, slower than fp32; use fp32 on this machine",
            ));
        }
        Ok(())
    }
}

named_in_config!(Precision, "precision");

/// Whether this CPU has the instructions `Precision::Bf16` needs: AVX512-BF16 or AMX-BF16.
pub fn cpu_has_bf16() -> bool {
    has_bf16(&cpu_flags())
}

fn has_bf16(cpu_flags: &str) -> bool {
    cpu_flags.split_whitespace().any(|flag| flag == "avx512_bf16" || flag == "amx_bf16")
}

/// The `flags` line of the first core in /proc/cpuinfo; empty where there is none.
fn cpu_flags() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|line| line.split(':').next().is_some_and(|field| field.trim() == "flags"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, flags)| flags.to_string())
        .unwrap_or_default()
}

/// The ONNX parts of a model directory, as far as choosing where each one runs goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    TextEncoder,
    Unet,
    VaeDecoder,
    Upscaler,
}

impl Part {
    pub const ALL: [Part; 4] = [Self::TextEncoder, Self::Unet, Self::VaeDecoder, Self::Upscaler];

    pub fn name(self) -> &'static str {
        match self {
            Self::TextEncoder => "text_encoder",
            Self::Unet => "unet",
            Self::VaeDecoder => "vae_decoder",
            Self::Upscaler => "upscaler",
        }
    }
}

named_in_config!(Part, "model part");

/// The member of `all` called `s`; the error lists every name, so it cannot fall behind the enum.
fn by_name<T: Copy>(all: &[T], name: fn(T) -> &'static str, s: &str, what: &'static str) -> Result<T> {
    all.iter().copied().find(|&member| name(member) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|&member| name(member)).collect();
        EngineError::invalid(what, format!("`{s}` is not one of {}", names.join(", ")))
    })
}

/// Which execution provider runs each part: one for every part, optionally overridden per part.
///
/// Per part because the fastest provider differs by part and by CPU: on AVX-512 CPUs OpenVINO runs
/// ESRGAN 1.15–1.2× faster than the CPU provider; on a Zen 5 its warm U-Net was 4–7% faster and its
/// warm VAE 1.45×, while on an AVX-512 Xeon its U-Net was level (deploy/bench/speed/NOTES.md, session/SESSION.md).
/// Every library has the CPU provider, so `cpu` mixes with anything; the others must share a library.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Providers {
    default: ExecutionProvider,
    overrides: BTreeMap<Part, ExecutionProvider>,
}

impl Providers {
    /// Every part on `provider`.
    pub fn all(provider: ExecutionProvider) -> Self {
        Self { default: provider, overrides: BTreeMap::new() }
    }

    /// `part` on `provider`, the others unchanged.
    pub fn with(mut self, part: Part, provider: ExecutionProvider) -> Self {
        if provider == self.default {
            self.overrides.remove(&part);
        } else {
            self.overrides.insert(part, provider);
        }
        self
    }

    pub fn for_part(&self, part: Part) -> ExecutionProvider {
        self.overrides.get(&part).copied().unwrap_or(self.default)
    }

    /// The one library that has every provider in use; an error when two need different ones
    /// (CUDA is only in the GPU wheel's, OpenVINO only in the OpenVINO wheel's).
    fn library_flavour(&self) -> Result<&'static str> {
        let mut flavours = Part::ALL.map(|part| self.for_part(part).library_flavour()).to_vec();
        flavours.retain(|&flavour| flavour != "cpu");
        flavours.sort_unstable();
        flavours.dedup();
        match flavours.as_slice() {
            [] => Ok("cpu"),
            [one] => Ok(one),
            _ => Err(EngineError::invalid(
                "execution providers",
                format!(
                    "{self} need both the {} and the {} ONNX Runtime library, and one process loads one; \
                     run those parts on `cpu` or on providers of one library",
                    flavours[0], flavours[1]
                ),
            )),
        }
    }
}

impl std::fmt::Display for Providers {
    /// `cpu`, or `cpu (upscaler: openvino)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.default)?;
        let overrides: Vec<String> =
            self.overrides.iter().map(|(part, provider)| format!("{part}: {provider}")).collect();
        if !overrides.is_empty() {
            write!(f, " ({})", overrides.join(", "))?;
        }
        Ok(())
    }
}

/// How to set up ONNX Runtime. `Default` is what a fresh checkout wants: CPU, the library that
/// `deploy/setup.sh` fetched, ONNX Runtime's own choice of thread count.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub providers: Providers,
    /// Path to `libonnxruntime.so`; `None` means `ORT_DYLIB_PATH`, then the project cache.
    pub library: Option<PathBuf>,
    /// Threads inside one operator; `None` lets ONNX Runtime use every core.
    pub intra_threads: Option<usize>,
    /// Where CPU-provider sessions keep their optimized graphs between starts
    /// (`crate::session_cache`); `None` optimizes at every start.
    pub session_cache: Option<PathBuf>,
    /// The arithmetic of the parts on OpenVINO.
    pub precision: Precision,
    /// Where each session writes ONNX Runtime's per-node profile (`DIR/<part>_<timestamp>.json`,
    /// when the session ends; the folder is created), to see where a part's time goes; `None`
    /// profiles nothing.
    pub profile: Option<PathBuf>,
}

/// A loaded ONNX Runtime; builds the sessions of every model part, each on its provider.
pub struct Runtime {
    environment: Environment,
    library: PathBuf,
    providers: Providers,
    intra_threads: Option<usize>,
    session_cache: Option<SessionCache>,
    precision: Precision,
    profile: Option<PathBuf>,
}

impl Runtime {
    pub fn new(options: &RuntimeOptions) -> Result<Self> {
        // Checked even when the library is named: no library has both CUDA and OpenVINO.
        let flavour = options.providers.library_flavour()?;
        options.precision.check(&options.providers, cpu_flags)?;
        let path = options
            .library
            .clone()
            .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
            .unwrap_or_else(|| default_library(flavour));
        let environment = shared_environment(path.clone())?;
        let session_cache = options.session_cache.as_deref().map(SessionCache::open).transpose()?;
        if let Some(dir) = &options.profile {
            // ONNX Runtime opens its profile file without creating the folder, and writes nothing
            // (silently) when it cannot.
            std::fs::create_dir_all(dir).map_err(|e| EngineError::BadFile {
                path: dir.clone(),
                message: format!("cannot create the profile folder ({e}); name a writable folder"),
            })?;
        }
        Ok(Self {
            environment,
            library: path,
            providers: options.providers.clone(),
            intra_threads: options.intra_threads,
            session_cache,
            precision: options.precision,
            profile: options.profile.clone(),
        })
    }

    /// Builds a session for one ONNX file, on the provider chosen for `part`. Called once per
    /// model part at load time; sessions are then reused for every image.
    pub(crate) fn session(&self, path: &Path, part: Part) -> Result<Session> {
        if !path.exists() {
            return Err(EngineError::MissingFile {
                path: path.to_path_buf(),
                hint: "the model directory needs this part (see DESIGN.md, \"Model directory\")",
            });
        }
        // Only the CPU provider's optimizations are saved: OpenVINO compiles its own graph after
        // ONNX Runtime's pass (and its cache_dir did not shorten loading), and the GPU providers'
        // fused graphs are not timed here.
        match &self.session_cache {
            Some(cache) if self.providers.for_part(part) == ExecutionProvider::Cpu => {
                self.cached_session(cache, path, part)
            }
            _ => commit(self.builder(path, part, GraphOptimizationLevel::All)?, path),
        }
    }

    /// Loads the saved optimized graph of `path` when the cache has one for this library and CPU;
    /// otherwise optimizes as usual and saves the result. The cache only ever costs a warning:
    /// an entry that cannot be read or written leaves the session built the ordinary way.
    fn cached_session(&self, cache: &SessionCache, path: &Path, part: Part) -> Result<Session> {
        let entry = match cache.entry(path, &self.library) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(model = %path.display(), error = %e, "session cache unusable; optimizing without it");
                return commit(self.builder(path, part, GraphOptimizationLevel::All)?, path);
            }
        };
        if let Some(graph) = entry.graph() {
            // The optimizers run again, at the same level: on a graph they already rewrote they
            // take little time, and with them off the Table 6 U-Net ran 4% slower (1006–1030
            // against 945–987 ms a call; deploy/bench/session/SESSION.md).
            match commit(self.builder(path, part, GraphOptimizationLevel::All)?, &graph) {
                Ok(session) => {
                    tracing::debug!(model = %path.display(), entry = %entry.path().display(), "optimized graph from the cache");
                    return Ok(session);
                }
                Err(e) => {
                    tracing::warn!(entry = %entry.path().display(), error = %e, "cached graph does not load; replacing it");
                    if let Err(e) = entry.discard() {
                        tracing::warn!(entry = %entry.path().display(), error = %e, "cannot remove the broken entry");
                    }
                }
            }
        }
        let staged = entry
            .stage()
            .inspect_err(
                |e| tracing::warn!(cache = %cache.dir().display(), error = %e, "cannot write the session cache"),
            )
            .ok();
        let mut builder = self.builder(path, part, GraphOptimizationLevel::All)?;
        if let Some(staged) = &staged {
            let builder_error =
                |e: ort::Error| EngineError::bad_file(path, format!("cannot set up the session cache: {e}"));
            builder = builder
                .with_optimized_model_path(staged.graph())
                .map_err(|e| builder_error(e.into()))?
                .with_config_entry("session.optimized_model_external_initializers_file_name", WEIGHTS)
                .map_err(|e| builder_error(e.into()))?;
        }
        let session = commit(builder, path)?;
        if let Some(staged) = staged {
            match entry.commit(staged) {
                Ok(()) => {
                    tracing::info!(model = %path.display(), entry = %entry.path().display(), "saved the optimized graph")
                }
                Err(e) => {
                    tracing::warn!(entry = %entry.path().display(), error = %e, "cannot save the optimized graph")
                }
            }
        }
        Ok(session)
    }

    /// A session builder with the engine's options and `part`'s provider, at `level`.
    fn builder(&self, path: &Path, part: Part, level: GraphOptimizationLevel) -> Result<SessionBuilder> {
        let builder_error = |e: ort::Error| EngineError::bad_file(path, format!("cannot open ONNX model: {e}"));
        let mut builder = Session::builder(&self.environment)
            .map_err(builder_error)?
            .with_optimization_level(level)
            .map_err(|e| builder_error(e.into()))?;
        if let Some(threads) = self.intra_threads {
            builder = builder.with_intra_threads(threads).map_err(|e| builder_error(e.into()))?;
        }
        if let Some(dir) = &self.profile {
            builder = builder.with_profiling(dir.join(part.name())).map_err(|e| builder_error(e.into()))?;
        }
        // Every session knows the project's own operators, so a graph rewritten with
        // `ai.rapid::FlashAttention` or `ai.rapid::WinogradConv` loads like any other. A fresh
        // domain per session because ort's `OperatorDomain` is not `Sync`, and `Runtime` is shared
        // across worker threads.
        let operators = operators::domain().map_err(builder_error)?;
        builder = builder.with_operators(operators).map_err(|e| builder_error(e.into()))?;
        let provider = self.providers.for_part(part);
        if let Some(dispatch) = self.dispatch(provider) {
            builder = builder.with_execution_providers([dispatch]).map_err(|e| EngineError::ProviderUnavailable {
                provider: provider.name(),
                reason: format!("{}; it needs {}", ort::Error::<()>::from(e), provider.requirements()),
            })?;
        }
        Ok(builder)
    }

    fn dispatch(&self, provider: ExecutionProvider) -> Option<ExecutionProviderDispatch> {
        match provider {
            // The CPU provider is always present; registering it explicitly adds nothing.
            ExecutionProvider::Cpu => None,
            ExecutionProvider::Cuda => Some(ep::CUDA::default().build().error_on_failure()),
            ExecutionProvider::TensorRt => Some(ep::TensorRT::default().build().error_on_failure()),
            ExecutionProvider::OpenVino => {
                let openvino = ep::OpenVINO::default().with_device_type("CPU");
                let openvino = match self.precision {
                    // Said even for fp32: OpenVINO would otherwise pick bf16 on CPUs that have it.
                    Precision::Fp32 => openvino.with_precision("FP32"),
                    // The provider's `precision` takes only FP32 or ACCURACY on the CPU; the CPU
                    // plugin's own property, passed through, takes bf16.
                    Precision::Bf16 => openvino
                        .with_arbitrary_config("load_config", r#"{"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}}"#),
                };
                let openvino = match self.intra_threads {
                    Some(threads) => openvino.with_num_threads(threads),
                    None => openvino,
                };
                Some(openvino.build().error_on_failure())
            }
        }
    }
}

/// Builds the session of `graph` (the model's file, or its optimized copy).
fn commit(mut builder: SessionBuilder, graph: &Path) -> Result<Session> {
    // ONNX Runtime adds a session's custom-op domain to a process-wide schema map with a
    // check-then-insert that is not thread-safe: two sessions committed at once on different
    // threads can fail with "the domain is already exist". Sessions are built only at load
    // time, so committing them one at a time costs start-up parallelism and nothing per image.
    static COMMIT: Mutex<()> = Mutex::new(());
    let _one_at_a_time = COMMIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    builder.commit_from_file(graph).map_err(|e| {
        let message = e.to_string();
        // A custom operator's output has no static rank (the ops declare no shape inference), and
        // OpenVINO refuses to compile a subgraph fed by one, in these words.
        let hint = if message.contains("dynamic rank") {
            "if this graph was rewritten with the project's ai.rapid operators (deploy/export/winograd.py, \
             fuse_attention.py --fused rapid), run this part on the `cpu` provider: they are CPU-provider kernels"
        } else {
            "re-export it or restore the file"
        };
        EngineError::bad_file(graph, format!("not a loadable ONNX model ({message}); {hint}"))
    })
}

/// ONNX Runtime allows one environment per process, and `ort` refuses to build a second even after
/// the first is dropped; so every `Runtime` of a process shares the first one built. Providers and
/// thread counts are per session, so runtimes with different options can still coexist; only the
/// library itself cannot change.
fn shared_environment(path: PathBuf) -> Result<Environment> {
    static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);
    let mut loaded = LOADED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((loaded_path, environment)) = loaded.as_ref() {
        if *loaded_path != path {
            return Err(EngineError::RuntimeLoad {
                path,
                message: format!(
                    "this process already loaded ONNX Runtime from {}; one process can use only one library",
                    loaded_path.display()
                ),
            });
        }
        return Ok(environment.clone());
    }
    if !path.exists() {
        return Err(EngineError::RuntimeMissing { path });
    }
    let load_error =
        |e: &dyn std::fmt::Display| EngineError::RuntimeLoad { path: path.clone(), message: e.to_string() };
    let environment = ort::init_from(&path)
        .map_err(|e| load_error(&e))?
        .with_name("rapid-diffusion")
        .build()
        .map_err(|e| load_error(&e))?;
    *loaded = Some((path, environment.clone()));
    Ok(environment)
}

/// The library `deploy/setup.sh` puts in the project-local cache. The workspace root is baked in at
/// compile time so binaries run from `target/` find it with no user action.
fn default_library(flavour: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/onnxruntime").join(flavour).join("libonnxruntime.so")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_runs_on_its_override_and_the_others_on_the_default() {
        let providers = Providers::all(ExecutionProvider::Cpu).with(Part::Upscaler, ExecutionProvider::OpenVino);
        assert_eq!(providers.for_part(Part::Upscaler), ExecutionProvider::OpenVino);
        assert_eq!(providers.for_part(Part::Unet), ExecutionProvider::Cpu);
        assert_eq!(providers.to_string(), "cpu (upscaler: openvino)");
        // Overriding back to the default leaves nothing to report.
        let back = providers.with(Part::Upscaler, ExecutionProvider::Cpu);
        assert_eq!(back, Providers::all(ExecutionProvider::Cpu));
        assert_eq!(back.to_string(), "cpu");
    }

    #[test]
    fn the_library_is_the_one_every_provider_in_use_needs() {
        let flavour = |providers: Providers| providers.library_flavour().map_err(|e| e.to_string());
        assert_eq!(flavour(Providers::default()), Ok("cpu"));
        let cpu_but_upscaler = Providers::all(ExecutionProvider::Cpu).with(Part::Upscaler, ExecutionProvider::OpenVino);
        assert_eq!(flavour(cpu_but_upscaler), Ok("openvino"));
        let openvino_but_unet = Providers::all(ExecutionProvider::OpenVino).with(Part::Unet, ExecutionProvider::Cpu);
        assert_eq!(flavour(openvino_but_unet), Ok("openvino"));
        let cuda_and_tensorrt = Providers::all(ExecutionProvider::Cuda).with(Part::Unet, ExecutionProvider::TensorRt);
        assert_eq!(flavour(cuda_and_tensorrt), Ok("gpu"));

        let cuda_and_openvino =
            Providers::all(ExecutionProvider::Cuda).with(Part::Upscaler, ExecutionProvider::OpenVino);
        let error = flavour(cuda_and_openvino).unwrap_err();
        assert!(error.contains("cuda (upscaler: openvino)") && error.contains("one process loads one"), "{error}");
        // Refused before any library is looked for, so a named library does not hide the conflict.
        let options = RuntimeOptions {
            providers: Providers::all(ExecutionProvider::Cuda).with(Part::VaeDecoder, ExecutionProvider::OpenVino),
            library: Some(PathBuf::from("/nonexistent/libonnxruntime.so")),
            ..RuntimeOptions::default()
        };
        let error = Runtime::new(&options).err().expect("mixed libraries must be refused").to_string();
        assert!(error.contains("one process loads one"), "{error}");
    }

    #[test]
    fn bf16_is_refused_without_an_openvino_part_or_bf16_instructions() {
        let amx = || "fpu avx512f avx512_bf16 amx_bf16 amx_tile".to_string();
        let on_cpu = Providers::all(ExecutionProvider::Cpu);
        let unet_on_openvino = on_cpu.clone().with(Part::Unet, ExecutionProvider::OpenVino);
        assert!(Precision::Fp32.check(&on_cpu, || unreachable!("fp32 reads no flags")).is_ok());
        assert!(Precision::Bf16.check(&unet_on_openvino, amx).is_ok());
        let avx512_bf16 = || "fpu avx512f avx512_bf16".to_string();
        assert!(Precision::Bf16.check(&unet_on_openvino, avx512_bf16).is_ok(), "AVX512-BF16 is enough");

        let error = Precision::Bf16.check(&on_cpu, amx).unwrap_err().to_string();
        assert!(error.contains("invalid precision") && error.contains("only on the openvino provider"), "{error}");
        let error = Precision::Bf16.check(&unet_on_openvino, || "fpu avx2 avx512f".into()).unwrap_err().to_string();
        assert!(error.contains("avx512_bf16 or amx_bf16") && error.contains("use fp32"), "{error}");

        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        let error = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(error.contains("`fp16` is not one of fp32, bf16"), "{error}");
    }

    #[test]
    fn cpu_flags_come_from_proc_cpuinfo() {
        // Every x86-64 CPU has these; on other machines the line is empty and bf16 is refused.
        if cfg!(target_arch = "x86_64") {
            let flags = cpu_flags();
            assert!(flags.split_whitespace().any(|flag| flag == "sse2"), "{flags}");
        }
    }

    #[test]
    fn parts_are_named_as_in_the_model_directory() {
        for part in Part::ALL {
            assert_eq!(part.name().parse::<Part>().unwrap(), part);
        }
        let error = "decoder".parse::<Part>().unwrap_err().to_string();
        assert!(error.contains("`decoder`") && error.contains("text_encoder, unet, vae_decoder, upscaler"), "{error}");
    }
}
