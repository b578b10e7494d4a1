//! Storage formats compatible with Python Kopf: annotation keys, progress records, diff-bases.
//!
//! Everything here is pure: functions read a body (`&serde_json::Value`) and write into a
//! [`crate::structs::patches::Patch`]; nothing talks to the API. The formats are verified
//! against golden vectors produced by Kopf itself (`kopf-cli/tests/compat_*.rs`).

pub mod conventions;
pub mod diffbase;
pub mod layouts;
pub mod progress;
pub mod progress_storage;
pub mod storages;
pub mod times;
