//! The CPU kernel of `ai.rapid::WinogradConv`: three stages, each split into independent work
//! items that `convolve`'s caller runs on whatever threads it has (`op` uses ONNX Runtime's intra-op
//! pool; the tests run them one after another).
//!
//! Layouts, chosen so that every stage reads and writes long contiguous runs:
//! - V [P, 36, C]: tile-major, so one tile row of the image is one contiguous chunk that stage 1
//!   writes alone;
//! - U [36, C, K]: the transformed weights, one C × K matrix per point;
//! - M [P, 36, K]: the products, so stage 3 finds a tile's 36 values per channel within 36·K floats.
//!
//! Stage 2's products read V[·, r, ·] and write M[·, r, ·] with a row stride of 36·C and 36·K.
//! On x86-64 with AVX2 + FMA or AVX-512 they run in `packed`'s kernels over weights packed at
//! session creation; elsewhere (or by `packed::KERNEL_VARIABLE`) in `matrixmultiply`, which takes
//! arbitrary strides and packs its operands anyway, so the interleaving costs nothing there.

use std::sync::{Mutex, PoisonError};

use super::packed::{self, Kernel, PackedWeights};
use super::transform::{input_lanes, kernel, output_lanes};
use super::{ConvShape, WinogradError, ALPHA, POINTS, TILE};

/// Channels transformed together in stage 1: the lanes of its row pass.
const INPUT_LANES: usize = 16;
/// Output channels per stage 3 work item, and the lanes of its transforms.
const OUTPUT_LANES: usize = 32;

/// One node's weights, transformed once: U [36, C, K], and the bias (zeros when the node has none).
pub struct TransformedWeights {
    in_channels: usize,
    out_channels: usize,
    u: Products,
    bias: Vec<f32>,
}

/// U as stage 2's kernel reads it.
enum Products {
    /// Row-major [36, C, K], for `matrixmultiply`.
    Plain(Vec<f32>),
    /// In the panel order of `packed`'s kernel.
    Packed(PackedWeights),
}

impl TransformedWeights {
    /// Transforms a [K, C, 3, 3] weight and checks the optional [K] bias against it; U is packed for
    /// the process's `packed` kernel, if it has one.
    pub fn new(weight: &[f32], weight_dims: &[i64], bias: Option<&[f32]>) -> Result<Self, WinogradError> {
        Self::build(weight, weight_dims, bias, Kernel::for_this_process()?)
    }

    fn build(
        weight: &[f32],
        weight_dims: &[i64],
        bias: Option<&[f32]>,
        pack: Option<Kernel>,
    ) -> Result<Self, WinogradError> {
        let bad = |input, reason: String| WinogradError::BadInput { input, reason };
        let [out_channels, in_channels] = match *weight_dims {
            [k, c, 3, 3] if k > 0 && c > 0 => [k, c].map(|d| d as usize),
            _ => return Err(bad("weight", format!("has shape {weight_dims:?}; it must be [K, C, 3, 3]"))),
        };
        if weight.len() != out_channels * in_channels * 9 {
            return Err(bad("weight", format!("holds {} values for shape {weight_dims:?}", weight.len())));
        }
        let bias = match bias {
            Some(bias) if bias.len() != out_channels => {
                return Err(bad(
                    "bias",
                    format!("holds {} values but the weight has {out_channels} outputs", bias.len()),
                ))
            }
            Some(bias) => bias.to_vec(),
            None => vec![0.0; out_channels],
        };
        let u = match pack {
            Some(kernel) => {
                let mut packed = PackedWeights::zeroed(kernel, in_channels, out_channels);
                transform_weights(weight, in_channels, out_channels, |c, k, values| packed.store(c, k, &values));
                Products::Packed(packed)
            }
            None => {
                let mut u = vec![0.0f32; POINTS * in_channels * out_channels];
                transform_weights(weight, in_channels, out_channels, |c, k, values| {
                    for (r, value) in values.into_iter().enumerate() {
                        u[(r * in_channels + c) * out_channels + k] = value;
                    }
                });
                Products::Plain(u)
            }
        };
        Ok(Self { in_channels, out_channels, u, bias })
    }

    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels
    }
}

