//! The reactor: from watch streams to per-object processing.

pub mod daemons;
pub mod execution;
pub mod indexing;
pub mod orchestration;
pub mod processing;
pub mod queueing;
pub mod subhandling;
pub mod wheel;
