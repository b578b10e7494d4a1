//! An application that runs a kopf operator in a side thread (Kopf's `12-embedded`).
//!
//! The handlers are ordinary `#[kopf::on::...]` functions of this binary, served
//! in-process (no `cdylib`). The application:
//!
//! 1. puts its own state into the operator memo (Kopf's `memo=` argument), which every
//!    object's memo starts with;
//! 2. starts the operator on its own thread and runtime, and waits until it is ready;
//! 3. does its own work (here: reports how many objects the operator has handled) until
//!    SIGINT or SIGTERM;
//! 4. stops the operator and waits for it to finish (cleanup handlers run), then exits.
//!
//! ```sh
//! cargo run -p example-12-embedded        # uses KUBECONFIG, serves all namespaces
//! ```
//!
//! Environment: `KOPF_EMBEDDED_NAMESPACE` serves one namespace instead of the whole cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

/// The application's state, shared with the handlers through the memo.
#[derive(Debug, Default)]
struct AppState {
    /// Objects created while the operator ran.
    created: AtomicU64,
}

#[kopf::on::create("kopfexamples")]
fn create_fn(ctx: &kopf::Context) -> kopf::Result<Value> {
    // The application's value arrives through the object's memo (a shallow copy of the
    // operator memo): the same `Arc`, shared with `main`.
    let app = ctx
        .memo()
        .typed::<AppState>()
        .ok_or_else(|| kopf::PermanentError::new("no application state in the memo"))?;
    let n = app.created.fetch_add(1, Ordering::SeqCst) + 1;
    tracing::info!("Created in the embedded operator (#{n}).");
    Ok(json!({"message": "hello from the embedded operator", "count": n}))
}

#[kopf::on::cleanup]
fn cleanup_fn() {
    tracing::info!("The embedded operator is cleaning up.");
}

fn main() -> anyhow::Result<()> {
    let log = kopf_cli::observability::logging::LogConfig {
        filter: std::env::var("RUST_LOG").ok(),
        ..Default::default()
    };
    kopf_cli::observability::logging::init(&log, &Default::default()).context("cannot set up logging")?;

    let app = kopf::operator_memo().insert_typed(AppState::default());

    let builder = kopf_cli::embedded::Operator::builder()
        .module("example-12-embedded", kopf::plugin_module())
        .standalone(true);
    let builder = match std::env::var("KOPF_EMBEDDED_NAMESPACE") {
        Ok(namespace) => builder.namespaces([namespace]),
        Err(_) => builder.clusterwide(true),
    };
    let operator = builder.build()?.spawn()?;
    operator.wait_ready(Duration::from_secs(60))?;
    tracing::info!("The application sees the operator ready.");

    // The application's own work: a runtime of its own, stopped by SIGINT/SIGTERM.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the application's runtime")?;
    let signal = match runtime.block_on(application(app, &operator)) {
        Ok(signal) => signal,
        Err(error) => {
            // The operator's own error, if it failed, says more than ours.
            operator.join()?;
            return Err(error);
        }
    };

    tracing::info!("The application got {signal}: stopping the operator.");
    operator.stop();
    operator.join()?;
    tracing::info!("The operator has stopped; the application exits.");
    Ok(())
}

/// Reports progress until a termination signal (or the operator's unexpected end).
async fn application(
    app: Arc<AppState>,
    operator: &kopf_cli::embedded::OperatorHandle,
) -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut reported = 0;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = ticks.tick() => {
                if operator.is_finished() {
                    anyhow::bail!("the operator ended on its own");
                }
                let created = app.created.load(Ordering::SeqCst);
                if created != reported {
                    reported = created;
                    tracing::info!("The application counts {created} created object(s).");
                }
            }
        }
    }
}