/// Calls `store(c, k, U[·, c, k])` with the 36 transformed values of every weight [k, c, ·, ·],
/// input channel outermost: either layout of U then receives its values along its rows, instead of
/// one value per cache line (output channel outermost), which made a 1280-channel node take
/// seconds to load.
fn transform_weights(
    weight: &[f32],
    in_channels: usize,
    out_channels: usize,
    mut store: impl FnMut(usize, usize, [f32; POINTS]),
) {
    for c in 0..in_channels {
        for k in 0..out_channels {
            store(c, k, kernel(&weight[(k * in_channels + c) * 9..][..9]));
        }
    }
}

/// The intermediate buffers V and M, kept between calls (`op` shares them among a session's nodes)
/// so that the steady state allocates nothing.
#[derive(Default)]
pub struct Workspace {
    transformed_input: Vec<f32>,
    products: Vec<f32>,
}

/// Runs `items` independent work items; `run(items, item)` must call `item(i)` exactly once for
/// every `i < items`, on any threads, and return when all are done.
pub trait Runner<E>: Fn(usize, &(dyn Fn(usize) + Sync + Send)) -> Result<(), E> {}
impl<E, F: Fn(usize, &(dyn Fn(usize) + Sync + Send)) -> Result<(), E>> Runner<E> for F {}

/// Runs every work item on the calling thread.
pub fn sequential(items: usize, item: &(dyn Fn(usize) + Sync + Send)) -> Result<(), WinogradError> {
    (0..items).for_each(item);
    Ok(())
}

/// output = Conv(input, weight, bias) with a 3×3 kernel, pads 1, strides 1 (the contract in
/// `super`), into `output`, which must hold `shape.output_elements()` values.
pub fn convolve<E>(
    input: &[f32],
    shape: &ConvShape,
    weights: &TransformedWeights,
    output: &mut [f32],
    workspace: &mut Workspace,
    run: impl Runner<E>,
) -> Result<(), E> {
    assert_eq!(input.len(), shape.input_elements(), "input does not match {shape:?}");
    assert_eq!(output.len(), shape.output_elements(), "output does not match {shape:?}");
    assert_eq!(
        (shape.in_channels, shape.out_channels),
        (weights.in_channels, weights.out_channels),
        "weights do not match {shape:?}"
    );
    if output.is_empty() {
        return Ok(());
    }
    let tiles = shape.tiles();
    let (c, k) = (shape.in_channels, shape.out_channels);
    workspace.transformed_input.resize(tiles * POINTS * c, 0.0);
    workspace.products.resize(tiles * POINTS * k, 0.0);

    // Stage 1: one item per tile row of one image, each writing its own chunk of V.
    let rows: Vec<Mutex<&mut [f32]>> =
        workspace.transformed_input.chunks_mut(shape.tile_cols() * POINTS * c).map(Mutex::new).collect();
    run(rows.len(), &|item| {
        let mut chunk = rows[item].lock().unwrap_or_else(PoisonError::into_inner);
        transform_input_row(input, shape, item, &mut chunk);
    })?;
    drop(rows);

    // Stage 2: the 36 products.
    let products = SharedOutput(workspace.products.as_mut_ptr());
    let transformed_input = &workspace.transformed_input;
    run(POINTS, &|r| match &weights.u {
        // SAFETY: M holds tiles·36·K values (resized above) and item r alone writes M[·, r, ·].
        Products::Packed(packed) => unsafe { packed::product(r, transformed_input, tiles, packed, products.at(0)) },
        // SAFETY: V and U hold tiles·36·C and 36·C·K values (resized above and built in
        // `TransformedWeights::build`), and M tiles·36·K; product r reads V[·, r, ·] and U[r] and
        // writes only M[·, r, ·], which no other item touches, so concurrent items never alias a
        // written element.
        Products::Plain(u) => unsafe {
            matrixmultiply::sgemm(
                tiles,
                c,
                k,
                1.0,
                transformed_input.as_ptr().add(r * c),
                (POINTS * c) as isize,
                1,
                u.as_ptr().add(r * c * k),
                k as isize,
                1,
                0.0,
                products.at(r * k),
                (POINTS * k) as isize,
                1,
            );
        },
    })?;

    // Stage 3: one item per image and block of output channels, each writing its own chunk.
    let plane = shape.height * shape.width;
    let blocks: Vec<Mutex<&mut [f32]>> =
        output.chunks_mut(k * plane).flat_map(|image| image.chunks_mut(OUTPUT_LANES * plane)).map(Mutex::new).collect();
    let blocks_per_image = k.div_ceil(OUTPUT_LANES);
    let products = &workspace.products;
    run(blocks.len(), &|item| {
        let mut chunk = blocks[item].lock().unwrap_or_else(PoisonError::into_inner);
        let (image, first_channel) = (item / blocks_per_image, item % blocks_per_image * OUTPUT_LANES);
        transform_output_block(products, shape, &weights.bias, image, first_channel, &mut chunk);
    })
}

