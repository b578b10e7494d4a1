//! Kopf's `08-events` example in Rust: low-level event handlers ("spies").
//!
//! Event handlers see every watch event of every object, have no progress state and no
//! retries: errors are logged and ignored (`errors = IGNORED` by default).
//!
//! To make the calls observable, both handlers append a line to the file named by the
//! environment variable `KOPF_EXAMPLE_EVENTS_LOG`, if set: `<handler> <type> <name>`,
//! where `<type>` is `ADDED`, `MODIFIED`, `DELETED` or `None` (the initial listing).

use std::io::Write;

/// The environment variable naming the side-effect file.
pub const LOG_ENV: &str = "KOPF_EXAMPLE_EVENTS_LOG";

fn record(handler: &str, ctx: &kopf::Context) {
    let Some(path) = std::env::var_os(LOG_ENV) else {
        return;
    };
    let line = format!(
        "{handler} {} {}\n",
        ctx.event_type().unwrap_or("None"),
        ctx.name().unwrap_or("?")
    );
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        tracing::warn!("cannot write {}: {e}", std::path::Path::new(&path).display());
    }
}

/// Always fails: the error is logged and ignored; the handler is not retried.
#[kopf::on::event("kopf.dev", "v1", "kopfexamples")]
pub fn event_fn_with_error(ctx: &kopf::Context) -> kopf::Result<()> {
    record("event_fn_with_error", ctx);
    Err(kopf::Error::msg("Oops!"))
}

/// Logs every event it receives.
#[kopf::on::event("kopf.dev", "v1", "kopfexamples")]
pub fn normal_event_fn(ctx: &kopf::Context) {
    record("normal_event_fn", ctx);
    let event = serde_json::json!({"type": ctx.event_type(), "object": ctx.body()});
    tracing::info!("Event received: {}", event);
}
