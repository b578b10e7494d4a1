//! `kopf run`: load the plugins and hand them to the operator; with `--embedded`, start
//! the in-process API emulator first and connect the operator to it.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::clients::connection;
use crate::observability::objects::LogLines;
use crate::options::RunOptions;
use crate::plugin::PluginSet;
use crate::signals::Control;

/// An in-process API emulator for `kopf run --embedded`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbeddedCluster {
    /// YAML files to apply before the operator starts.
    pub apply: Vec<PathBuf>,
    /// Where to write the emulator's kubeconfig, if anywhere.
    pub kubeconfig: Option<PathBuf>,
}

/// Loads the plugins of `options`, logs their handlers, and runs the operator until it
/// stops (on SIGINT/SIGTERM); against an in-process emulator if `embedded` is given.
/// `lines` is the log's switch for object lines (posted as events if the settings say so).
pub async fn run(options: RunOptions, embedded: Option<EmbeddedCluster>, lines: LogLines) -> Result<()> {
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
    // Kept alive for as long as the operator runs.
    let (connection, _emulator) = match &embedded {
        Some(embedded) => {
            let (config, emulator) = start_embedded(embedded).await?;
            (Some(config), Some(emulator))
        }
        None => (None, None),
    };
    crate::operator::run(options, plugins, Control::signals(lines), connection).await
}

/// Starts the in-process emulator of `--embedded`, applies the files, writes the
/// kubeconfig if asked, and returns the client configuration pointing to it.
async fn start_embedded(embedded: &EmbeddedCluster) -> Result<(kube::Config, kopf_testing::EmulatorHandle)> {
    let emulator = kopf_testing::Emulator::builder()
        .start()
        .await
        .context("cannot start the embedded emulator")?;
    for file in &embedded.apply {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        emulator
            .apply_yaml(&text)
            .await
            .with_context(|| format!("cannot apply {}", file.display()))?;
    }
    if let Some(path) = &embedded.kubeconfig {
        emulator
            .write_kubeconfig(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tracing::info!(target: "kopf.reactor", "The embedded cluster is serving at {}.", emulator.url());
    let config = connection::config_from_yaml(&emulator.kubeconfig_yaml()).await?;
    Ok((config, emulator))
}
