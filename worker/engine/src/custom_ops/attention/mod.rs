//! The project's fused attention operator, `ai.rapid::FlashAttention`, and its kernels.
//!
//! Contract (what `deploy/export/fuse_attention.py --fused rapid` writes into a U-Net graph):
//!
//! ```text
//! ai.rapid::FlashAttention(query, key, value) -> output      (domain version 1, float32 only)
//!   query  [B, Lq, H·D]    the projections as the Linear layers produce them, heads not split
//!   key    [B, Lk, H·D]
//!   value  [B, Lk, H·Dv]
//!   output [B, Lq, H·Dv]   heads merged, ready for the output projection
//!   num_heads: int, required          H
//!   scale:     float, optional        multiplies Q·Kᵀ; 1/√D when absent
//!   output[b, i, h·Dv + e] = Σ_j softmax_j(scale · Σ_d q[b, i, h·D + d] · k[b, j, h·D + d]) · v[b, j, h·Dv + e]
//! ```
//!
//! This is exactly the unpacked, unmasked form of ONNX Runtime's `com.microsoft.MultiHeadAttention`
//! (same inputs, same `num_heads` and `scale`), on purpose: the rewrite emits one node shape for
//! both fused variants, so the benchmark compares kernels and nothing else. The heads stay packed in
//! the last axis because that is the layout the projections write; the kernels address one head by
//! stride, so the graph needs no head-split reshapes or transposes around the op.
//!
//! `cpu` is the kernel every session gets (registered by `runtime::Runtime::session` through `op`);
//! `cuda` (cargo feature `cuda`) is the same algorithm for NVIDIA GPUs, compiled at run time with
//! NVRTC, checked against the CPU kernel by its tests. It is not wired into the CUDA execution
//! provider yet: sessions on CUDA run the CPU op for these nodes.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod op;
#[cfg(test)]
mod reference;
mod softmax;

/// The operator's name in the `ai.rapid` domain (`crate::custom_ops`), as the rewritten graphs
/// spell it.
pub const OP_NAME: &str = "FlashAttention";

/// The sizes of one attention call, read from its three inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub query_len: usize,
    pub key_len: usize,
    /// Per-head width of the query and key.
    pub head_dim: usize,
    /// Per-head width of the value and the output.
    pub value_head_dim: usize,
}

impl AttentionShape {
    /// Checks the inputs' dimensions against the contract above and splits the hidden axes by
    /// `heads`.
    pub fn from_dims(query: &[i64], key: &[i64], value: &[i64], heads: i64) -> Result<Self, AttentionError> {
        let bad = |input, reason: String| AttentionError::BadInput { input, reason };
        if heads < 1 {
            return Err(bad("num_heads", format!("is {heads}; it must be at least 1")));
        }
        let dims = |input, dims: &[i64]| -> Result<[usize; 3], AttentionError> {
            match *dims {
                [a, b, c] => Ok([a, b, c].map(|d| usize::try_from(d).unwrap_or(0))),
                _ => Err(bad(input, format!("has shape {dims:?}; it must be [batch, length, hidden]"))),
            }
        };
        let [batch, query_len, query_hidden] = dims("query", query)?;
        let [key_batch, key_len, key_hidden] = dims("key", key)?;
        let [value_batch, value_len, value_hidden] = dims("value", value)?;
        let heads = heads as usize;
        if key_batch != batch || value_batch != batch {
            return Err(bad("key", format!("batch sizes differ: query {query:?}, key {key:?}, value {value:?}")));
        }
        if value_len != key_len {
            return Err(bad("value", format!("has {value_len} positions but key has {key_len}")));
        }
        if key_hidden != query_hidden {
            return Err(bad("key", format!("width {key_hidden} differs from the query's {query_hidden}")));
        }
        for (input, hidden) in [("query", query_hidden), ("value", value_hidden)] {
            if hidden == 0 || hidden % heads != 0 {
                return Err(bad(input, format!("width {hidden} is not a positive multiple of num_heads {heads}")));
            }
        }
        Ok(Self {
            batch,
            heads,
            query_len,
            key_len,
            head_dim: query_hidden / heads,
            value_head_dim: value_hidden / heads,
        })
    }

    pub fn query_elements(&self) -> usize {
        self.batch * self.query_len * self.heads * self.head_dim
    }

    pub fn key_elements(&self) -> usize {
        self.batch * self.key_len * self.heads * self.head_dim
    }

    pub fn value_elements(&self) -> usize {
        self.batch * self.key_len * self.heads * self.value_head_dim
    }

    pub fn output_elements(&self) -> usize {
        self.batch * self.query_len * self.heads * self.value_head_dim
    }

    /// The scale the contract uses when the graph gives none.
    pub fn default_scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// One attention call: borrowed inputs in the contract's layout, their shape and the score scale.
#[derive(Debug, Clone, Copy)]
pub struct AttentionInputs<'a> {
    pub query: &'a [f32],
    pub key: &'a [f32],
    pub value: &'a [f32],
    pub shape: AttentionShape,
    pub scale: f32,
}

impl<'a> AttentionInputs<'a> {
    /// Checks that the slices hold exactly what `shape` says.
    pub fn new(
        query: &'a [f32],
        key: &'a [f32],
        value: &'a [f32],
        shape: AttentionShape,
        scale: f32,
    ) -> Result<Self, AttentionError> {
        for (input, len, expected) in [
            ("query", query.len(), shape.query_elements()),
            ("key", key.len(), shape.key_elements()),
            ("value", value.len(), shape.value_elements()),
        ] {
            if len != expected {
                return Err(AttentionError::BadInput {
                    input,
                    reason: format!("holds {len} values but its shape {shape:?} needs {expected}"),
                });
            }
        }
        if !scale.is_finite() {
            return Err(AttentionError::BadInput { input: "scale", reason: format!("is {scale}; it must be finite") });
        }
        Ok(Self { query, key, value, shape, scale })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttentionError {
    #[error(
        "FlashAttention `{input}` {reason}; the node must follow the contract in rapid_engine::custom_ops::attention \
         (rewrite the model again with deploy/export/fuse_attention.py)"
    )]
    BadInput { input: &'static str, reason: String },
}