/// A pointer into M shared by stage 2's items; see the SAFETY note there.
struct SharedOutput(*mut f32);

impl SharedOutput {
    /// # Safety
    /// `offset` must lie within the buffer the pointer came from.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(offset) }
    }
}
// SAFETY: the items write disjoint elements (stage 2), and `convolve` outlives them.
unsafe impl Sync for SharedOutput {}
unsafe impl Send for SharedOutput {}

/// Stage 1 for tile row `item` (image item / tile_rows, row item % tile_rows): writes
/// V[p, ·, ·] for the row's tiles into `out` ([tile_cols, 36, C]).
fn transform_input_row(input: &[f32], shape: &ConvShape, item: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature the function is compiled for.
        return unsafe { transform_input_row_avx2(input, shape, item, out) };
    }
    transform_input_row_lanes(input, shape, item, out)
}

/// `transform_input_row` compiled for AVX2's 8 lanes; see `transform_output_block_avx2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transform_input_row_avx2(input: &[f32], shape: &ConvShape, item: usize, out: &mut [f32]) {
    transform_input_row_lanes(input, shape, item, out)
}

#[inline(always)]
fn transform_input_row_lanes(input: &[f32], shape: &ConvShape, item: usize, out: &mut [f32]) {
    let (c_count, height, width) = (shape.in_channels, shape.height, shape.width);
    let tile_cols = shape.tile_cols();
    let (image, tile_row) = (item / shape.tile_rows(), item % shape.tile_rows());
    // Columns −1 ..= 4·tile_cols of the image, zero outside it.
    let padded = tile_cols * TILE + 2;
    let mut rows = vec![0.0f32; ALPHA * padded];
    // Per lane (channel of the block): the six rows after the column pass, Bᵀ·d.
    let mut columns = vec![0.0f32; INPUT_LANES * ALPHA * padded];
    let mut gathered = [[0.0f32; INPUT_LANES]; ALPHA];
    let mut transformed = [[0.0f32; INPUT_LANES]; ALPHA];

    for first in (0..c_count).step_by(INPUT_LANES) {
        let lanes = INPUT_LANES.min(c_count - first);
        for lane in 0..lanes {
            let channel = &input[((image * c_count) + first + lane) * height * width..][..height * width];
            rows.fill(0.0);
            for (i, row) in rows.chunks_exact_mut(padded).enumerate() {
                let y = (tile_row * TILE + i).wrapping_sub(1);
                if y < height {
                    row[1..1 + width].copy_from_slice(&channel[y * width..][..width]);
                }
            }
            let source: [&[f32]; ALPHA] = std::array::from_fn(|i| &rows[i * padded..][..padded]);
            let lane_columns = &mut columns[lane * ALPHA * padded..][..ALPHA * padded];
            let [c0, c1, c2, c3, c4, c5] = split6(lane_columns, padded);
            input_lanes(source, [c0, c1, c2, c3, c4, c5]);
        }
        for tile_col in 0..tile_cols {
            let tile = &mut out[tile_col * POINTS * c_count..][..POINTS * c_count];
            for i in 0..ALPHA {
                for (j, gathered_j) in gathered.iter_mut().enumerate() {
                    for (lane, value) in gathered_j[..lanes].iter_mut().enumerate() {
                        *value = columns[(lane * ALPHA + i) * padded + tile_col * TILE + j];
                    }
                }
                let [t0, t1, t2, t3, t4, t5] = &mut transformed;
                input_lanes(
                    gathered.each_ref().map(|g| &g[..lanes]),
                    [t0, t1, t2, t3, t4, t5].map(|t| &mut t[..lanes]),
                );
                for (j, values) in transformed.iter().enumerate() {
                    tile[(i * ALPHA + j) * c_count + first..][..lanes].copy_from_slice(&values[..lanes]);
                }
            }
        }
    }
}

