//! The engine behind the `kopf` binary.
//!
//! Layering follows Kopf's own map, top to bottom (`kopf-cli/tests/layers.rs` enforces
//! it): the binary's edges (`main`, `cli`, `commands`) > `embedded` > `operator` >
//! `peering`, `admission`, `reactor`, `engines` > `contexts` > `actions` > `intents`,
//! `persistence`, `clients`, `plugin` > `options`, `signals`, `settings` >
//! `observability` (logs, metrics) > `structs` (plain data: bodies, diffs, patches,
//! resource references).
#![deny(missing_docs)]

pub mod actions;
pub mod admission;
pub mod cli;
pub mod clients;
pub mod commands;
pub mod contexts;
pub mod embedded;
pub mod engines;
pub mod intents;
pub mod observability;
pub mod operator;
pub mod options;
pub mod peering;
pub mod persistence;
pub mod plugin;
pub mod reactor;
pub mod settings;
pub mod signals;
pub mod structs;
