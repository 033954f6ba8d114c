//! The request scheduler: HTTP API, prompt generation and job planning, the callback sender,
//! and the standalone mode that runs the whole fleet in one process.

pub mod api;
pub mod callbacks;
pub mod config;
pub mod metrics;
pub mod params;
pub mod planner;
pub mod policy;
pub mod prompts;
pub mod serve;
pub mod standalone;
