//! Operator-level engines: activities (startup, cleanup, login, probe), probing (the
//! liveness endpoint), metrics, and posting object log lines as events.

pub mod activities;
pub mod metrics;
pub mod posting;
pub mod probing;
