//! ONNX Runtime: locating and loading its shared library, choosing the execution provider, and
//! building sessions (with the project's custom operators, `crate::custom_ops`, registered).
//!
//! The library is loaded at run time (`ort`'s `load-dynamic`) instead of linked, so one binary runs
//! with the CPU wheel's library or the GPU wheel's. A requested provider that cannot load is an
//! error, never a silent fall-back to CPU: a fleet that believes it runs on CUDA while it runs on
//! CPU is far worse than one that refuses to start.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::ep::{self, ArbitrarilyConfigurableExecutionProvider, ExecutionProviderDispatch};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use crate::custom_ops;
use crate::error::{EngineError, Result};
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

/// The member of `all` called `s`; the error lists every name, so it cannot fall behind the enum.
fn by_name<T: Copy>(all: &[T], name: fn(T) -> &'static str, s: &str, what: &'static str) -> Result<T> {
    all.iter().copied().find(|&member| name(member) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|&member| name(member)).collect();
        EngineError::invalid(what, format!("`{s}` is not one of {}", names.join(", ")))
    })
}

mod precision;
mod providers;
pub mod tensorrt;

use precision::cpu_flags;
pub use precision::{cpu_has_bf16, Precision};
pub use providers::{ExecutionProvider, Part, Providers};
use tensorrt::{BuildTarget, DeclaredInput, ModelShapes, Profile, TensorRtOptions};

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
    /// Load the library with the most CPU providers installed (the OpenVINO wheel's after
    /// `bash deploy/setup.sh --openvino`, else the CPU wheel's) so that `crate::autotune` can
    /// try each; only when every part is on `cpu` and no library is named.
    pub autotune: bool,
    /// How the parts on `tensorrt` are built and where their engines are kept.
    pub tensorrt: TensorRtOptions,
}

/// A loaded ONNX Runtime; builds the sessions of every model part, each on its provider.
pub struct Runtime {
    environment: Environment,
    library: PathBuf,
    /// Which wheel's library `library` is: decides the providers sessions may use.
    flavour: &'static str,
    providers: Providers,
    intra_threads: Option<usize>,
    session_cache: Option<SessionCache>,
    precision: Precision,
    profile: Option<PathBuf>,
    tensorrt: TensorRtOptions,
}

