//! Kopf's `15-timers` example in Rust: periodic handlers per KopfExample.
//!
//! `every_few_seconds_sync` ticks every `spec.interval`-independent 1 s and stores a counter
//! in `status.every_few_seconds_sync`; `idle_timer` ticks only after the object has been
//! unchanged for 2 s.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

static TICKS: AtomicU64 = AtomicU64::new(0);

/// Ticks every second; the result lands in `status.every_few_seconds_sync`.
#[kopf::timer("kopfexamples", interval = 1.0)]
pub fn every_few_seconds_sync(ctx: &kopf::Context) -> Value {
    let tick = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!(
        "Ping from a sync timer: field={} tick={tick}",
        ctx.spec()["field"]
    );
    json!({"tick": tick})
}

/// Ticks only when the object was unchanged for 2 s, then every 3 s.
#[kopf::timer("kopfexamples", idle = 2.0, interval = 3.0)]
pub fn idle_timer(ctx: &kopf::Context) -> Value {
    tracing::info!("Ping from an idle timer: field={}", ctx.spec()["field"]);
    json!({"field": ctx.spec()["field"]})
}
