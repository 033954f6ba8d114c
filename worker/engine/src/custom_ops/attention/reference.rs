//! The textbook attention the kernels are tested against: the full score matrix, softmax, then the
//! product with V, in f64 so that the reference's own rounding does not hide a kernel's error.

use super::AttentionInputs;

pub(crate) fn naive_attention(inputs: &AttentionInputs) -> Vec<f32> {
    let s = inputs.shape;
    let (hd, hdv) = (s.heads * s.head_dim, s.heads * s.value_head_dim);
    let mut out = vec![0.0f32; s.output_elements()];
    for b in 0..s.batch {
        for h in 0..s.heads {
            for i in 0..s.query_len {
                let q = &inputs.query[(b * s.query_len + i) * hd + h * s.head_dim..][..s.head_dim];
                let scores: Vec<f64> = (0..s.key_len)
                    .map(|j| {
                        let k = &inputs.key[(b * s.key_len + j) * hd + h * s.head_dim..][..s.head_dim];
                        let dot: f64 = q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                        dot * inputs.scale as f64
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for e in 0..s.value_head_dim {
                    let sum: f64 = (0..s.key_len)
                        .map(|j| weights[j] * inputs.value[(b * s.key_len + j) * hdv + h * s.value_head_dim + e] as f64)
                        .sum();
                    out[(b * s.query_len + i) * hdv + h * s.value_head_dim + e] = (sum / total) as f32;
                }
            }
        }
    }
    out
}

/// Deterministic inputs in [-2, 2) (a fixed-seed ChaCha stream), large enough that the softmax is
/// far from uniform.
pub(crate) fn random_tensor(len: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-2.0..2.0)).collect()
}

/// Largest absolute difference between two equally long outputs.
pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
