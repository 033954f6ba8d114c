// The CUDA flash-attention kernel of `ai.rapid::FlashAttention` (contract in mod.rs), compiled at run
// time by NVRTC from cuda.rs. Same algorithm as cpu.rs: key tiles in order, online softmax, the
// score matrix never stored.
//
// One block computes ROWS query rows of one (batch, head): its 4 warps own 4 rows each. The block
// stages its queries (pre-scaled) and each tile of TILE_K keys and values in shared memory; then for
// each of its rows a warp gives lane j the score of key j (so the softmax max and sum are warp
// shuffles), and every lane accumulates its own output columns e = lane + 32·t in registers. K rows
// are padded by one float so that 32 lanes reading 32 different keys hit 32 different banks.

#define TILE_K 32
#define WARPS 4
#define ROWS_PER_WARP 4
#define ROWS (WARPS * ROWS_PER_WARP)
// Largest per-head width of the value (the output columns one lane keeps in registers); cuda.rs
// checks it before launching.
#define MAX_VALUE_DIM 192
#define COLS_PER_LANE (MAX_VALUE_DIM / 32)
#define FULL_MASK 0xffffffffu
// NVRTC has no <math.h>, hence no INFINITY.
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float warp_max(float x) {
    for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, offset));
    return x;
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
}

extern "C" __global__ void __launch_bounds__(WARPS * 32) flash_attention(
    const float* __restrict__ query, const float* __restrict__ key, const float* __restrict__ value,
    float* __restrict__ out, int query_len, int key_len, int heads, int head_dim, int value_head_dim,
    float scale) {
    extern __shared__ float shared[];
    float* queries = shared;                              // [ROWS][head_dim]
    float* keys = queries + ROWS * head_dim;              // [TILE_K][head_dim + 1]
    float* values = keys + TILE_K * (head_dim + 1);       // [TILE_K][value_head_dim]

    const int first_row = blockIdx.x * ROWS;
    const int head = blockIdx.y;
    const long batch = blockIdx.z;
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const long qk_row = (long)heads * head_dim;
    const long v_row = (long)heads * value_head_dim;

    for (int i = threadIdx.x; i < ROWS * head_dim; i += blockDim.x) {
        const int row = first_row + i / head_dim;
        queries[i] = row < query_len
            ? query[(batch * query_len + row) * qk_row + head * head_dim + i % head_dim] * scale
            : 0.0f;
    }

    float acc[ROWS_PER_WARP][COLS_PER_LANE];
    float running_max[ROWS_PER_WARP];
    float running_sum[ROWS_PER_WARP];
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; ++r) {
        running_max[r] = NEG_INF;
        running_sum[r] = 0.0f;
#pragma unroll
        for (int t = 0; t < COLS_PER_LANE; ++t) acc[r][t] = 0.0f;
    }

    for (int first_key = 0; first_key < key_len; first_key += TILE_K) {
        __syncthreads();  // the previous tile is consumed (and, the first time, the queries staged)
        for (int i = threadIdx.x; i < TILE_K * head_dim; i += blockDim.x) {
            const int j = i / head_dim, d = i % head_dim, k = first_key + j;
            keys[j * (head_dim + 1) + d] =
                k < key_len ? key[(batch * key_len + k) * qk_row + head * head_dim + d] : 0.0f;
        }
        for (int i = threadIdx.x; i < TILE_K * value_head_dim; i += blockDim.x) {
            const int j = i / value_head_dim, e = i % value_head_dim, k = first_key + j;
            values[i] = k < key_len ? value[(batch * key_len + k) * v_row + head * value_head_dim + e] : 0.0f;
        }
        __syncthreads();

        const bool key_valid = first_key + lane < key_len;
#pragma unroll
        for (int r = 0; r < ROWS_PER_WARP; ++r) {
            const float* q = queries + (warp * ROWS_PER_WARP + r) * head_dim;
            float score = NEG_INF;
            if (key_valid) {
                const float* k = keys + lane * (head_dim + 1);
                score = 0.0f;
                for (int d = 0; d < head_dim; ++d) score = fmaf(q[d], k[d], score);
            }
            // Every tile holds at least one valid key, so new_max is finite.
            const float new_max = fmaxf(running_max[r], warp_max(score));
            const float weight = key_valid ? expf(score - new_max) : 0.0f;
            const float correction = expf(running_max[r] - new_max);
            running_sum[r] = running_sum[r] * correction + warp_sum(weight);
            running_max[r] = new_max;
#pragma unroll
            for (int t = 0; t < COLS_PER_LANE; ++t) acc[r][t] *= correction;
            for (int j = 0; j < TILE_K; ++j) {
                const float w = __shfl_sync(FULL_MASK, weight, j);
                const float* v = values + j * value_head_dim;
#pragma unroll
                for (int t = 0; t < COLS_PER_LANE; ++t) {
                    const int e = lane + 32 * t;
                    if (e < value_head_dim) acc[r][t] = fmaf(w, v[e], acc[r][t]);
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; ++r) {
        const int row = first_row + warp * ROWS_PER_WARP + r;
        if (row >= query_len) continue;
        float* target = out + (batch * query_len + row) * v_row + head * value_head_dim;
        const float inverse = 1.0f / running_sum[r];
#pragma unroll
        for (int t = 0; t < COLS_PER_LANE; ++t) {
            const int e = lane + 32 * t;
            if (e < value_head_dim) target[e] = acc[r][t] * inverse;
        }
    }
}
