//! `kopf new`: scaffold an operator crate.

use anyhow::Result;
use clap::Args;

/// `kopf new` arguments.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The crate's name (and directory).
    pub name: String,
}

/// Writes the scaffold.
pub fn run(_args: NewArgs) -> Result<()> {
    anyhow::bail!("kopf new is not available in this build yet")
}