impl Runtime {
    pub fn new(options: &RuntimeOptions) -> Result<Self> {
        // Checked even when the library is named: no library has both CUDA and OpenVINO.
        let mut flavour = options.providers.library_flavour()?;
        options.precision.check(&options.providers, cpu_flags)?;
        let named = options.library.clone().or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from));
        if options.autotune && flavour == "cpu" && named.is_none() && default_library("openvino").exists() {
            flavour = "openvino";
        }
        let path = named.unwrap_or_else(|| default_library(flavour));
        // A named library is whatever it is; OpenVINO's provider is a plugin library beside it.
        if flavour == "cpu" && has_openvino_plugin(&path) {
            flavour = "openvino";
        }
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
            flavour,
            providers: options.providers.clone(),
            intra_threads: options.intra_threads,
            session_cache,
            precision: options.precision,
            profile: options.profile.clone(),
            tensorrt: options.tensorrt.clone(),
        })
    }

    /// The same library, threads, cache and precision with other providers per part; an error
    /// when they need another library than the one loaded.
    pub fn with_providers(&self, providers: Providers) -> Result<Self> {
        let wanted = providers.library_flavour()?;
        if wanted != "cpu" && wanted != self.flavour {
            return Err(EngineError::invalid(
                "execution providers",
                format!(
                    "{providers} need the {wanted} ONNX Runtime library, and this process loaded {} ({})",
                    self.library.display(),
                    self.flavour
                ),
            ));
        }
        self.precision.check(&providers, cpu_flags)?;
        Ok(Self {
            environment: self.environment.clone(),
            library: self.library.clone(),
            flavour: self.flavour,
            providers,
            intra_threads: self.intra_threads,
            session_cache: self.session_cache.clone(),
            precision: self.precision,
            profile: self.profile.clone(),
            tensorrt: self.tensorrt.clone(),
        })
    }

    /// Whether the loaded library has `provider` (CPU always; the others with their wheel's library).
    pub fn has_provider(&self, provider: ExecutionProvider) -> bool {
        let wanted = provider.library_flavour();
        wanted == "cpu" || wanted == self.flavour
    }

    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    pub fn library(&self) -> &Path {
        &self.library
    }

    pub fn intra_threads(&self) -> Option<usize> {
        self.intra_threads
    }

    pub fn session_cache(&self) -> Option<&SessionCache> {
        self.session_cache.as_ref()
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
        let operators = custom_ops::domain().map_err(builder_error)?;
        builder = builder.with_operators(operators).map_err(|e| builder_error(e.into()))?;
        let provider = self.providers.for_part(part);
        let dispatch = match provider {
            ExecutionProvider::TensorRt => Some(self.tensorrt_dispatch(path, part)?),
            other => self.dispatch(other),
        };
        if let Some(dispatch) = dispatch {
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
            ExecutionProvider::TensorRt => unreachable!("built by tensorrt_dispatch, which needs the graph"),
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

impl Runtime {
    /// The TensorRT provider for `graph`: fp16 as configured, an explicit profile over the sizes
    /// the worker serves, and its engine kept in a folder of its own (`tensorrt::engine_folder`).
    fn tensorrt_dispatch(&self, graph: &Path, part: Part) -> Result<ExecutionProviderDispatch> {
        let options = &self.tensorrt;
        let mut trt = ep::TensorRT::default().with_fp16(options.fp16);
        let profile = self.tensorrt_profile(graph, part)?;
        if let Some(profile) = &profile {
            trt = trt
                .with_profile_min_shapes(&profile.min)
                .with_profile_opt_shapes(&profile.opt)
                .with_profile_max_shapes(&profile.max);
        }
        if let Some(cache) = &options.engine_cache {
            match BuildTarget::of_this_machine() {
                Some(target) => {
                    let folder =
                        tensorrt::engine_folder(cache, &target, part, graph, profile.as_ref()).map_err(|e| {
                            EngineError::bad_file(cache, format!("cannot key the TensorRT engine cache: {e}"))
                        })?;
                    std::fs::create_dir_all(&folder).map_err(|e| {
                        EngineError::bad_file(
                            &folder,
                            format!("cannot create the engine folder ({e}); name a writable one"),
                        )
                    })?;
                    let folder = folder.display().to_string();
                    tracing::info!(part = part.name(), engine = %folder, "TensorRT engine cache");
                    trt = trt
                        .with_engine_cache(true)
                        .with_engine_cache_path(&folder)
                        .with_timing_cache(true)
                        .with_timing_cache_path(&folder);
                }
                // The provider refuses to start below, and says why better than a guess here.
                None => tracing::warn!(
                    "no NVIDIA GPU or TensorRT library found to key the engine cache; building without it"
                ),
            }
        }
        Ok(trt.build().error_on_failure())
    }

    /// The TensorRT optimisation profile `graph` gets for `part` under this runtime's shape
    /// limits; `None` without limits or when every input is static.
    pub fn tensorrt_profile(&self, graph: &Path, part: Part) -> Result<Option<Profile>> {
        match &self.tensorrt.shapes {
            Some(limits) => Ok(tensorrt::profile(part, &self.declared_inputs(graph)?, limits, &model_shapes(graph)?)),
            None => Ok(None),
        }
    }

    /// The inputs `graph` declares, read from a CPU session that skips every optimization: cheap,
    /// and the only way to the declared shapes without a protobuf reader.
    fn declared_inputs(&self, graph: &Path) -> Result<Vec<DeclaredInput>> {
        let error = |e: &dyn std::fmt::Display| EngineError::bad_file(graph, format!("cannot read its inputs: {e}"));
        let operators = custom_ops::domain().map_err(|e| error(&e))?;
        let builder = Session::builder(&self.environment)
            .map_err(|e| error(&e))?
            .with_optimization_level(GraphOptimizationLevel::Disable)
            .map_err(|e| error(&ort::Error::<()>::from(e)))?
            .with_operators(operators)
            .map_err(|e| error(&ort::Error::<()>::from(e)))?;
        let session = commit(builder, graph)?;
        Ok(session
            .inputs()
            .iter()
            .map(|input| DeclaredInput {
                name: input.name().to_owned(),
                shape: input.dtype().tensor_shape().map(|shape| shape.to_vec()).unwrap_or_default(),
            })
            .collect())
    }
}

/// The model facts a TensorRT profile needs, from the model directory `graph` sits in
/// (`<model>/<part>/model.onnx`).
fn model_shapes(graph: &Path) -> Result<ModelShapes> {
    let root = graph.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    let model = crate::model_dir::ModelDir::open(root)?;
    let spatial_factor = model.vae_config()?.spatial_factor();
    let context_length = crate::tokenizer::PromptTokenizer::load(&model.tokenizer_dir(), None)?.max_length();
    Ok(ModelShapes { spatial_factor, context_length })
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

/// Whether ONNX Runtime's OpenVINO provider library sits beside `library`, as in the
/// `onnxruntime-openvino` wheel.
fn has_openvino_plugin(library: &Path) -> bool {
    library.with_file_name("libonnxruntime_providers_openvino.so").exists()
}

/// The library `deploy/setup.sh` puts in the project-local cache. The workspace root is baked in at
/// compile time so binaries run from `target/` find it with no user action.
fn default_library(flavour: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/onnxruntime").join(flavour).join("libonnxruntime.so")
}
