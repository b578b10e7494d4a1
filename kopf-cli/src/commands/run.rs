//! `kopf run`: load the plugins and hand them to the operator.

use anyhow::Result;

use crate::cli::RunOptions;
use crate::plugin::PluginSet;

/// Loads the plugins of `options`, logs their handlers, and runs the operator until it stops.
pub async fn run(options: RunOptions) -> Result<()> {
    if options.plugins.is_empty() {
        tracing::warn!(target: "kopf.activities", "No plugins given: the operator has no handlers.");
    }
    let paths = options.plugins.clone();
    let plugins = tokio::task::spawn_blocking(move || PluginSet::load(&paths)).await??;
    for plugin in plugins.plugins() {
        let d = plugin.description();
        tracing::info!(
            target: "kopf.activities",
            "Loaded plugin {} {} from {} (SDK {}, {} handlers).",
            plugin.name(),
            d.plugin.version,
            plugin.path().display(),
            if d.sdk_version.is_empty() { "unknown" } else { d.sdk_version.as_str() },
            d.handlers.len()
        );
    }
    for handler in plugins.handlers() {
        tracing::info!(target: "kopf.activities", "  {}: {}", handler.plugin().name(), super::handler_summary(handler));
    }
    crate::operator::run(options, plugins).await
}
