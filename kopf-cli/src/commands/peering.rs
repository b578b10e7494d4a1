//! `kopf peering`: administer peering between operators.

use anyhow::Result;
use clap::Args;

/// `kopf peering` arguments.
#[derive(Debug, Args)]
pub struct PeeringArgs {
    /// Log debug details of failures.
    #[arg(short = 'd', long)]
    pub debug: bool,
}

/// Runs the peering subcommand.
pub async fn run(_args: PeeringArgs) -> Result<()> {
    anyhow::bail!("kopf peering is not available in this build yet")
}
