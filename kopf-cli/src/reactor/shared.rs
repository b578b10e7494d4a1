//! What all resource processors, daemons and timers of an operator share.

use std::sync::Arc;

use kube::Client;

use super::{indexing::Indices, stopping::StopRegistry};
use crate::{
    persistence::{diffbase::DiffBaseStorage, progress_storage::ProgressStorage},
    plugin::PluginSet,
    settings::OperatorSettings,
    signals::Readiness,
};

/// What all processors of an operator share.
pub struct Shared {
    /// The API client.
    pub client: Client,
    /// The loaded plugins.
    pub plugins: PluginSet,
    /// The settings in force.
    pub settings: OperatorSettings,
    /// Where progress records live.
    pub progress: ProgressStorage,
    /// Where the diff-base lives.
    pub diffbase: DiffBaseStorage,
    /// Stop flags of running daemons, for the `daemon.*` host methods.
    pub stops: Arc<StopRegistry>,
    /// Cancelled when the operator exits (as opposed to pausing).
    pub exiting: tokio_util::sync::CancellationToken,
    /// The in-memory indices of `index` handlers.
    pub indices: Arc<Indices>,
    /// Which streams have completed their first listing (the readiness endpoint).
    pub readiness: Arc<Readiness>,
    /// The operator's metrics.
    pub metrics: crate::observability::metrics::Metrics,
}
