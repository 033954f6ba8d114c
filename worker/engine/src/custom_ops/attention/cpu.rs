//! The CPU flash-attention kernel: softmax(scale·Q·Kᵀ)·V in tiles with an online softmax, so the
//! L×L score matrix is never materialised (at L = 1024, 8 heads and batch 2 it would be 64 MiB per
//! layer, streamed through memory twice by the unfused graph).
//!
//! Work is split into independent items, one per (batch, tile of `QUERY_TILE` query rows), each
//! writing its own contiguous rows of the output; `op` runs them on ONNX Runtime's intra-op thread
//! pool, `attend` one after another. Within an item, for each head, key tiles are visited in order:
//! scores for the tile, new running row maxima, earlier partial sums rescaled by exp(old − new max),
//! then the tile's weighted values added (Dao et al., "FlashAttention", 2022, algorithm 1).
//!
//! The two tile products go to `matrixmultiply` rather than hand loops: it is already in the build
//! (under ndarray), picks AVX2/FMA or AVX-512 kernels at run time, and takes arbitrary row and
//! column strides, so Kᵀ and one head of the packed [B, L, H·D] layout are read in place with no
//! copies. Hand-written loops reach a fraction of its throughput at these sizes (128×40×256).

use super::softmax::{exp_shifted_in_place, row_max};
use super::AttentionInputs;

/// Query rows per work item, and keys per inner step. Chosen by measurement on the Table 6 shapes
/// (2 cores, Zen 3): with head widths of 40–160 the products are so thin that `matrixmultiply`'s
/// packing costs about as much as the arithmetic, and bigger tiles pack each key and value fewer
/// times. 128×256 was ~8% faster than 64×128 and than 256×128; the 128 KiB score tile still sits
/// in L2 between its two products, and a batch of 2 at L = 1024 still gives 16 items to share out.
pub const QUERY_TILE: usize = 128;
const KEY_TILE: usize = 256;

/// The output split into the rows each work item writes, in item order; pass item `i`'s slice to
/// `attend_tile(inputs, i, ..)`.
pub fn output_tiles<'o>(inputs: &AttentionInputs, out: &'o mut [f32]) -> Vec<&'o mut [f32]> {
    let s = inputs.shape;
    assert_eq!(out.len(), s.output_elements(), "output buffer does not match {s:?}");
    let row = s.heads * s.value_head_dim;
    if out.is_empty() {
        return Vec::new();
    }
    out.chunks_mut(s.query_len * row).flat_map(|batch| batch.chunks_mut(QUERY_TILE * row)).collect()
}

/// Runs every work item on the calling thread.
pub fn attend(inputs: &AttentionInputs, out: &mut [f32]) {
    for (item, tile) in output_tiles(inputs, out).into_iter().enumerate() {
        attend_tile(inputs, item, tile);
    }
}

/// Computes work item `item`: all heads of one tile of query rows of one batch element.
pub fn attend_tile(inputs: &AttentionInputs, item: usize, out: &mut [f32]) {
    let s = inputs.shape;
    let tiles_per_batch = s.query_len.div_ceil(QUERY_TILE);
    let (batch, first_row) = (item / tiles_per_batch, item % tiles_per_batch * QUERY_TILE);
    let rows = QUERY_TILE.min(s.query_len - first_row);
    let (qk_row, v_row) = (s.heads * s.head_dim, s.heads * s.value_head_dim);
    assert_eq!(out.len(), rows * v_row, "work item {item} got a wrong-sized output tile");

    let mut scores = vec![0.0f32; rows * KEY_TILE];
    let mut partial = vec![0.0f32; rows * s.value_head_dim];
    let mut running_max = vec![0.0f32; rows];
    let mut running_sum = vec![0.0f32; rows];
    for head in 0..s.heads {
        running_max.fill(f32::NEG_INFINITY);
        running_sum.fill(0.0);
        partial.fill(0.0);
        let query = Matrix {
            data: inputs.query,
            offset: (batch * s.query_len + first_row) * qk_row + head * s.head_dim,
            rows,
            cols: s.head_dim,
            row_stride: qk_row,
            col_stride: 1,
        };
        for first_key in (0..s.key_len).step_by(KEY_TILE) {
            let keys = KEY_TILE.min(s.key_len - first_key);
            let key_offset = batch * s.key_len + first_key;
            // Kᵀ of this tile, read in place: element (d, j) is key[j, head·D + d].
            let key_t = Matrix {
                data: inputs.key,
                offset: key_offset * qk_row + head * s.head_dim,
                rows: s.head_dim,
                cols: keys,
                row_stride: 1,
                col_stride: qk_row,
            };
            let mut tile = MatrixMut { data: &mut scores, rows, cols: keys, row_stride: KEY_TILE };
            gemm(inputs.scale, &query, &key_t, 0.0, &mut tile);

            for r in 0..rows {
                let row = &mut scores[r * KEY_TILE..][..keys];
                let new_max = running_max[r].max(row_max(row));
                let correction = (running_max[r] - new_max).exp();
                running_sum[r] = running_sum[r] * correction + exp_shifted_in_place(row, new_max);
                running_max[r] = new_max;
                if correction != 1.0 {
                    partial[r * s.value_head_dim..][..s.value_head_dim].iter_mut().for_each(|x| *x *= correction);
                }
            }

            let weights = Matrix { data: &scores, offset: 0, rows, cols: keys, row_stride: KEY_TILE, col_stride: 1 };
            let value = Matrix {
                data: inputs.value,
                offset: key_offset * v_row + head * s.value_head_dim,
                rows: keys,
                cols: s.value_head_dim,
                row_stride: v_row,
                col_stride: 1,
            };
            let mut accumulated =
                MatrixMut { data: &mut partial, rows, cols: s.value_head_dim, row_stride: s.value_head_dim };
            gemm(1.0, &weights, &value, 1.0, &mut accumulated);
        }
        for r in 0..rows {
            let source = &partial[r * s.value_head_dim..][..s.value_head_dim];
            let target = &mut out[r * v_row + head * s.value_head_dim..][..s.value_head_dim];
            let inverse = 1.0 / running_sum[r];
            target.iter_mut().zip(source).for_each(|(t, &x)| *t = x * inverse);
        }
    }
}

