//! Invisible watermark: the `dwtDctSvd` scheme of invisible-watermark 0.2.0 (PyPI,
//! `imwatermark/dwtDctSvd.py`), so that package's own decoder reads our payload.
//!
//! The design decision a newcomer will question: this is not a line-by-line port of the package's
//! encoder. That encoder edits a float copy of the image and leaves rounding and clipping to the
//! final u8 conversion, which flips bits in saturated areas (a white sky cannot get bluer). We embed
//! each 8×8 pixel block on its own, round it to u8 ourselves, and check the result with the
//! decoder's exact arithmetic (OpenCV's fixed-point BGR→YUV). A block that clipping or rounding
//! kept short of its nearest quantisation level aims further, then tries the level on the other
//! side, which moves its pixels the other way. Blocks are independent, so this costs a few 4×4 SVDs
//! per block (about 40 ms for 1024×1024 in release) and no second pass over the image.
//!
//! What the decoder computes (and so what we must hit), for an image of height H and width W:
//! U = OpenCV's `COLOR_BGR2YUV` U channel of the u8 pixels; LL = the Haar `dwt2` approximation band
//! of U (each coefficient is a 2×2 pixel sum / 2); LL is cut into 4×4 blocks (8×8 pixel blocks from
//! the top-left corner, ⌊H/8⌋ × ⌊W/8⌋ of them, row by row), block n votes for payload bit
//! n mod bits; a block votes 1 when s mod 36 > 18, s being the largest singular value of
//! `cv2.dct(block)`. `cv2.dct` is orthonormal, so s is also the largest singular value of the LL
//! block itself and we skip the DCT. A bit is 1 when the mean vote × 255 > 127. Payload bits are
//! read most significant bit first, as numpy's `unpackbits` does for the package's "bytes" type.

use image::RgbImage;
use nalgebra::{Matrix4, Vector4, SVD};

use super::MarkingError;

/// The longest payload [`embed`] accepts. Fewer bits leave more blocks voting for each one: 48
/// bits give a 256×256 image 21 votes a bit, enough to survive JPEG quality 90.
pub const MAX_PAYLOAD_BITS: usize = 48;

/// The package refuses images with fewer pixels than this (`r*c < 256*256` in `watermark.py`).
const MIN_PIXELS: u64 = 256 * 256;
/// Quantisation step of the largest singular value: the package's `scales=[0,36,0]` (U only).
const STEP: f64 = 36.0;
/// Pixels a side of the block that carries one vote: 4×4 LL coefficients, each from 2×2 pixels.
const BLOCK: usize = 8;
/// A block whose decoded singular value lies this far (of at most STEP / 4 = 9) from the nearest
/// decision boundary is good enough; below it we try the other quantisation level. 6 leaves room
/// for the rounding noise of JPEG re-encoding at quality 90.
const GOOD_MARGIN: f64 = 6.0;
/// Tries per quantisation level before the other level (and then the best try) is taken.
const ATTEMPTS_PER_LEVEL: usize = 4;
/// Iteration cap for the 4×4 SVD; it converges in a handful on any finite input.
const SVD_MAX_ITERATIONS: usize = 100;

/// OpenCV's fixed-point BGR→YUV coefficients (`color_yuv.simd.hpp`, 14 fractional bits). Using
/// OpenCV's exact integers, not the float BT.601 formula, is what lets us check every block
/// against the value the decoder will see; checked against `cv2.cvtColor` on all 2^24 colours.
const YUV_SHIFT: u32 = 14;
const R2Y: i32 = 4899;
const G2Y: i32 = 9617;
const B2Y: i32 = 1868;
const B2U: i32 = 8061;

/// What [`embed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatermarkOutcome {
    /// Every 8×8 block now carries one of the payload's `bits`.
    Embedded { bits: usize },
    /// The image is below the package's 256×256-pixel floor (or has fewer blocks than payload
    /// bits), and was left unchanged.
    SkippedTooSmall { width: u32, height: u32 },
}

