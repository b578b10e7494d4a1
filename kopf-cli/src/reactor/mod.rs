//! The reactor: from watch streams to per-object processing.

pub mod changing;
pub mod daemon_task;
pub mod daemons;
pub mod indexing;
mod mailbox;
pub mod memory;
pub mod orchestration;
pub mod owning;
pub mod processing;
pub mod queueing;
pub mod shared;
pub mod stopping;
pub mod subhandling;
pub mod wheel;
