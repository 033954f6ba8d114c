//! The fleet side of the worker: queue, state and storage clients, and the loop that runs jobs
//! on the engine (`rapid-engine`, which knows nothing of any of this).
//!
//! The scheduler links this library too: it publishes through [`queue`], reads [`state`], presigns
//! through [`storage`], and in standalone mode runs [`consumer::JobConsumer`]s in its own process.

pub mod config;
pub mod consumer;
pub mod queue;
pub mod runner;
pub mod shutdown;
pub mod state;
pub mod storage;
