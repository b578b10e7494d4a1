//! The operator: the reactor that watches resources and runs handlers.

use crate::cli::RunOptions;
use crate::plugin::PluginSet;

/// Runs the operator with the loaded plugins until SIGINT or SIGTERM.
///
/// Placeholder until the reactor exists: logs that there is no reactor and waits for a
/// termination signal; returns `Ok(())` on a graceful stop.
pub async fn run(options: RunOptions, plugins: PluginSet) -> anyhow::Result<()> {
    // Install the handlers before announcing readiness, so no early signal is lost.
    let mut signals = StopSignals::install()?;
    tracing::info!(
        target: "kopf.reactor",
        "no reactor yet: {} plugins with {} handlers loaded (namespaces: {:?}, clusterwide: {}); waiting for a signal.",
        plugins.plugins().len(),
        plugins.handlers().len(),
        options.namespaces,
        options.clusterwide
    );
    let signal = signals.recv().await;
    tracing::info!(target: "kopf.reactor", "Signal {signal} is received. Operator is stopping.");
    Ok(())
}

/// SIGINT and SIGTERM listeners, installed eagerly.
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the listeners (must run inside a tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next SIGINT or SIGTERM and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
