//! Talking to the Kubernetes API: connection, URLs, watching, patching and events.
//!
//! Bodies travel as raw [`serde_json::Value`]s: the engine diffs, filters and hands
//! them to plugins as JSON, so parsing them into typed structures would only cost.

pub mod auth;
pub mod connection;
pub mod errors;
pub mod events;
pub mod patching;
pub mod requests;
pub mod scanning;
pub mod urls;
pub mod watching;

pub use errors::ApiError;
