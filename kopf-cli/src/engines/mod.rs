//! Operator-level engines: activities (startup, cleanup, login, probe), probing (the
//! liveness endpoint, with the metrics of [`crate::observability::metrics`]), and
//! posting object log lines as events.

pub mod activities;
pub mod posting;
pub mod probing;
