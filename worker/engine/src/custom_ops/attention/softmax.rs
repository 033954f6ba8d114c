//! The softmax pieces of the CPU kernel: row maximum, and `exp(x − max)` in place with its sum.
//!
//! Why not `f32::exp`: glibc's `expf` is scalar, and a 32×32-latent U-Net evaluates about 10⁸
//! exponentials per call in its self-attention (B·H·L² per layer at L = 1024); at a few ns each that
//! is a tenth of the U-Net's time, where ONNX Runtime's Softmax uses a vectorised polynomial. The
//! loops here are written so LLVM vectorises them (fixed-width lanes, no libm calls, rounding by the
//! 1.5·2²³ trick instead of `round`), and are compiled a second time for AVX2 and picked at run time,
//! because the workspace builds for baseline x86-64 (SSE2). Accuracy: Cephes' `expf` polynomial,
//! about 2 ulp, far inside the 1e-5 the tests ask for.

const LANES: usize = 8;

/// Largest value of a row (−∞ for an empty row).
pub(super) fn row_max(row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { row_max_avx2(row) };
    }
    row_max_portable(row)
}

/// Replaces every `x` of `row` by `exp(x − max)` and returns their sum. `max` must be at least the
/// row's maximum so that nothing overflows.
pub(super) fn exp_shifted_in_place(row: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { exp_shifted_avx2(row, max) };
    }
    exp_shifted_portable(row, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_max_avx2(row: &[f32]) -> f32 {
    row_max_portable(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn exp_shifted_avx2(row: &mut [f32], max: f32) -> f32 {
    exp_shifted_portable(row, max)
}

#[inline(always)]
fn row_max_portable(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = if x > *lane { x } else { *lane };
        }
    }
    tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

#[inline(always)]
fn exp_shifted_portable(row: &mut [f32], max: f32) -> f32 {
    let mut sums = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (sum, x) in sums.iter_mut().zip(chunk.iter_mut()) {
            *x = exp(*x - max);
            *sum += *x;
        }
    }
    let mut total = 0.0;
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        total += *x;
    }
    total + sums.iter().sum::<f32>()
}

/// `eˣ` for x ≤ 0 (larger inputs are clamped at 88), to about 2 ulp; inputs below −87.3 give
/// 2⁻¹²⁶ instead of a denormal or zero, which no softmax can tell apart.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·ln2 is exact in its high part (Cody–Waite reduction).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2ⁿ built from its bits: `shifted` and ROUND share an exponent, so their bit patterns differ by n.
    let n_bits = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    y * f32::from_bits(((n_bits + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_over_the_softmax_range() {
        let mut worst = 0.0f32;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let relative = (exp(x) - x.exp()).abs() / x.exp();
            worst = worst.max(relative);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }

    #[test]
    fn row_helpers_handle_lengths_off_the_lane_width() {
        for len in [1, 7, 8, 9, 77, 128, 1000] {
            let row: Vec<f32> = (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let max = row_max(&row);
            assert_eq!(max, row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            let mut shifted = row.clone();
            let sum = exp_shifted_in_place(&mut shifted, max);
            let expected: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
            for (got, want) in shifted.iter().zip(&expected) {
                assert!((got - want).abs() <= 1e-6 * want.max(1e-30), "{got} vs {want}");
            }
            assert!((sum - expected.iter().sum::<f32>()).abs() <= 1e-5 * sum);
        }
    }
}
