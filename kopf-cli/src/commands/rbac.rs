//! `kopf rbac`: least-privilege RBAC derived from the plugins' handlers.

use anyhow::Result;
use clap::Args;

/// `kopf rbac` arguments.
#[derive(Debug, Args)]
pub struct RbacArgs {
    /// Log debug details of failures.
    #[arg(short = 'd', long)]
    pub debug: bool,
}

/// Returns the RBAC manifests as YAML text.
pub fn run(_args: RbacArgs) -> Result<String> {
    anyhow::bail!("kopf rbac is not available in this build yet")
}