/// Embeds `payload` (1 to 6 bytes) into `image`. Images under 65 536 pixels are left unchanged
/// and reported as [`WatermarkOutcome::SkippedTooSmall`], as the package's encoder refuses them.
pub fn embed(image: &mut RgbImage, payload: &[u8]) -> Result<WatermarkOutcome, MarkingError> {
    let bits = payload.len() * 8;
    if payload.is_empty() || bits > MAX_PAYLOAD_BITS {
        return Err(MarkingError::PayloadLength { len: payload.len(), max: MAX_PAYLOAD_BITS / 8 });
    }
    let (width, height) = image.dimensions();
    let grid = BlockGrid::of(image);
    if u64::from(width) * u64::from(height) < MIN_PIXELS || grid.count() < bits {
        return Ok(WatermarkOutcome::SkippedTooSmall { width, height });
    }
    for (n, (bx, by)) in grid.iter().enumerate() {
        let k = n % bits;
        let bit = (payload[k / 8] >> (7 - k % 8)) & 1 == 1;
        let block = read_block(image, bx, by);
        if let Some(marked) = embed_block(&block, bit) {
            write_block(image, bx, by, &marked);
        }
    }
    Ok(WatermarkOutcome::Embedded { bits })
}

/// Reads `bits` payload bits back the way the package's decoder does, packed most significant bit
/// first into ⌈bits / 8⌉ bytes. A bit no block voted for (the image has fewer 8×8 blocks than
/// `bits`) reads 0, as numpy's mean of no votes is NaN and NaN > 127 is false.
pub fn decode(image: &RgbImage, bits: usize) -> Vec<u8> {
    let mut ones = vec![0u32; bits];
    let mut votes = vec![0u32; bits];
    if bits > 0 {
        for (n, (bx, by)) in BlockGrid::of(image).iter().enumerate() {
            if let Some(s) = largest_singular_value(&ll_block(&read_block(image, bx, by))) {
                votes[n % bits] += 1;
                if s % STEP > STEP / 2.0 {
                    ones[n % bits] += 1;
                }
            }
        }
    }
    let mut bytes = vec![0u8; bits.div_ceil(8)];
    for (i, (&one, &all)) in ones.iter().zip(&votes).enumerate() {
        if f64::from(one) / f64::from(all) * 255.0 > 127.0 {
            bytes[i / 8] |= 0x80 >> (i % 8);
        }
    }
    bytes
}

/// The 8×8 pixel blocks the decoder reads, left to right then top to bottom.
struct BlockGrid {
    columns: usize,
    rows: usize,
}

impl BlockGrid {
    fn of(image: &RgbImage) -> Self {
        Self { columns: image.width() as usize / BLOCK, rows: image.height() as usize / BLOCK }
    }

    fn count(&self) -> usize {
        self.columns * self.rows
    }

    fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.rows).flat_map(move |by| (0..self.columns).map(move |bx| (bx, by)))
    }
}

/// One block's RGB pixels, row by row.
type Block = [[u8; 3]; BLOCK * BLOCK];

/// Moves the block's largest singular value onto a level that decodes as `bit`, returning the new
/// pixels, or `None` when the block's SVD did not converge (it is then left as it is).
fn embed_block(block: &Block, bit: bool) -> Option<Block> {
    let ll = ll_block(block);
    let svd = SVD::try_new_unordered(ll, true, true, f64::EPSILON, SVD_MAX_ITERATIONS)?;
    let top = svd.singular_values.imax();
    let s = svd.singular_values[top];
    let u: Vector4<f64> = svd.u?.column(top).into_owned();
    let v_t = svd.v_t?.row(top).into_owned();

    // Levels that decode as `bit` sit at STEP·k + offset (the package's `(s // 36 + 0.25 + 0.5·bit)·36`),
    // in the middle of their half of the step. The package always rounds down to its level; we take
    // the nearest one (moving s by at most STEP / 2) and, failing that, the one on the other side.
    let offset = if bit { 0.75 * STEP } else { 0.25 * STEP };
    let nearest = ((s - offset) / STEP).round() * STEP + offset;
    let other = if nearest > s { nearest - STEP } else { nearest + STEP };

    let mut best = (margin(s, bit), *block);
    'levels: for target in [nearest, other] {
        let mut aim = target;
        for _ in 0..ATTEMPTS_PER_LEVEL {
            // Changing only the largest singular value adds (aim − s)·u·vᵀ to the LL block.
            let candidate = apply_ll_change(block, &((aim - s) * u * v_t));
            let reached = largest_singular_value(&ll_block(&candidate))?;
            let achieved = margin(reached, bit);
            if achieved > best.0 {
                best = (achieved, candidate);
            }
            if best.0 >= GOOD_MARGIN {
                break 'levels;
            }
            // Clipping or rounding to whole U steps fell short (or overshot): aim past the level
            // by the difference, within one step of where the block started.
            aim = (aim + target - reached).clamp(s - STEP, s + STEP);
        }
    }
    Some(best.1)
}

