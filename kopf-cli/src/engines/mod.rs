//! Operator-level engines: activities (startup, cleanup, login, probe) and probing.

pub mod activities;
pub mod probing;
