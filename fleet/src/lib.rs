//! The fleet's plumbing, shared by the scheduler and the worker: the job queue, the state store,
//! the object store, loading the configuration file, clean shutdown, and the records and events of
//! a job's life. It knows nothing of the engine: the scheduler links it without linking a model
//! runtime, and the worker adds the engine on top.

pub mod config;
pub mod jobs;
pub mod queue;
pub mod shutdown;
pub mod state;
pub mod storage;
pub mod telemetry;
