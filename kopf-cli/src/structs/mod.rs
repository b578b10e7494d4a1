//! Plain data structures: field paths, bodies, diffs, patches, resource references.
//!
//! Everything here is pure (no I/O) and mirrors Kopf's `_cogs/structs` where the behaviour
//! must be identical to Python Kopf's; golden vectors produced by Kopf itself are checked in
//! `kopf-cli/tests/compat_*.rs`.

pub mod backoff;
pub mod bodies;
pub mod dicts;
pub mod diffs;
pub mod patches;
pub mod pyjson;
pub mod references;
pub mod selectors;
pub mod versions;
