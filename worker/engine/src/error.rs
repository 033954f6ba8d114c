//! The engine's error type: every variant names the file, part or field at fault and what to do.
//!
//! One enum for the whole engine rather than one per module, because callers (the CLI, the fleet
//! worker) only need to tell three things apart: bad input from the user (`is_permanent`), a model
//! directory that breaks the contract, and a runtime failure worth retrying.

use std::path::PathBuf;

use crate::marking::MarkingError;
use crate::samplers::SamplerError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "ONNX Runtime library not found at {}: run `bash deploy/setup.sh` (add `--gpu` for cuda/tensorrt, `--openvino` for openvino) \
         or set ORT_DYLIB_PATH to a libonnxruntime.so",
        path.display()
    )]
    RuntimeMissing { path: PathBuf },

    #[error("could not load ONNX Runtime from {}: {message}", path.display())]
    RuntimeLoad { path: PathBuf, message: String },

    #[error("execution provider `{provider}` cannot be used: {reason}")]
    ProviderUnavailable { provider: &'static str, reason: String },

    #[error("{}: missing; {hint}", path.display())]
    MissingFile { path: PathBuf, hint: &'static str },

    #[error("{}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },

    #[error("{}: {message} (the model directory contract is in DESIGN.md, \"Model directory\")", path.display())]
    Contract { path: PathBuf, message: String },

    #[error("invalid {field}: {message}")]
    InvalidInput { field: &'static str, message: String },

    #[error("{part} failed while running: {message}")]
    Inference { part: &'static str, message: String },

    #[error("cancelled")]
    Cancelled,

    #[error(transparent)]
    Sampler(#[from] SamplerError),

    #[error(transparent)]
    Marking(#[from] MarkingError),
}

impl EngineError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput { field, message: message.into() }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, message: impl ToString) -> Self {
        Self::BadFile { path: path.into(), message: message.to_string() }
    }

    pub(crate) fn contract(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Contract { path: path.into(), message: message.into() }
    }

    pub(crate) fn inference(part: &'static str, error: impl ToString) -> Self {
        Self::Inference { part, message: error.to_string() }
    }

    /// True when retrying the same request cannot help (bad input, broken model); the fleet
    /// dead-letters such jobs at once instead of retrying them.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Inference { .. } | Self::Cancelled)
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
