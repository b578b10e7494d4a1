//! What the operator tells about itself: logs ([`logging`], Kopf's
//! `kopf/_core/engines/logging.py` formats and levels) and Prometheus metrics
//! ([`metrics`]; Kopf has none).
//!
//! A low layer: anything above may log and record metrics (the API clients count their
//! requests here), and nothing here talks to the cluster. Posting object log lines as
//! Kubernetes Events needs the API client, so that poster stays above
//! (`crate::engines::posting`).

pub mod fields;
pub mod logging;
pub mod metrics;
pub mod objects;
