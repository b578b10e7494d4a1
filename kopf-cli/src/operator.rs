//! The operator: the reactor that watches resources and runs handlers.

use crate::cli::RunOptions;
use crate::plugin::PluginSet;

/// Runs the operator with the loaded plugins until SIGINT or SIGTERM.
///
/// Placeholder until the reactor exists: logs that there is no reactor and waits for a
/// termination signal; returns `Ok(())` on a graceful stop.
pub async fn run(options: RunOptions, plugins: PluginSet) -> anyhow::Result<()> {
    tracing::info!(
        target: "kopf.reactor",
        "no reactor yet: {} plugins with {} handlers loaded (namespaces: {:?}, clusterwide: {}); waiting for a signal.",
        plugins.plugins().len(),
        plugins.handlers().len(),
        options.namespaces,
        options.clusterwide
    );
    let signal = wait_for_signal().await?;
    tracing::info!(target: "kopf.reactor", "Signal {signal} is received. Operator is stopping.");
    Ok(())
}

/// Waits for SIGINT or SIGTERM and returns its name.
pub async fn wait_for_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("SIGINT")
    }
}
