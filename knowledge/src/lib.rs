//! TransE knowledge-graph embeddings: the e_kg of the paper's knowledge-enhanced prompts (§3.1.1,
//! e = e_txt + e_kg), trained here rather than imported.
//!
//! The one design decision a newcomer would question: training is deterministic for a seed whatever the
//! thread count. Work is cut into fixed-size chunks (not one chunk per thread), each chunk draws its negatives
//! from its own random stream, and gradients are summed per row in batch order; threads only decide who
//! computes what, never the result. This costs a sort per batch and buys byte-identical vectors on any machine
//! with the same binary, which lets the worker's fixtures and the benchmark be reproduced exactly.
//!
//! Data flow: `graph` (TSV → ids) → `dataset` (`split` for one-file input) → `train` (uses `sampling`, `model`, `optim`,
//! `rng`) → `eval` (filtered ranks) → `output` (vectors, names, metrics). The crate knows nothing about the
//! text encoder or the worker: it writes files, the worker reads them.

pub mod dataset;
pub mod error;
pub mod eval;
pub mod graph;
pub mod model;
pub mod optim;
pub mod output;
pub mod rng;
pub mod sampling;
pub mod split;
pub mod train;

pub use error::{Error, LineProblem};
