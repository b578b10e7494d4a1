//! Peering between operators: Kopf-compatible KopfPeering objects, and Lease elections.

use crate::operator::OperatorContext;

/// Starts peering (keep-alives and the pause decision) unless the operator is standalone.
pub async fn start(_context: &OperatorContext) -> anyhow::Result<()> {
    Ok(())
}