/// A strided read-only view of a matrix inside a slice.
struct Matrix<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A row-major (unit column stride) writable view at the start of a slice.
struct MatrixMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

/// c ← alpha·a·b + beta·c, after checking that every element the views address lies inside their
/// slices (which is what makes the raw-pointer call sound).
fn gemm(alpha: f32, a: &Matrix, b: &Matrix, beta: f32, c: &mut MatrixMut) {
    assert!(a.cols == b.rows && c.rows == a.rows && c.cols == b.cols, "gemm dimensions disagree");
    if c.rows == 0 || c.cols == 0 {
        return;
    }
    let last = |m: &Matrix| m.offset + (m.rows.max(1) - 1) * m.row_stride + (m.cols.max(1) - 1) * m.col_stride;
    assert!(a.rows == 0 || a.cols == 0 || last(a) < a.data.len(), "gemm: a runs past its slice");
    assert!(b.rows == 0 || b.cols == 0 || last(b) < b.data.len(), "gemm: b runs past its slice");
    assert!((c.rows - 1) * c.row_stride + c.cols <= c.data.len(), "gemm: c runs past its slice");
    // SAFETY: the views were checked above to stay inside their slices; `c` is borrowed mutably, so
    // it cannot alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            a.rows,
            a.cols,
            b.cols,
            alpha,
            a.data.as_ptr().add(a.offset),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr().add(b.offset),
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c.data.as_mut_ptr(),
            c.row_stride as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom_ops::attention::reference::{max_abs_diff, naive_attention, random_tensor};
    use crate::custom_ops::attention::AttentionShape;

    fn check(shape: AttentionShape, scale: f32) {
        let query = random_tensor(shape.query_elements(), 1);
        let key = random_tensor(shape.key_elements(), 2);
        let value = random_tensor(shape.value_elements(), 3);
        let inputs = AttentionInputs::new(&query, &key, &value, shape, scale).unwrap();
        let mut out = vec![f32::NAN; shape.output_elements()];
        attend(&inputs, &mut out);
        let diff = max_abs_diff(&out, &naive_attention(&inputs));
        assert!(diff < 1e-5, "{shape:?}: max abs diff {diff}");
    }

    fn shape(
        batch: usize,
        heads: usize,
        query_len: usize,
        key_len: usize,
        head_dim: usize,
        value_head_dim: usize,
    ) -> AttentionShape {
        AttentionShape { batch, heads, query_len, key_len, head_dim, value_head_dim }
    }

    #[test]
    fn self_attention_with_lengths_off_the_tiles() {
        // 300 = 2 query tiles + 44 rows, and 1 key tile + 44 keys.
        let s = shape(2, 3, 300, 300, 16, 16);
        check(s, s.default_scale());
    }

    #[test]
    fn cross_attention_with_fewer_keys_than_queries() {
        // Text conditioning: 77 tokens against a 16×16 latent.
        let s = shape(2, 8, 256, 77, 8, 8);
        check(s, s.default_scale());
    }

    #[test]
    fn more_keys_than_queries_and_value_width_differs() {
        check(shape(1, 2, 5, 300, 12, 20), 0.3);
    }

    #[test]
    fn single_head_single_row() {
        check(shape(3, 1, 1, 1, 4, 4), 1.0);
    }

    #[test]
    fn large_scores_do_not_overflow() {
        // Scale 3 on inputs in [-2, 2) gives scores up to ~190, and exp(190) overflows f32: this
        // passes only because every exponent is taken after subtracting the running maximum.
        check(shape(1, 2, 70, 130, 16, 16), 3.0);
    }

    #[test]
    fn unet_head_widths() {
        // The SD 1.x U-Net's widths at a 32×32 latent: 320/8 = 40 and 640/8 = 80 per head.
        check(shape(1, 8, 130, 130, 40, 40), 1.0 / 40f32.sqrt());
        check(shape(1, 8, 64, 32, 80, 80), 1.0 / 80f32.sqrt());
    }

    #[test]
    fn empty_query_leaves_nothing_to_do() {
        let s = shape(2, 2, 0, 5, 4, 4);
        let key = random_tensor(s.key_elements(), 2);
        let value = random_tensor(s.value_elements(), 3);
        let inputs = AttentionInputs::new(&[], &key, &value, s, 1.0).unwrap();
        attend(&inputs, &mut []);
    }
}
