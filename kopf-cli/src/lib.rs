//! The engine behind the `kopf` binary.
//!
//! Layering follows Kopf's own map: `structs` (plain data: bodies, diffs, patches,
//! resource references) < `persistence` (storage formats compatible with Python Kopf)
//! < `intents` (causes, filters) < `plugin` (the host side of the ABI) < `operator`
//! (the reactor); `cli`, `logging` and `commands` are the binary's edges.
#![deny(missing_docs)]

pub mod actions;
pub mod admission;
pub mod cli;
pub mod clients;
pub mod commands;
pub mod embedded;
pub mod engines;
pub mod intents;
pub mod logging;
pub mod operator;
pub mod peering;
pub mod persistence;
pub mod plugin;
pub mod reactor;
pub mod settings;
pub mod structs;
