//! Stage 2's products with the weights packed once, at session creation, for one of two
//! register-blocked micro-kernels: AVX2 + FMA, or AVX-512F.
//!
//! Why not `matrixmultiply` here: it packs both operands on every call. At the U-Net's 16×16 level a
//! product is 32 tiles × C by C × K (C, K = 640–1920), so each packed weight is used by only 32 rows:
//! packing the 36 weight matrices again on every call (59–236 MB a node) costs as much memory
//! traffic as the arithmetic, and it ran at 57–73 GFLOP/s against 99 for the 128-row products of the
//! 32×32 level (AVX2 EPYC). Here each weight matrix is stored once in the micro-kernel's panel order,
//! so a call reads it exactly once, and only the small tile operand is packed.
//!
//! A micro-kernel computes a block of M (`rows` tiles × `cols` output channels) over the whole
//! channel depth, its accumulators in two vector registers per tile: per channel, 2 weight loads,
//! `rows` broadcasts and 2·`rows` FMAs. Rows and columns past the ends are zero-padded in the packed
//! operands and not stored.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{WinogradError, POINTS};

/// The environment variable that overrides which kernel runs the products (`KERNEL_CHOICES`), for
/// benchmarks that compare them and for ruling one out on a CPU where it misbehaves.
pub const KERNEL_VARIABLE: &str = "RAPID_WINOGRAD_KERNEL";
/// The values `KERNEL_VARIABLE` takes; `auto` (or unset) picks the widest kernel this CPU runs.
pub const KERNEL_CHOICES: &str = "auto, avx512, avx2, matrixmultiply";

/// One of the packed micro-kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// 6 tiles × 16 channels in 12 AVX registers.
    Avx2,
    /// 8 tiles × 32 channels in 16 AVX-512 registers: twice the block's width, and fewer tiles per
    /// block than 6 would leave idle at the 16×16 level (32 tiles at batch 2, a multiple of 8).
    Avx512,
}

/// The largest block any kernel writes: its scratch size.
const MAX_BLOCK: usize = Kernel::Avx512.rows() * Kernel::Avx512.cols();

impl Kernel {
    /// Tiles per block.
    const fn rows(self) -> usize {
        match self {
            Kernel::Avx2 => 6,
            Kernel::Avx512 => 8,
        }
    }

    /// Output channels per block: two vector registers.
    const fn cols(self) -> usize {
        match self {
            Kernel::Avx2 => 16,
            Kernel::Avx512 => 32,
        }
    }

    /// Whether this CPU has the instructions the kernel uses.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Kernel::Avx2 => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
                Kernel::Avx512 => std::is_x86_feature_detected!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The kernel for this process: `KERNEL_VARIABLE` if set, otherwise the widest this CPU runs;
    /// `None` means `matrixmultiply`.
    pub fn for_this_process() -> Result<Option<Kernel>, WinogradError> {
        let value = std::env::var(KERNEL_VARIABLE).ok();
        Self::choose(value.as_deref(), Kernel::available)
    }

    fn choose(value: Option<&str>, available: impl Fn(Kernel) -> bool) -> Result<Option<Kernel>, WinogradError> {
        let wanted = match value.map(str::trim).unwrap_or("auto") {
            "" | "auto" => return Ok([Kernel::Avx512, Kernel::Avx2].into_iter().find(|&kernel| available(kernel))),
            "matrixmultiply" => return Ok(None),
            "avx512" => Kernel::Avx512,
            "avx2" => Kernel::Avx2,
            other => {
                return Err(WinogradError::Kernel(format!(
                    "{KERNEL_VARIABLE}={other:?} names no kernel; use one of {KERNEL_CHOICES}, or unset it"
                )))
            }
        };
        if available(wanted) {
            Ok(Some(wanted))
        } else {
            Err(WinogradError::Kernel(format!(
                "{KERNEL_VARIABLE} asks for the {wanted:?} kernel, but this CPU lacks its instructions; \
                 unset it (auto picks what the CPU has) or use matrixmultiply"
            )))
        }
    }
}

