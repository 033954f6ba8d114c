//! `ai.rapid::WinogradConv` as an ONNX Runtime custom operator on the CPU execution provider.
//!
//! The weights are transformed once, when ONNX Runtime creates the node's kernel: the weight (and
//! bias) must be constant initializers, and a node whose weight is computed at run time fails the
//! session's creation with a message naming it, not the first image. Each call runs `cpu`'s three
//! stages on ONNX Runtime's own intra-op thread pool (`par_for`), as the attention operator does, so
//! the op uses exactly the session's threads.
//!
//! The scratch buffers (V and M, `cpu::Workspace`) belong to the operator, not to a node: one
//! registration serves one session (`crate::custom_ops::domain` is called per session), whose nodes
//! run one after another, so they take turns with one workspace sized for the largest node instead
//! of each keeping its own (about 0.26 GB over Table 6's 24 nodes at batch 2). A node that runs
//! while another holds the workspace (a parallel execution mode) gets a second one.
//!
//! No shape inference, for the reason given in `crate::custom_ops::attention::op`: the output's shape is known
//! at run time.

use std::sync::{Arc, Mutex, PoisonError};

use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::{DynTensorValueType, TensorElementType};

use super::cpu::{self, TransformedWeights, Workspace};
use super::{ConvShape, WinogradError, OP_NAME};

/// The operator's description for ONNX Runtime: input, weight and an optional bias, one output;
/// and the workspaces its nodes share.
#[derive(Default)]
pub struct WinogradConvOp {
    workspaces: Arc<WorkspacePool>,
}

/// Workspaces not in use; a call takes one (or makes one) and puts it back.
#[derive(Default)]
struct WorkspacePool(Mutex<Vec<Workspace>>);

impl WorkspacePool {
    fn take(&self) -> Workspace {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default()
    }

    fn give_back(&self, workspace: Workspace) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(workspace);
    }
}

impl Operator for WinogradConvOp {
    type Kernel<'attr> = WinogradConvKernel;

    fn name(&self) -> &str {
        OP_NAME
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::optional(TensorElementType::Float32),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, info: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let node = info.node_name().unwrap_or_default();
        let not_constant = |input: &str, error: ort::Error| {
            ort::Error::new(format!(
                "{OP_NAME} node `{node}`: its {input} must be a constant initializer ({error}); only \
                 convolutions with stored weights may be rewritten (deploy/export/winograd.py)"
            ))
        };
        let weight = info.constant_input::<DynTensorValueType>(1).map_err(|e| not_constant("weight", e))?;
        let (weight_dims, weight) = weight.try_extract_tensor::<f32>()?;
        let has_bias = info.inputs()?.len() > 2;
        let bias = if has_bias {
            Some(info.constant_input::<DynTensorValueType>(2).map_err(|e| not_constant("bias", e))?)
        } else {
            None
        };
        let bias = bias.as_ref().map(|b| b.try_extract_tensor::<f32>().map(|(_, data)| data)).transpose()?;
        let weights = TransformedWeights::new(weight, weight_dims, bias)
            .map_err(|e| ort::Error::new(format!("{OP_NAME} node `{node}`: {e}")))?;
        Ok(WinogradConvKernel { weights, workspaces: Arc::clone(&self.workspaces) })
    }
}

/// One node's kernel: its transformed weights, and the session's workspaces.
pub struct WinogradConvKernel {
    weights: TransformedWeights,
    workspaces: Arc<WorkspacePool>,
}

impl Kernel for WinogradConvKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = ctx.input(0)?.ok_or_else(|| ort::Error::new(format!("{OP_NAME}: input `input` is missing")))?;
        let (dims, input) = input.try_extract_tensor::<f32>()?;
        let shape = ConvShape::from_input_dims(dims, self.weights.in_channels(), self.weights.out_channels())
            .map_err(to_ort)?;
        let output_dims = [shape.batch, shape.out_channels, shape.height, shape.width];
        let mut output = ctx
            .output(0, output_dims.to_vec())?
            .ok_or_else(|| ort::Error::new(format!("{OP_NAME}: ONNX Runtime gave no output buffer")))?;
        let (_, out) = output.try_extract_tensor_mut::<f32>()?;
        let mut workspace = self.workspaces.take();
        let result = cpu::convolve(input, &shape, &self.weights, out, &mut workspace, |items, item| {
            ctx.par_for(items, items, item)
        });
        self.workspaces.give_back(workspace);
        result
    }
}

fn to_ort(error: WinogradError) -> ort::Error {
    ort::Error::new(error.to_string())
}
