//! Admission webhooks: the HTTPS server for validate/mutate handlers and the managed
//! webhook configurations.

use crate::operator::OperatorContext;

/// `kopf run` options of the webhook server.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct WebhookArgs {}

/// Starts the webhook server and the configuration managers if webhook handlers exist.
pub async fn start(_context: &OperatorContext) -> anyhow::Result<()> {
    Ok(())
}
