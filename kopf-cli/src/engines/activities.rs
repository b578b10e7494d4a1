//! Operator-level activities: startup, cleanup, login and probe handlers.

use crate::{operator::OperatorContext, settings::OperatorSettings};

/// Runs the startup handlers (retried until success) and returns the settings they
/// leave; fails when one fails permanently.
pub async fn run_startup(context: &OperatorContext) -> anyhow::Result<OperatorSettings> {
    Ok(context.settings.clone())
}

/// Runs the cleanup handlers when the operator exits.
pub async fn run_cleanup(_context: &OperatorContext) {}