/// How far the decoded value `s` lies inside the half of the step that decodes as `bit`:
/// at most STEP / 4, negative when it decodes as the other bit.
fn margin(s: f64, bit: bool) -> f64 {
    let r = s.rem_euclid(STEP);
    let half = STEP / 2.0;
    if bit {
        (r - half).min(STEP - r)
    } else {
        (half - r).min(r)
    }
}

/// Adds `change` to the block's LL coefficients by moving only U: the inverse Haar transform
/// spreads a coefficient change d over its 2×2 pixels as d / 2 each. U changes with blue alone
/// (ΔU = B2U·ΔB); green moves by −B2Y/G2Y·ΔB so luma stays put, and red is untouched, so V stays
/// put too: the mark lives in a colour difference the eye barely sees.
fn apply_ll_change(block: &Block, change: &Matrix4<f64>) -> Block {
    let scale = f64::from(1u32 << YUV_SHIFT);
    let blue_per_u = scale / f64::from(B2U);
    let green_per_blue = -f64::from(B2Y) / f64::from(G2Y);
    let mut out = *block;
    for (i, pixel) in out.iter_mut().enumerate() {
        let (y, x) = (i / BLOCK, i % BLOCK);
        let delta_b = change[(y / 2, x / 2)] / 2.0 * blue_per_u;
        let [_, g, b] = pixel;
        *g = (f64::from(*g) + green_per_blue * delta_b).round().clamp(0.0, 255.0) as u8;
        *b = (f64::from(*b) + delta_b).round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// The 4×4 Haar approximation coefficients of the block's U channel, as pywt's `dwt2` gives them.
fn ll_block(block: &Block) -> Matrix4<f64> {
    let mut u = [0i32; BLOCK * BLOCK];
    for (value, &[r, g, b]) in u.iter_mut().zip(block) {
        *value = opencv_u(r, g, b);
    }
    Matrix4::from_fn(|row, column| {
        let (y, x) = (2 * row, 2 * column);
        let sum = u[y * BLOCK + x] + u[y * BLOCK + x + 1] + u[(y + 1) * BLOCK + x] + u[(y + 1) * BLOCK + x + 1];
        f64::from(sum) / 2.0
    })
}

/// U as OpenCV's `cvtColor(COLOR_BGR2YUV)` computes it for u8 pixels, bit for bit. Its range is
/// 17..=239, so OpenCV's saturation to u8 never applies.
fn opencv_u(r: u8, g: u8, b: u8) -> i32 {
    let round = 1 << (YUV_SHIFT - 1);
    let y = (i32::from(r) * R2Y + i32::from(g) * G2Y + i32::from(b) * B2Y + round) >> YUV_SHIFT;
    ((i32::from(b) - y) * B2U + (128 << YUV_SHIFT) + round) >> YUV_SHIFT
}

fn largest_singular_value(ll: &Matrix4<f64>) -> Option<f64> {
    let svd = SVD::try_new_unordered(*ll, false, false, f64::EPSILON, SVD_MAX_ITERATIONS)?;
    Some(svd.singular_values.max())
}

fn read_block(image: &RgbImage, bx: usize, by: usize) -> Block {
    let width = image.width() as usize;
    let raw = image.as_raw();
    let mut block = [[0u8; 3]; BLOCK * BLOCK];
    for (row, chunk) in block.chunks_exact_mut(BLOCK).enumerate() {
        let start = ((by * BLOCK + row) * width + bx * BLOCK) * 3;
        for (pixel, rgb) in chunk.iter_mut().zip(raw[start..start + BLOCK * 3].chunks_exact(3)) {
            pixel.copy_from_slice(rgb);
        }
    }
    block
}

fn write_block(image: &mut RgbImage, bx: usize, by: usize, block: &Block) {
    let width = image.width() as usize;
    let raw: &mut [u8] = image;
    for (row, chunk) in block.chunks_exact(BLOCK).enumerate() {
        let start = ((by * BLOCK + row) * width + bx * BLOCK) * 3;
        for (rgb, pixel) in raw[start..start + BLOCK * 3].chunks_exact_mut(3).zip(chunk) {
            rgb.copy_from_slice(pixel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::opencv_u;

    #[test]
    fn u_matches_opencv_cvtcolor() {
        // (R, G, B) → U from `cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)` with opencv-python 4.11.
        let golden = [
            ([255, 255, 255], 128),
            ([0, 0, 0], 128),
            ([0, 0, 255], 239),
            ([255, 255, 0], 17),
            ([12, 200, 77], 102),
            ([201, 33, 140], 150),
            ([90, 150, 235], 174),
        ];
        for ([r, g, b], u) in golden {
            assert_eq!(opencv_u(r, g, b), u, "RGB {r} {g} {b}");
        }
    }
}