/// Stage 3 for output channels `first_channel..` of `image`: writes their planes into `out`
/// ([lanes, H, W]).
fn transform_output_block(
    products: &[f32],
    shape: &ConvShape,
    bias: &[f32],
    image: usize,
    first_channel: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature the function is compiled for.
        return unsafe { transform_output_block_avx2(products, shape, bias, image, first_channel, out) };
    }
    transform_output_block_lanes(products, shape, bias, image, first_channel, out)
}

/// `transform_output_block` compiled for AVX2. The transforms are lane-wise arithmetic that the
/// compiler vectorises, but the build targets baseline x86-64 (SSE2, 4 lanes); this copy of the same
/// body, picked at run time, uses 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transform_output_block_avx2(
    products: &[f32],
    shape: &ConvShape,
    bias: &[f32],
    image: usize,
    first_channel: usize,
    out: &mut [f32],
) {
    transform_output_block_lanes(products, shape, bias, image, first_channel, out)
}

#[inline(always)]
fn transform_output_block_lanes(
    products: &[f32],
    shape: &ConvShape,
    bias: &[f32],
    image: usize,
    first_channel: usize,
    out: &mut [f32],
) {
    let (k_count, height, width) = (shape.out_channels, shape.height, shape.width);
    let (tile_rows, tile_cols) = (shape.tile_rows(), shape.tile_cols());
    let lanes = OUTPUT_LANES.min(k_count - first_channel);
    let bias = &bias[first_channel..][..lanes];
    let mut rows_done = [[[0.0f32; OUTPUT_LANES]; ALPHA]; TILE]; // Aᵀ·m: [4][6][lanes]
    let mut block = [[[0.0f32; OUTPUT_LANES]; TILE]; TILE]; // Aᵀ·m·A: [4][4][lanes]

    for tile_row in 0..tile_rows {
        for tile_col in 0..tile_cols {
            let tile = ((image * tile_rows) + tile_row) * tile_cols + tile_col;
            let m = |r: usize| &products[(tile * POINTS + r) * k_count + first_channel..][..lanes];
            for j in 0..ALPHA {
                let [a0, a1, a2, a3] = &mut rows_done;
                output_lanes(
                    std::array::from_fn(|i| m(i * ALPHA + j)),
                    [&mut a0[j][..lanes], &mut a1[j][..lanes], &mut a2[j][..lanes], &mut a3[j][..lanes]],
                );
            }
            for (a, row) in rows_done.iter().enumerate() {
                let [b0, b1, b2, b3] = &mut block[a];
                output_lanes(
                    row.each_ref().map(|r| &r[..lanes]),
                    [&mut b0[..lanes], &mut b1[..lanes], &mut b2[..lanes], &mut b3[..lanes]],
                );
            }
            let (y0, x0) = (tile_row * TILE, tile_col * TILE);
            let (rows, cols) = (TILE.min(height - y0), TILE.min(width - x0));
            for (lane, plane) in out.chunks_exact_mut(height * width).enumerate().take(lanes) {
                for a in 0..rows {
                    let line = &mut plane[(y0 + a) * width + x0..][..cols];
                    for (b, value) in line.iter_mut().enumerate() {
                        *value = block[a][b][lane] + bias[lane];
                    }
                }
            }
        }
    }
}

