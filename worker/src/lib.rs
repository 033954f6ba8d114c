//! The worker: the loop that takes jobs off the queue and runs them on the engine
//! (`rapid-engine`, which knows nothing of the fleet), on the plumbing of `rapid-fleet`.
//!
//! The scheduler links this library only for its standalone mode, where it runs
//! [`consumer::JobConsumer`]s in its own process.

pub mod config;
pub mod consumer;
pub mod engine_share;
pub mod health;
pub mod metrics;
pub mod runner;