/// U [36, C, K] in panel order: for each point r and each block of `cols` output channels, C rows of
/// `cols` values (zeros past K).
pub struct PackedWeights {
    kernel: Kernel,
    panels: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
}

impl PackedWeights {
    /// All zeros, for `store` to fill; the padding past K stays zero. `product` runs `kernel`'s
    /// instructions on these panels, so the CPU must have them.
    pub fn zeroed(kernel: Kernel, in_channels: usize, out_channels: usize) -> Self {
        assert!(kernel.available(), "the {kernel:?} kernel needs instructions this CPU lacks");
        let blocks = out_channels.div_ceil(kernel.cols());
        let panels = vec![0.0f32; POINTS * blocks * in_channels * kernel.cols()];
        Self { kernel, panels, in_channels, out_channels }
    }

    /// Stores U[r, c, k] for every point r.
    pub fn store(&mut self, c: usize, k: usize, values: &[f32; POINTS]) {
        debug_assert!(c < self.in_channels && k < self.out_channels, "U[·, {c}, {k}] is outside the weights");
        let cols = self.kernel.cols();
        let within_point = self.panel_start(0, k / cols) + c * cols + k % cols;
        let point_len = self.panel_start(1, 0);
        for (r, value) in values.iter().enumerate() {
            self.panels[r * point_len + within_point] = *value;
        }
    }

    fn panel(&self, r: usize, block: usize) -> &[f32] {
        &self.panels[self.panel_start(r, block)..][..self.in_channels * self.kernel.cols()]
    }

    /// Where the panel of point r and output-channel block `block` begins.
    fn panel_start(&self, r: usize, block: usize) -> usize {
        let cols = self.kernel.cols();
        (r * self.out_channels.div_ceil(cols) + block) * self.in_channels * cols
    }
}

