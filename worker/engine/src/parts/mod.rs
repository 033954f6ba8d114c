//! One small type per ONNX part of a model directory. Each checks its graph's inputs against the
//! contract once, at load time, and then only runs.
//!
//! Names, element types and ranks are read from the session, never assumed: exports disagree
//! (timestep int64 or float, scalar or `[B]`; input_ids int32 or int64), and a mismatch caught at
//! load names the file, while one caught mid-job would only say "shape error".

pub mod text_encoder;
pub mod unet;
pub mod upscaler;
pub mod vae;

use std::path::Path;

use ort::session::Session;
use ort::value::TensorElementType;

use crate::error::{EngineError, Result};

/// An ONNX graph input or output as declared in the file; `-1` marks a dynamic dimension.
#[derive(Debug, Clone)]
pub(crate) struct TensorSpec {
    pub name: String,
    pub element: TensorElementType,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

fn specs(path: &Path, outlets: &[ort::value::Outlet], what: &str) -> Result<Vec<TensorSpec>> {
    outlets
        .iter()
        .map(|outlet| match (outlet.dtype().tensor_type(), outlet.dtype().tensor_shape()) {
            (Some(element), Some(shape)) => {
                Ok(TensorSpec { name: outlet.name().to_owned(), element, shape: shape.to_vec() })
            }
            _ => Err(EngineError::contract(path, format!("{what} `{}` is not a tensor", outlet.name()))),
        })
        .collect()
}

/// Looks up a named input, or the only input that could be meant when a graph uses another name.
pub(crate) fn input(session: &Session, path: &Path, name: &str) -> Result<TensorSpec> {
    let inputs = specs(path, session.inputs(), "input")?;
    inputs.iter().find(|s| s.name == name).cloned().ok_or_else(|| {
        let found: Vec<&str> = inputs.iter().map(|s| s.name.as_str()).collect();
        EngineError::contract(path, format!("has no input `{name}` (its inputs: {})", found.join(", ")))
    })
}

pub(crate) fn optional_input(session: &Session, path: &Path, name: &str) -> Result<Option<TensorSpec>> {
    Ok(specs(path, session.inputs(), "input")?.into_iter().find(|s| s.name == name))
}

/// The output called `preferred`, else the first one (exports name outputs inconsistently).
pub(crate) fn output(session: &Session, path: &Path, preferred: &str) -> Result<TensorSpec> {
    let outputs = specs(path, session.outputs(), "output")?;
    let chosen = outputs.iter().find(|s| s.name == preferred).or(outputs.first());
    chosen.cloned().ok_or_else(|| EngineError::contract(path, "has no outputs"))
}

/// Checks element type and rank, naming the input and what was found.
pub(crate) fn expect(path: &Path, spec: &TensorSpec, allowed: &[TensorElementType], rank: usize) -> Result<()> {
    if !allowed.contains(&spec.element) {
        let allowed: Vec<String> = allowed.iter().map(|t| format!("{t:?}")).collect();
        return Err(EngineError::contract(
            path,
            format!(
                "`{}` has element type {:?}; the engine supports {}",
                spec.name,
                spec.element,
                allowed.join(" or ")
            ),
        ));
    }
    if spec.rank() != rank {
        return Err(EngineError::contract(
            path,
            format!("`{}` has rank {} (shape {:?}); expected rank {rank}", spec.name, spec.rank(), spec.shape),
        ));
    }
    Ok(())
}

/// A fixed batch dimension other than the one the pipeline needs cannot be fed.
pub(crate) fn expect_batch(path: &Path, spec: &TensorSpec, batch: usize) -> Result<()> {
    match spec.shape.first() {
        Some(&d) if d >= 0 && d as usize != batch => Err(EngineError::contract(
            path,
            format!(
                "`{}` has a fixed batch size {d} but the pipeline needs {batch}; export with a dynamic batch axis",
                spec.name
            ),
        )),
        _ => Ok(()),
    }
}
