//! Causes and filters: what happened to an object and which handlers it concerns.
//!
//! Pure functions over explicit inputs (bodies, essences, diffs, flags), mirroring Kopf's
//! `causes.py` and `registries.py`; verified against Kopf's own results in
//! `kopf-cli/tests/compat_*.rs`.

pub mod causes;
pub mod filters;