/// M[p, r, k] = Σ_c V[p, r, c] · U[r, c, k] for every tile p < `tiles`, with V [tiles, 36, C] and M
/// [tiles, 36, K] as `super::cpu` lays them out.
///
/// # Safety
/// `products` must point to tiles·36·K writable values, and no other thread may touch M[·, r, ·]
/// meanwhile. (The CPU has the weights' kernel: `PackedWeights::zeroed` asserts it.)
pub unsafe fn product(r: usize, transformed_input: &[f32], tiles: usize, weights: &PackedWeights, products: *mut f32) {
    let (c_count, k_count) = (weights.in_channels, weights.out_channels);
    let (kernel, rows_per_block, cols_per_block) = (weights.kernel, weights.kernel.rows(), weights.kernel.cols());
    assert_eq!(transformed_input.len(), tiles * POINTS * c_count, "V does not match its shape");
    // The tile operand, packed as ⌈tiles/rows⌉ panels of C rows of `rows` values (zeros past the
    // last tile).
    let row_blocks = tiles.div_ceil(rows_per_block);
    let mut packed = vec![0.0f32; row_blocks * c_count * rows_per_block];
    for (block, panel) in packed.chunks_exact_mut(c_count * rows_per_block).enumerate() {
        for row in 0..rows_per_block.min(tiles - block * rows_per_block) {
            let source = &transformed_input[((block * rows_per_block + row) * POINTS + r) * c_count..][..c_count];
            for (c, value) in source.iter().enumerate() {
                panel[c * rows_per_block + row] = *value;
            }
        }
    }
    let mut edge = [0.0f32; MAX_BLOCK];
    for block in 0..k_count.div_ceil(cols_per_block) {
        let first_col = block * cols_per_block;
        let cols = cols_per_block.min(k_count - first_col);
        let weight_panel = weights.panel(r, block);
        for (row_block, tile_panel) in packed.chunks_exact(c_count * rows_per_block).enumerate() {
            let first_row = row_block * rows_per_block;
            let rows = rows_per_block.min(tiles - first_row);
            // SAFETY: the weights were packed for `kernel`, whose instructions this CPU has (asserted
            // in `PackedWeights::zeroed`); both panels hold C rows of the kernel's widths.
            unsafe {
                match kernel {
                    Kernel::Avx2 => avx2_6x16(tile_panel, weight_panel, c_count, &mut edge),
                    Kernel::Avx512 => avx512_8x32(tile_panel, weight_panel, c_count, &mut edge),
                }
            }
            for (row, values) in edge.chunks_exact(cols_per_block).take(rows).enumerate() {
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
fn avx2_6x16(tiles: &[f32], weights: &[f32], depth: usize, out: &mut [f32; MAX_BLOCK]) {
    const ROWS: usize = Kernel::Avx2.rows();
    const COLS: usize = Kernel::Avx2.cols();
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
        // SAFETY: row < 6, so both stores lie inside the first 96 values.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr().add(row * COLS), acc_row[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(row * COLS + 8), acc_row[1]);
        }
    }
}

/// out (8 × 32, row-major) = tiles (C × 8) ᵀ · weights (C × 32).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn avx512_8x32(tiles: &[f32], weights: &[f32], depth: usize, out: &mut [f32; MAX_BLOCK]) {
    const ROWS: usize = Kernel::Avx512.rows();
    const COLS: usize = Kernel::Avx512.cols();
    assert!(tiles.len() >= depth * ROWS && weights.len() >= depth * COLS);
    let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
    for c in 0..depth {
        // SAFETY: c < depth, so both reads lie inside the slices (asserted above).
        unsafe {
            let w = weights.as_ptr().add(c * COLS);
            let (w0, w1) = (_mm512_loadu_ps(w), _mm512_loadu_ps(w.add(16)));
            let t = tiles.as_ptr().add(c * ROWS);
            for (row, acc_row) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*t.add(row));
                acc_row[0] = _mm512_fmadd_ps(a, w0, acc_row[0]);
                acc_row[1] = _mm512_fmadd_ps(a, w1, acc_row[1]);
            }
        }
    }
    for (row, acc_row) in acc.iter().enumerate() {
        // SAFETY: row < 8, so both stores lie inside the 256 values.
        unsafe {
            _mm512_storeu_ps(out.as_mut_ptr().add(row * COLS), acc_row[0]);
            _mm512_storeu_ps(out.as_mut_ptr().add(row * COLS + 16), acc_row[1]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn avx2_6x16(_: &[f32], _: &[f32], _: usize, _: &mut [f32; MAX_BLOCK]) {
    unreachable!("no kernel is available off x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn avx512_8x32(_: &[f32], _: &[f32], _: usize, _: &mut [f32; MAX_BLOCK]) {
    unreachable!("no kernel is available off x86-64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_the_widest_kernel_the_cpu_has() {
        let all = |_: Kernel| true;
        let avx2_only = |kernel: Kernel| kernel == Kernel::Avx2;
        let none = |_: Kernel| false;
        assert_eq!(Kernel::choose(None, all).unwrap(), Some(Kernel::Avx512));
        assert_eq!(Kernel::choose(Some("auto"), avx2_only).unwrap(), Some(Kernel::Avx2));
        assert_eq!(Kernel::choose(None, none).unwrap(), None);
    }

    #[test]
    fn the_variable_names_a_kernel_or_fails_saying_what_to_do() {
        let avx2_only = |kernel: Kernel| kernel == Kernel::Avx2;
        assert_eq!(Kernel::choose(Some("avx2"), avx2_only).unwrap(), Some(Kernel::Avx2));
        assert_eq!(Kernel::choose(Some(" matrixmultiply "), avx2_only).unwrap(), None);
        let missing = Kernel::choose(Some("avx512"), avx2_only).unwrap_err().to_string();
        assert!(missing.contains("lacks its instructions") && missing.contains("unset it"), "{missing}");
        let unknown = Kernel::choose(Some("sse9"), avx2_only).unwrap_err().to_string();
        assert!(unknown.contains("\"sse9\"") && unknown.contains(KERNEL_CHOICES), "{unknown}");
    }
}
