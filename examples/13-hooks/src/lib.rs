//! Kopf's `13-hooks` example in Rust: operator-level handlers.
//!
//! * two startup handlers: one adjusts the operator settings, one fails twice with a
//!   temporary error and is retried until it succeeds;
//! * a cleanup handler, run when the operator exits (SIGINT/SIGTERM);
//! * a login handler returning the connection info (server and token from
//!   `HOOKS_SERVER` / `HOOKS_TOKEN`, e.g. the API emulator's URL);
//! * probe handlers, served as JSON by `kopf run --liveness http://0.0.0.0:8080/healthz`
//!   (`HOOKS_FAILING_PROBE=1` adds one that fails, to see how errors are reported).

use serde_json::{Value, json};

/// Adjusts the settings: events are reported as component `hooks-example`.
#[kopf::on::startup]
pub fn startup_fn_simple(ctx: &kopf::Context) {
    tracing::info!("Initialising the task-lifetime resources, such as loops and clients.");
    ctx.settings_mut()
        .set("posting.reporting_component", "hooks-example");
}

/// Fails temporarily twice, then succeeds; it sees the settings adjusted above.
#[kopf::on::startup]
pub fn startup_fn_retried(ctx: &kopf::Context) -> kopf::Result<()> {
    let component = ctx
        .settings()
        .and_then(|s| s.pointer("/posting/reporting_component"))
        .cloned()
        .unwrap_or(Value::Null);
    if component != json!("hooks-example") {
        return Err(kopf::PermanentError::new(format!("the settings were not adjusted: {component}")).into());
    }
    if ctx.retry() < 2 {
        return Err(
            kopf::TemporaryError::new(format!("Going to succeed in 0.2s (attempt {})", ctx.retry()))
                .delay(0.2)
                .into(),
        );
    }
    tracing::info!("Startup succeeded after {} retries.", ctx.retry());
    Ok(())
}

/// Runs on the way out.
#[kopf::on::cleanup]
pub fn cleanup_fn() {
    tracing::info!("Cleaning up: the hooks example is done.");
}

/// Returns the credentials of the cluster to serve.
#[kopf::on::login]
pub fn login_fn() -> kopf::Result<Option<kopf::ConnectionInfo>> {
    let Ok(server) = std::env::var("HOOKS_SERVER") else {
        return Err(kopf::PermanentError::new("set HOOKS_SERVER (and HOOKS_TOKEN) to log in").into());
    };
    let mut info = kopf::ConnectionInfo::new(server).default_namespace("default");
    if let Ok(token) = std::env::var("HOOKS_TOKEN") {
        info = info.token(token);
    }
    Ok(Some(info))
}

/// A probe: the current time.
#[kopf::on::probe(id = "now")]
pub fn get_current_timestamp() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().to_string())
        .unwrap_or_default()
}

/// A probe with a structured result.
#[kopf::on::probe(id = "random")]
pub fn get_random_value() -> Value {
    json!({"value": 42})
}

/// A probe that fails when `HOOKS_FAILING_PROBE=1`.
#[kopf::on::probe(id = "failing")]
pub fn failing_probe() -> kopf::Result<bool> {
    if std::env::var("HOOKS_FAILING_PROBE").as_deref() == Ok("1") {
        return Err(kopf::Error::msg("the probe is broken on purpose"));
    }
    Ok(true)
}
