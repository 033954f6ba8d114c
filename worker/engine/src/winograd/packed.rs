//! Stage 2's products on AVX2 + FMA with the weights packed once, at session creation.
//!
//! Why not `matrixmultiply` here: it packs both operands on every call. At the U-Net's 16×16 level a
//! product is 32 tiles × C by C × K (C, K = 640–1920), so each packed weight is used by only 32 rows:
//! packing the 36 weight matrices again on every call (59–236 MB a node) costs as much memory
//! traffic as the arithmetic, and it ran at 57–73 GFLOP/s against 99 for the 128-row products of the
//! 32×32 level. Here each weight matrix is stored once in the micro-kernel's panel order, so a call
//! reads it exactly once, and only the small tile operand is packed.
//!
//! The micro-kernel computes a 6 × 16 block of M (6 tiles, 16 output channels) over the whole
//! channel depth: 12 AVX accumulators, 2 weight loads and 6 broadcasts per channel, 12 FMAs. Rows
//! and columns past the ends are zero-padded in the packed operands and not stored.
//!
//! Used where the CPU has AVX2 and FMA but not AVX-512F: that is where it was measured; on AVX-512
//! machines `matrixmultiply`'s AVX-512 kernel (twice the width) stays in charge.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::POINTS;

/// Tiles per micro-kernel block.
const ROWS: usize = 6;
/// Output channels per micro-kernel block: two AVX registers.
const COLS: usize = 16;

/// Whether this CPU gets the packed kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && !std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// U [36, C, K] in panel order: for each point r and each block of 16 output channels, C rows of 16
/// values (zeros past K).
pub struct PackedWeights {
    panels: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
}

impl PackedWeights {
    pub fn new(u: &[f32], in_channels: usize, out_channels: usize) -> Self {
        assert_eq!(u.len(), POINTS * in_channels * out_channels, "U does not match its channels");
        let blocks = out_channels.div_ceil(COLS);
        let mut panels = vec![0.0f32; POINTS * blocks * in_channels * COLS];
        for r in 0..POINTS {
            for block in 0..blocks {
                let first = block * COLS;
                let width = COLS.min(out_channels - first);
                let panel = &mut panels[(r * blocks + block) * in_channels * COLS..][..in_channels * COLS];
                for c in 0..in_channels {
                    let row = &u[(r * in_channels + c) * out_channels + first..][..width];
                    panel[c * COLS..][..width].copy_from_slice(row);
                }
            }
        }
        Self { panels, in_channels, out_channels }
    }

    fn panel(&self, r: usize, block: usize) -> &[f32] {
        let blocks = self.out_channels.div_ceil(COLS);
        &self.panels[(r * blocks + block) * self.in_channels * COLS..][..self.in_channels * COLS]
    }
}

/// M[p, r, k] = Σ_c V[p, r, c] · U[r, c, k] for every tile p < `tiles`, with V [tiles, 36, C] and M
/// [tiles, 36, K] as `super::cpu` lays them out.
///
/// # Safety
/// `available()` must be true; `products` must point to tiles·36·K writable values, and no other
/// thread may touch M[·, r, ·] meanwhile.
pub unsafe fn product(r: usize, transformed_input: &[f32], tiles: usize, weights: &PackedWeights, products: *mut f32) {
    let (c_count, k_count) = (weights.in_channels, weights.out_channels);
    assert_eq!(transformed_input.len(), tiles * POINTS * c_count, "V does not match its shape");
    // The tile operand, packed as ⌈tiles/6⌉ panels of C rows of 6 values (zeros past the last tile).
    let row_blocks = tiles.div_ceil(ROWS);
    let mut packed = vec![0.0f32; row_blocks * c_count * ROWS];
    for (block, panel) in packed.chunks_exact_mut(c_count * ROWS).enumerate() {
        for row in 0..ROWS.min(tiles - block * ROWS) {
            let source = &transformed_input[((block * ROWS + row) * POINTS + r) * c_count..][..c_count];
            for (c, value) in source.iter().enumerate() {
                panel[c * ROWS + row] = *value;
            }
        }
    }
    let mut edge = [0.0f32; ROWS * COLS];
    for block in 0..k_count.div_ceil(COLS) {
        let first_col = block * COLS;
        let cols = COLS.min(k_count - first_col);
        let weight_panel = weights.panel(r, block);
        for (row_block, tile_panel) in packed.chunks_exact(c_count * ROWS).enumerate() {
            let first_row = row_block * ROWS;
            let rows = ROWS.min(tiles - first_row);
            // SAFETY: the caller checked the CPU; both panels hold C rows of their width.
            unsafe { micro_kernel(tile_panel, weight_panel, c_count, &mut edge) };
            for (row, values) in edge.chunks_exact(COLS).take(rows).enumerate() {
                // SAFETY: tile first_row + row < tiles and first_col + cols ≤ K, inside M, which the
                // caller lets this call write at point r.
                unsafe {
                    let out = products.add(((first_row + row) * POINTS + r) * k_count + first_col);
                    std::ptr::copy_nonoverlapping(values.as_ptr(), out, cols);
                }
            }
        }
    }
}

/// out (6 × 16, row-major) = tiles (C × 6) ᵀ · weights (C × 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn micro_kernel(tiles: &[f32], weights: &[f32], depth: usize, out: &mut [f32; ROWS * COLS]) {
    assert!(tiles.len() >= depth * ROWS && weights.len() >= depth * COLS);
    let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
    for c in 0..depth {
        // SAFETY: c < depth, so both reads lie inside the slices (asserted above).
        unsafe {
            let w = weights.as_ptr().add(c * COLS);
            let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
            let t = tiles.as_ptr().add(c * ROWS);
            for (row, acc_row) in acc.iter_mut().enumerate() {
                let a = _mm256_broadcast_ss(&*t.add(row));
                acc_row[0] = _mm256_fmadd_ps(a, w0, acc_row[0]);
                acc_row[1] = _mm256_fmadd_ps(a, w1, acc_row[1]);
            }
        }
    }
    for (row, acc_row) in acc.iter().enumerate() {
        // SAFETY: row < 6, so both stores lie inside the 96-value array.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr().add(row * COLS), acc_row[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(row * COLS + 8), acc_row[1]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn micro_kernel(_: &[f32], _: &[f32], _: usize, _: &mut [f32; ROWS * COLS]) {
    unreachable!("available() is false off x86-64")
}
