//! The project's Winograd convolution operator, `ai.rapid::WinogradConv`, and its CPU kernel.
//!
//! Contract (what `deploy/export/winograd.py` writes into a U-Net graph in place of a `Conv`):
//!
//! ```text
//! ai.rapid::WinogradConv(input, weight, bias?) -> output       (domain version 1, float32 only)
//!   input  [N, C, H, W]    any H, W ≥ 1
//!   weight [K, C, 3, 3]    a constant initializer: the kernel transforms it once, when the session
//!                          is created
//!   bias   [K]             optional, constant
//!   output [N, K, H, W]    = Conv(input, weight, bias) with a 3×3 kernel, pads 1, strides 1,
//!                          dilations 1, group 1
//! ```
//!
//! Why: 3×3 convolutions are about 65% of an SD U-Net call's arithmetic (232 of 356 GFLOP on the
//! Table 6 model), and ONNX Runtime computes them directly (im2col or NCHWc, 9 multiplications per
//! output and input channel). Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016) computes each 4×4 output tile from a 6×6
//! input tile with 36 multiplications per channel pair instead of 144: 4× fewer. The price is
//! two linear transforms per tile (cheap, and linear in channels, not in channel pairs), weights
//! 4× larger once transformed, and rounding a few ulps larger than the direct form's. No crate
//! does this for ONNX Runtime, so it is written here.
//!
//! The algorithm, for P = N·⌈H/4⌉·⌈W/4⌉ tiles (`cpu`):
//! 1. input transform: each tile's 6×6 patch (zero outside the image) becomes Bᵀ·d·B, 36 values per
//!    channel, stored as V [P, 36, C];
//! 2. 36 independent products M[·, r, ·] = V[·, r, ·] · U[r] with U [36, C, K] the transformed
//!    weights G·g·Gᵀ: these are ordinary GEMMs of P × C by C × K, where the arithmetic goes;
//! 3. output transform: each tile's 36 values per output channel become Aᵀ·m·A, a 4×4 output
//!    block, cut at the image's edge, plus the bias.
//!
//! Only worth it where tiles are many and channels moderate: at the U-Net's 4×4 and 8×8 levels
//! the products are so thin that reading U (4× the weights) costs more than the arithmetic saved.
//! The rewrite therefore converts only convolutions whose feature map is at least `--min-size`
//! at the model's own latent size; this kernel is still correct at any size.

pub mod cpu;
pub mod op;
mod packed;
mod transform;

pub use packed::KERNEL_VARIABLE;

/// The operator's name in the `ai.rapid` domain, as the rewritten graphs spell it.
pub const OP_NAME: &str = "WinogradConv";

/// Output tile side: F(4×4, 3×3).
pub const TILE: usize = 4;
/// Input tile side, and the number of products (`POINTS` = 36).
pub const ALPHA: usize = TILE + 2;
pub const POINTS: usize = ALPHA * ALPHA;

/// The sizes of one convolution call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ConvShape {
    /// Checks the input's dimensions against the transformed weights' channels.
    pub fn from_input_dims(dims: &[i64], in_channels: usize, out_channels: usize) -> Result<Self, WinogradError> {
        let bad = |reason: String| WinogradError::BadInput { input: "input", reason };
        let [batch, channels, height, width] = match *dims {
            [a, b, c, d] => [a, b, c, d].map(|d| usize::try_from(d).unwrap_or(0)),
            _ => return Err(bad(format!("has shape {dims:?}; it must be [batch, channels, height, width]"))),
        };
        if channels != in_channels {
            return Err(bad(format!("has {channels} channels but the weight expects {in_channels}")));
        }
        Ok(Self { batch, in_channels, out_channels, height, width })
    }

    pub fn tile_rows(&self) -> usize {
        self.height.div_ceil(TILE)
    }

    pub fn tile_cols(&self) -> usize {
        self.width.div_ceil(TILE)
    }

    /// P: tiles over the whole batch.
    pub fn tiles(&self) -> usize {
        self.batch * self.tile_rows() * self.tile_cols()
    }

    pub fn input_elements(&self) -> usize {
        self.batch * self.in_channels * self.height * self.width
    }

    pub fn output_elements(&self) -> usize {
        self.batch * self.out_channels * self.height * self.width
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WinogradError {
    #[error(
        "WinogradConv `{input}` {reason}; the node must follow the contract in rapid_engine::custom_ops::winograd \
         (rewrite the model again with deploy/export/winograd.py)"
    )]
    BadInput { input: &'static str, reason: String },
    /// The product kernel asked for cannot run (`packed::KERNEL_VARIABLE`).
    #[error("WinogradConv: {0}")]
    Kernel(String),
}
