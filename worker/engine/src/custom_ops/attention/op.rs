//! `ai.rapid::FlashAttention` as an ONNX Runtime custom operator on the CPU execution provider.
//!
//! The operator reads its attributes once, when ONNX Runtime creates the node's kernel (a missing
//! `num_heads` fails the session's creation, not the first image), and on every call splits the work
//! with `cpu::output_tiles` and hands the items to ONNX Runtime's own intra-op thread pool
//! (`par_for`), so the op uses exactly the threads the session was given and never competes with
//! them through a second pool.
//!
//! It declares no shape inference on purpose. Through the custom-op API a dimension ONNX Runtime
//! does not know comes back as −1 with the symbol "", and setting it on the output makes every such
//! dimension the *same* symbol: the memory planner then re-used a [2, 64, 128] buffer for a
//! [2, 256, 128] tensor on the tiny U-Net. Without inference the output shape is simply unknown
//! until run time, which is what the nodes after it need.

use std::sync::{Mutex, PoisonError};

use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

use super::{cpu, AttentionInputs, AttentionShape, OP_NAME};

/// The operator's description for ONNX Runtime: three float inputs, one float output.
pub struct FlashAttentionOp;

impl Operator for FlashAttentionOp {
    type Kernel<'attr> = FlashAttentionKernel;

    fn name(&self) -> &str {
        OP_NAME
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [const { OperatorInput::required(TensorElementType::Float32) }; 3]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, info: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let node = info.node_name().unwrap_or_default();
        let heads = info.get::<i64>("num_heads").ok_or_else(|| {
            ort::Error::new(format!(
                "{OP_NAME} node `{node}` has no `num_heads` attribute; rewrite the model again with \
                 deploy/export/fuse_attention.py"
            ))
        })?;
        Ok(FlashAttentionKernel { heads, scale: info.get::<f32>("scale") })
    }
}

/// One node's kernel: its attributes, read once.
pub struct FlashAttentionKernel {
    heads: i64,
    /// `None` means the contract's default, 1/√D, which depends on the input width.
    scale: Option<f32>,
}

impl Kernel for FlashAttentionKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize, name: &str| {
            ctx.input(i)?.ok_or_else(|| ort::Error::new(format!("{OP_NAME}: input `{name}` is missing")))
        };
        let (query, key, value) = (input(0, "query")?, input(1, "key")?, input(2, "value")?);
        let (query_shape, query) = query.try_extract_tensor::<f32>()?;
        let (key_shape, key) = key.try_extract_tensor::<f32>()?;
        let (value_shape, value) = value.try_extract_tensor::<f32>()?;
        let shape = AttentionShape::from_dims(query_shape, key_shape, value_shape, self.heads).map_err(to_ort)?;
        let scale = self.scale.unwrap_or_else(|| shape.default_scale());
        let inputs = AttentionInputs::new(query, key, value, shape, scale).map_err(to_ort)?;

        let output_dims = [shape.batch, shape.query_len, shape.heads * shape.value_head_dim];
        let mut output = ctx
            .output(0, output_dims.to_vec())?
            .ok_or_else(|| ort::Error::new(format!("{OP_NAME}: ONNX Runtime gave no output buffer")))?;
        let (_, out) = output.try_extract_tensor_mut::<f32>()?;
        // Each item writes its own rows; the mutexes only hand each slice to the one thread that
        // runs that item, so they are never contended.
        let tiles: Vec<Mutex<&mut [f32]>> = cpu::output_tiles(&inputs, out).into_iter().map(Mutex::new).collect();
        ctx.par_for(tiles.len(), tiles.len(), |item| {
            let mut tile = tiles[item].lock().unwrap_or_else(PoisonError::into_inner);
            cpu::attend_tile(&inputs, item, &mut tile);
        })
    }
}

fn to_ort(error: super::AttentionError) -> ort::Error {
    ort::Error::new(error.to_string())
}
