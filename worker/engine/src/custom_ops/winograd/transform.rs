//! The three linear maps of F(4×4, 3×3), for the interpolation points 0, ±1, ±2 and ∞ (Lavin &
//! Gray 2016, section 4.2). Rows are written out as sums rather than matrix products because most
//! entries are 0 or ±1, and each map runs on many values at once (the slices' elements are
//! independent lanes, which the compiler vectorises).

/// Bᵀ·x for one 6-vector.
///
/// ```text
/// Bᵀ = [ 4   0  -5   0   1   0 ]
///      [ 0  -4  -4   1   1   0 ]
///      [ 0   4  -4  -1   1   0 ]
///      [ 0  -2  -1   2   1   0 ]
///      [ 0   2  -1  -2   1   0 ]
///      [ 0   4   0  -5   0   1 ]
/// ```
#[inline(always)]
pub fn input_map([x0, x1, x2, x3, x4, x5]: [f32; 6]) -> [f32; 6] {
    [
        4.0 * x0 - 5.0 * x2 + x4,
        -4.0 * (x1 + x2) + x3 + x4,
        4.0 * (x1 - x2) - x3 + x4,
        2.0 * (x3 - x1) - x2 + x4,
        2.0 * (x1 - x3) - x2 + x4,
        4.0 * x1 - 5.0 * x3 + x5,
    ]
}

/// Aᵀ·m for one 6-vector.
///
/// ```text
/// Aᵀ = [ 1   1   1   1   1   0 ]
///      [ 0   1  -1   2  -2   0 ]
///      [ 0   1   1   4   4   0 ]
///      [ 0   1  -1   8  -8   1 ]
/// ```
#[inline(always)]
pub fn output_map([m0, m1, m2, m3, m4, m5]: [f32; 6]) -> [f32; 4] {
    let (sum12, diff12, sum34, diff34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [m0 + sum12 + sum34, diff12 + 2.0 * diff34, sum12 + 4.0 * sum34, diff12 + 8.0 * diff34 + m5]
}

/// `input_map` on many independent lanes: `out[i][l] = (Bᵀ·x[·][l])[i]`.
#[inline(always)]
pub fn input_lanes(x: [&[f32]; 6], out: [&mut [f32]; 6]) {
    let [o0, o1, o2, o3, o4, o5] = out;
    let lanes = o0.len();
    for l in 0..lanes {
        let y = input_map([x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]]);
        (o0[l], o1[l], o2[l], o3[l], o4[l], o5[l]) = (y[0], y[1], y[2], y[3], y[4], y[5]);
    }
}

/// `output_map` on many independent lanes: `out[i][l] = (Aᵀ·m[·][l])[i]`.
#[inline(always)]
pub fn output_lanes(m: [&[f32]; 6], out: [&mut [f32]; 4]) {
    let [o0, o1, o2, o3] = out;
    let lanes = o0.len();
    for l in 0..lanes {
        let y = output_map([m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]]);
        (o0[l], o1[l], o2[l], o3[l]) = (y[0], y[1], y[2], y[3]);
    }
}

/// G: the kernel transform, 3 taps to 6 points.
const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// G·g·Gᵀ for one 3×3 kernel, row-major 6×6, computed in f64 so that the transformed weights carry
/// no rounding beyond their final conversion to f32.
pub fn kernel(g: &[f32]) -> [f32; 36] {
    let mut left = [[0.0f64; 3]; 6]; // G·g
    for (i, row) in left.iter_mut().enumerate() {
        for (j, value) in row.iter_mut().enumerate() {
            *value = (0..3).map(|k| G[i][k] * f64::from(g[k * 3 + j])).sum();
        }
    }
    let mut out = [0.0f32; 36];
    for i in 0..6 {
        for j in 0..6 {
            out[i * 6 + j] = (0..3).map(|k| left[i][k] * G[j][k]).sum::<f64>() as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three maps must compose to a 1-D convolution: for a 6-sample signal d and a 3-tap
    /// kernel g, Aᵀ·((G·g) ⊙ (Bᵀ·d)) is the 4 outputs of the valid correlation of d with g.
    #[test]
    fn one_dimensional_f43_is_a_correlation() {
        let d = [0.3f32, -1.2, 2.5, 0.7, -0.4, 1.9];
        let g = [0.5f64, -0.25, 1.5];
        let transformed_d = input_map(d);
        let products: [f32; 6] = std::array::from_fn(|i| {
            let transformed_g: f64 = (0..3).map(|k| G[i][k] * g[k]).sum();
            (f64::from(transformed_d[i]) * transformed_g) as f32
        });
        for (i, got) in output_map(products).into_iter().enumerate() {
            let expected: f64 = (0..3).map(|k| f64::from(d[i + k]) * g[k]).sum();
            assert!((f64::from(got) - expected).abs() < 1e-5, "output {i}: {got} against {expected}");
        }
    }

    /// The 2-D kernel transform is G·g·Gᵀ: for a kernel that is an outer product a·bᵀ it must be
    /// (G·a)·(G·b)ᵀ.
    #[test]
    fn kernel_transform_is_separable() {
        let (a, b) = ([0.2f32, -1.0, 0.7], [1.5f32, 0.3, -0.6]);
        let g: Vec<f32> = (0..9).map(|i| a[i / 3] * b[i % 3]).collect();
        let ga: Vec<f64> = G.iter().map(|row| (0..3).map(|k| row[k] * f64::from(a[k])).sum()).collect();
        let gb: Vec<f64> = G.iter().map(|row| (0..3).map(|k| row[k] * f64::from(b[k])).sum()).collect();
        for (index, got) in kernel(&g).into_iter().enumerate() {
            let expected = ga[index / 6] * gb[index % 6];
            assert!((f64::from(got) - expected).abs() < 1e-6, "entry {index}: {got} against {expected}");
        }
    }
}
