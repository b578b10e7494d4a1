//! Kopf's `14-daemons` example in Rust: one daemon per KopfExample, for as long as it exists.
//!
//! - `background_daemon_sync` pings every second until its stop flag is set, then exits:
//!   the operator keeps the object's finalizer until then.
//! - `background_async` ignores the stop flag; it is cancelled `cancellation_backoff`
//!   seconds after the stop request, and the object is released anyway.
//! - `background_slow_exit` takes 1.5 s to wind down after the stop request and has no
//!   `cancellation_timeout`: the operator waits for it however long it takes (logging
//!   "still exiting" every `cancellation_polling` seconds) and keeps the finalizer.
//!
//! When `KOPF_EXAMPLE_MARKERS` names a file, each daemon appends its life events to it
//! (`<daemon> <event> <namespace/name>`), which the end-to-end test reads.

use std::io::Write as _;
use std::time::Duration;

fn mark(ctx: &kopf::Context, daemon: &str, event: &str) {
    let Ok(path) = std::env::var("KOPF_EXAMPLE_MARKERS") else {
        return;
    };
    let line = format!(
        "{daemon} {event} {}/{}\n",
        ctx.namespace().unwrap_or_default(),
        ctx.name().unwrap_or_default()
    );
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = file.write_all(line.as_bytes());
    }
}

/// A sync daemon: runs in its own thread; checks and waits on the stop flag.
#[kopf::daemon("kopfexamples", cancellation_timeout = 20.0)]
pub fn background_daemon_sync(ctx: &kopf::Context) {
    mark(ctx, "sync", "started");
    let stopped = ctx.stopped();
    while !stopped.is_set() {
        tracing::info!("Ping from a sync daemon: field={}", ctx.spec()["field"]);
        stopped.wait(Some(Duration::from_secs(1)));
    }
    mark(ctx, "sync", "exited");
    tracing::info!("Sync daemon is exiting.");
}

/// An async daemon that never looks at its stop flag: cancelled after the backoff.
#[kopf::daemon("kopfexamples", cancellation_backoff = 1.0, cancellation_timeout = 0.5)]
pub async fn background_async(ctx: &kopf::Context) {
    mark(ctx, "async", "started");
    loop {
        tracing::info!("Ping from an async daemon: field={}", ctx.spec()["field"]);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// A sync daemon that needs a while to wind down: without `cancellation_timeout` it is
/// never cancelled; the object keeps its finalizer until the daemon has exited.
#[kopf::daemon("kopfexamples", cancellation_polling = 0.3)]
pub fn background_slow_exit(ctx: &kopf::Context) {
    mark(ctx, "slow", "started");
    let stopped = ctx.stopped();
    while !stopped.is_set() {
        stopped.wait(Some(Duration::from_secs(1)));
    }
    // Cleaning up, slowly (a real daemon might flush or close connections here).
    std::thread::sleep(Duration::from_millis(1500));
    mark(ctx, "slow", "exited");
}
