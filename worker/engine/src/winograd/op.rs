//! `ai.rapid::WinogradConv` as an ONNX Runtime custom operator on the CPU execution provider.
//!
//! The weights are transformed once, when ONNX Runtime creates the node's kernel: the weight (and
//! bias) must be constant initializers, and a node whose weight is computed at run time fails the
//! session's creation with a message naming it, not the first image. Each call runs `cpu`'s three
//! stages on ONNX Runtime's own intra-op thread pool (`par_for`), as the attention operator does, so
//! the op uses exactly the session's threads.
//!
//! No shape inference, for the reason given in `crate::attention::op`: the output's shape is known
//! at run time.

use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::{DynTensorValueType, TensorElementType};

use super::cpu::{self, TransformedWeights, Workspace};
use super::{ConvShape, WinogradError, OP_NAME};

/// The operator's description for ONNX Runtime: input, weight and an optional bias, one output.
pub struct WinogradConvOp;

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
        Ok(WinogradConvKernel { weights, workspace: Workspace::default() })
    }
}

/// One node's kernel: its transformed weights, and the buffers its calls reuse.
pub struct WinogradConvKernel {
    weights: TransformedWeights,
    workspace: Workspace,
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
        cpu::convolve(input, &shape, &self.weights, out, &mut self.workspace, |items, item| {
            ctx.par_for(items, items, item)
        })
    }
}

fn to_ort(error: WinogradError) -> ort::Error {
    ort::Error::new(error.to_string())
}
