//! Deterministic random streams: one ChaCha8 generator per (seed, purpose, a, b).
//!
//! Every consumer of randomness (initialisation, each epoch's shuffle, each chunk's negatives, the split)
//! gets its own independent stream instead of sharing one generator, so the numbers a chunk sees do not
//! depend on which thread ran it or in what order chunks finished.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a stream is used for; part of the stream's identity.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    Init = 1,
    Shuffle = 2,
    Negatives = 3,
    Split = 4,
}

/// The generator for `purpose` with coordinates `a`, `b` (e.g. epoch and chunk) under `seed`.
pub fn stream(seed: u64, purpose: Purpose, a: u64, b: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // ChaCha's 64-bit stream id selects an independent sequence under the same key; mixing keeps
    // distinct (purpose, a, b) on distinct ids for any realistic epoch and chunk counts.
    rng.set_stream(mix(mix(mix(purpose as u64) ^ a) ^ b));
    rng
}

/// SplitMix64's finaliser: a bijection on u64 that spreads nearby inputs far apart.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
