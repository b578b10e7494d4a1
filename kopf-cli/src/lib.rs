//! The engine behind the `kopf` binary.
//!
//! Layering follows Kopf's own map, top to bottom (`kopf-cli/tests/layers.rs` enforces
//! it): the binary's edges (`main`, `cli`, `commands`) > `embedded` > `operator` >
//! `peering`, `admission`, `reactor`, `engines` > `contexts` > `actions` > `intents`,
//! `persistence`, `clients`, `plugin` > `options`, `signals`, `settings` >
//! `observability` (logs, metrics) > `structs` (plain data: bodies, diffs, patches,
//! resource references).
#![deny(missing_docs)]

pub(crate) mod actions;
pub(crate) mod admission;
pub mod cli;
pub(crate) mod clients;
pub mod commands;
pub(crate) mod contexts;
pub mod embedded;
pub(crate) mod engines;
pub mod intents;
pub mod observability;
pub(crate) mod operator;
pub mod options;
pub(crate) mod peering;
pub mod persistence;
pub mod plugin;
pub(crate) mod reactor;
pub mod settings;
pub mod signals;
pub mod structs;
