//! Rapid Diffusion inference engine: a model directory in, marked pixels out.
//!
//! The engine is synchronous and knows nothing about queues, HTTP, Redis, S3 or async runtimes, so
//! the CLI, the fleet worker and the benchmarks all drive the same code.

pub mod autotune;
pub mod custom_ops;
pub mod error;
pub mod knowledge;
pub mod marking;
pub mod model_dir;
pub mod output;
pub mod parts;
pub mod pipeline;
pub mod runtime;
pub mod samplers;
pub mod session_cache;
pub mod tokenizer;
