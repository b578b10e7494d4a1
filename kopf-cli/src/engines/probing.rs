//! The liveness endpoint (`--liveness`), serving probe handlers' results as JSON.

use crate::operator::OperatorContext;

/// Starts the liveness endpoint if one is configured.
pub async fn start(_context: &OperatorContext) -> anyhow::Result<()> {
    Ok(())
}
