//! `kopf emulator`: serve the Kubernetes API emulator on loopback until interrupted.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// `kopf emulator` arguments.
#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// The address to listen on (loopback by default; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0", env = "KOPF_EMULATOR_BIND")]
    pub bind: String,
    /// Write a kubeconfig pointing to the emulator here.
    #[arg(long, value_name = "PATH", env = "KOPF_EMULATOR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Apply these YAML files (CRDs, objects) at start; repeatable.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Watch events kept per resource; a watch from an older resourceVersion gets 410 Gone.
    #[arg(long, value_name = "N")]
    pub history_window: Option<usize>,
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: EmulatorArgs) -> Result<()> {
    let options = kopf_testing::ServeOptions {
        bind: Some(args.bind),
        kubeconfig: args.kubeconfig,
        files: args.files,
        history_window: args.history_window,
    };
    kopf_testing::serve_until_signal(options).await?;
    Ok(())
}