/// Six consecutive rows of `len` values.
fn split6(buffer: &mut [f32], len: usize) -> [&mut [f32]; 6] {
    let (c0, rest) = buffer.split_at_mut(len);
    let (c1, rest) = rest.split_at_mut(len);
    let (c2, rest) = rest.split_at_mut(len);
    let (c3, rest) = rest.split_at_mut(len);
    let (c4, rest) = rest.split_at_mut(len);
    [c0, c1, c2, c3, c4, &mut rest[..len]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The definition: a direct 3×3 correlation with zero padding 1, in f64.
    fn direct(input: &[f32], weight: &[f32], bias: &[f32], s: &ConvShape) -> Vec<f32> {
        let (c_count, k_count, h, w) = (s.in_channels, s.out_channels, s.height, s.width);
        let mut out = vec![0.0f32; s.output_elements()];
        for n in 0..s.batch {
            for k in 0..k_count {
                for y in 0..h {
                    for x in 0..w {
                        let mut sum = f64::from(bias[k]);
                        for c in 0..c_count {
                            for dy in 0..3 {
                                for dx in 0..3 {
                                    let (iy, ix) = ((y + dy).wrapping_sub(1), (x + dx).wrapping_sub(1));
                                    if iy < h && ix < w {
                                        let value = input[((n * c_count + c) * h + iy) * w + ix];
                                        sum +=
                                            f64::from(value) * f64::from(weight[((k * c_count + c) * 3 + dy) * 3 + dx]);
                                    }
                                }
                            }
                        }
                        out[((n * k_count + k) * h + y) * w + x] = sum as f32;
                    }
                }
            }
        }
        out
    }

    fn random(len: usize, rng: &mut impl Rng) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// Sizes on and off the 4-pixel tiles, channel counts on and off both stages' lane blocks,
    /// and a batch of several images.
    #[test]
    fn matches_a_direct_convolution() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (batch, c, k, h, w) in [
            (1, 1, 1, 1, 1),
            (2, 3, 5, 4, 4),
            (1, 17, 33, 9, 7),
            (3, 16, 32, 8, 13),
            (2, 40, 70, 16, 16),
            (1, 5, 3, 2, 11),
        ] {
            let shape = ConvShape { batch, in_channels: c, out_channels: k, height: h, width: w };
            let input = random(shape.input_elements(), &mut rng);
            let weight = random(k * c * 9, &mut rng);
            let bias = random(k, &mut rng);
            let expected = direct(&input, &weight, &bias, &shape);
            let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // Every stage 2 kernel this CPU runs (None: `matrixmultiply`).
            let kernels = [None, Some(Kernel::Avx2), Some(Kernel::Avx512)];
            for pack in kernels.into_iter().filter(|pack| pack.is_none_or(Kernel::available)) {
                let dims = [k as i64, c as i64, 3, 3];
                let weights = TransformedWeights::build(&weight, &dims, Some(&bias), pack).unwrap();
                let mut got = vec![f32::NAN; shape.output_elements()];
                let mut workspace = Workspace::default();
                // Twice through one workspace: the second call must not depend on the first's leftovers.
                for _ in 0..2 {
                    convolve(&input, &shape, &weights, &mut got, &mut workspace, sequential).unwrap();
                }
                let worst = got.iter().zip(&expected).fold(0.0f32, |m, (g, e)| m.max((g - e).abs()));
                assert!(
                    worst <= 1e-5 * scale.max(1.0),
                    "{shape:?}, kernel {pack:?}: max abs error {worst} at scale {scale}"
                );
            }
        }
    }

    #[test]
    fn no_bias_means_zero_bias() {
        let shape = ConvShape { batch: 1, in_channels: 2, out_channels: 3, height: 5, width: 6 };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let (input, weight) = (random(shape.input_elements(), &mut rng), random(3 * 2 * 9, &mut rng));
        let weights = TransformedWeights::new(&weight, &[3, 2, 3, 3], None).unwrap();
        let mut got = vec![0.0f32; shape.output_elements()];
        convolve(&input, &shape, &weights, &mut got, &mut Workspace::default(), sequential).unwrap();
        let expected = direct(&input, &weight, &[0.0; 3], &shape);
        let worst = got.iter().zip(&expected).fold(0.0f32, |m, (g, e)| m.max((g - e).abs()));
        assert!(worst < 1e-5, "max abs error {worst}");
    }

    #[test]
    fn refuses_weights_that_are_not_3x3_or_a_bias_of_the_wrong_size() {
        let message = |r: Result<TransformedWeights, WinogradError>| r.err().expect("must be refused").to_string();
        let weight = vec![0.0f32; 4 * 2 * 9];
        assert!(message(TransformedWeights::new(&weight, &[4, 2, 1, 9], None)).contains("[K, C, 3, 3]"));
        assert!(message(TransformedWeights::new(&weight, &[4, 2, 3, 3], Some(&[0.0; 3]))).contains("bias"));
        let shape = ConvShape::from_input_dims(&[1, 3, 8, 8], 2, 4);
        assert!(shape.unwrap_err().to_string().contains("3 channels but the weight expects 2"));
    }
}
