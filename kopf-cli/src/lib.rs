//! The engine behind the `kopf` binary.
