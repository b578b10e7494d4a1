//! What the operator-level parts share: the connection, the plugins, the settings, the
//! options, the pause toggles and the stop token.
//!
//! Kopf passes these to each task of `spawn_tasks` as separate arguments (`settings`,
//! `registry`, `vault`, `memo`, the toggles and flags); here they travel together as one
//! [`OperatorContext`], built by [`crate::operator`] and read by activities, probing,
//! peering and admission.

use std::sync::Arc;

use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::clients::auth;
use crate::observability::metrics::Metrics;
use crate::options::RunOptions;
use crate::plugin::PluginSet;
use crate::settings::OperatorSettings;
use crate::signals::{PauseToggles, Readiness};

/// What the operator-level parts (activities, probes, peering, admission, ...) share.
/// Each part's `start` spawns its tasks, which end when `stop` is cancelled.
#[derive(Clone)]
pub struct OperatorContext {
    /// The API client.
    pub client: Client,
    /// The configuration the client was first built from.
    pub config: kube::Config,
    /// The credentials in force, renewed on 401 (see [`crate::clients::auth`]).
    pub credentials: Arc<auth::Credentials>,
    /// The loaded plugins.
    pub plugins: PluginSet,
    /// The settings in force (after startup handlers).
    pub settings: OperatorSettings,
    /// The command-line options.
    pub options: RunOptions,
    /// Pause toggles: peering and lease set theirs; any pauses the watch streams.
    pub toggles: PauseToggles,
    /// What the replica waits for before it is ready (the readiness endpoint).
    pub readiness: Arc<Readiness>,
    /// Cancelled when the operator stops.
    pub stop: CancellationToken,
    /// This operator's metrics (served at `/metrics`).
    pub metrics: Metrics,
}
