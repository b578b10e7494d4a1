//! Operator-level engines: activities (startup, cleanup, login, probe), probing (the
//! liveness endpoint) and metrics.

pub mod activities;
pub mod metrics;
pub mod probing;
