//! ONNX Runtime: locating and loading its shared library, choosing the execution provider, and
//! building sessions (with the project's custom operators, `crate::attention`, registered).
//!
//! The library is loaded at run time (`ort`'s `load-dynamic`) instead of linked, so one binary runs
//! with the CPU wheel's library or the GPU wheel's. A requested provider that cannot load is an
//! error, never a silent fall-back to CPU: a fleet that believes it runs on CUDA while it runs on
//! CPU is far worse than one that refuses to start.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProviderDispatch};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::attention;
use crate::error::{EngineError, Result};

/// Where ONNX Runtime executes the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda,
    TensorRt,
    /// OpenVINO's CPU plugin (oneDNN kernels), from the `onnxruntime-openvino` wheel's library.
    /// Measured on an AVX-512 Xeon: ESRGAN 1.08–1.15× faster than the CPU provider, the U-Net and
    /// VAE slower in the worker (deploy/bench/SESSION.md), so it is an option, not the default.
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

impl std::fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExecutionProvider {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            EngineError::invalid("execution provider", format!("`{s}` is not one of cpu, cuda, tensorrt, openvino"))
        })
    }
}

/// How to set up ONNX Runtime. `Default` is what a fresh checkout wants: CPU, the library that
/// `deploy/setup.sh` fetched, ONNX Runtime's own choice of thread count.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub provider: ExecutionProvider,
    /// Path to `libonnxruntime.so`; `None` means `ORT_DYLIB_PATH`, then the project cache.
    pub library: Option<PathBuf>,
    /// Threads inside one operator; `None` lets ONNX Runtime use every core.
    pub intra_threads: Option<usize>,
}

/// A loaded ONNX Runtime with one execution provider; builds the sessions of every model part.
pub struct Runtime {
    environment: Environment,
    provider: ExecutionProvider,
    intra_threads: Option<usize>,
}

impl Runtime {
    pub fn new(options: &RuntimeOptions) -> Result<Self> {
        let path = options
            .library
            .clone()
            .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
            .unwrap_or_else(|| default_library(options.provider));
        let environment = shared_environment(path)?;
        Ok(Self { environment, provider: options.provider, intra_threads: options.intra_threads })
    }

    pub fn provider(&self) -> ExecutionProvider {
        self.provider
    }

    /// Builds a session for one ONNX file. Called once per model part at load time; sessions are
    /// then reused for every image.
    pub(crate) fn session(&self, path: &Path) -> Result<Session> {
        if !path.exists() {
            return Err(EngineError::MissingFile {
                path: path.to_path_buf(),
                hint: "the model directory needs this part (see DESIGN.md, \"Model directory\")",
            });
        }
        let builder_error = |e: ort::Error| EngineError::bad_file(path, format!("cannot open ONNX model: {e}"));
        let mut builder = Session::builder(&self.environment)
            .map_err(builder_error)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| builder_error(e.into()))?;
        if let Some(threads) = self.intra_threads {
            builder = builder.with_intra_threads(threads).map_err(|e| builder_error(e.into()))?;
        }
        // Every session knows the project's own operators, so a graph rewritten with
        // `ai.rapid::FlashAttention` loads like any other. A fresh domain per session because
        // ort's `OperatorDomain` is not `Sync`, and `Runtime` is shared across worker threads.
        let operators = attention::op::operator_domain().map_err(builder_error)?;
        builder = builder.with_operators(operators).map_err(|e| builder_error(e.into()))?;
        if let Some(dispatch) = self.dispatch() {
            builder = builder.with_execution_providers([dispatch]).map_err(|e| EngineError::ProviderUnavailable {
                provider: self.provider.name(),
                reason: format!("{}; it needs {}", ort::Error::<()>::from(e), self.provider.requirements()),
            })?;
        }
        // ONNX Runtime adds a session's custom-op domain to a process-wide schema map with a
        // check-then-insert that is not thread-safe: two sessions committed at once on different
        // threads can fail with "the domain is already exist". Sessions are built only at load
        // time, so committing them one at a time costs start-up parallelism and nothing per image.
        static COMMIT: Mutex<()> = Mutex::new(());
        let _one_at_a_time = COMMIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        builder.commit_from_file(path).map_err(|e| {
            EngineError::bad_file(path, format!("not a loadable ONNX model ({e}); re-export it or restore the file"))
        })
    }

    fn dispatch(&self) -> Option<ExecutionProviderDispatch> {
        match self.provider {
            // The CPU provider is always present; registering it explicitly adds nothing.
            ExecutionProvider::Cpu => None,
            ExecutionProvider::Cuda => Some(ep::CUDA::default().build().error_on_failure()),
            ExecutionProvider::TensorRt => Some(ep::TensorRT::default().build().error_on_failure()),
            // fp32 like the other providers: OpenVINO would otherwise pick bf16 on CPUs that have it.
            ExecutionProvider::OpenVino => {
                let openvino = ep::OpenVINO::default().with_device_type("CPU").with_precision("FP32");
                let openvino = match self.intra_threads {
                    Some(threads) => openvino.with_num_threads(threads),
                    None => openvino,
                };
                Some(openvino.build().error_on_failure())
            }
        }
    }
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
fn default_library(provider: ExecutionProvider) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/onnxruntime")
        .join(provider.library_flavour())
        .join("libonnxruntime.so")
}
