//! Which peering objects an operator peers in: the detection of the peering resource,
//! and one [`Target`] per wanted namespace (the cluster-wide object with `-A`), started
//! and released as namespaces come and go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::keepalive::{NAMESPACE_REFRESH, PauseBoard, PeeringConfig, Target, ended, target_key};
use super::resources::{self, PeeringResource, Scope};
use crate::clients::{ApiError, patching};
use crate::signals::PauseToggles;
use crate::structs::references;

const DETECTION: &str = "<detection>";

/// Spawns the peering supervisor. The returned future resolves after the first decision
/// (or when peering turns out to be unavailable); the task ends after `release` (or
/// `EXIT_GRACE` after `stop`), having removed this operator's records.
pub fn spawn(
    client: Client,
    config: PeeringConfig,
    toggles: PauseToggles,
    stop: CancellationToken,
    release: CancellationToken,
) -> (JoinHandle<()>, impl Future<Output = ()> + Send + 'static) {
    let (ready_tx, ready_rx) = oneshot::channel();
    let board = PauseBoard::new(toggles);
    let task = tokio::spawn(supervise(client, config, board, stop, release, ready_tx));
    (task, async move {
        let _ = ready_rx.await;
    })
}

/// Peers in every wanted namespace (one [`Target`] each) until `stop` or `release`; the
/// operator stays paused by the detection while a mandatory peering is not served.
pub(super) async fn supervise(
    client: Client,
    config: PeeringConfig,
    board: PauseBoard,
    stop: CancellationToken,
    release: CancellationToken,
    ready_tx: oneshot::Sender<()>,
) {
    let mut ready_tx = Some(ready_tx);
    if config.settings.mandatory {
        board.set(DETECTION, true);
    }
    let Some(resource) = detect_resource(&client, &config, &mut ready_tx, &stop).await else {
        return;
    };
    tracing::debug!(target: "kopf.peering", "Peering via {}/{}.", resource.group, resource.scope.plural());
    let config = Arc::new(config);
    let mut targets = Targets {
        client,
        resource,
        config: config.clone(),
        board: board.clone(),
        running: BTreeMap::new(),
    };
    let mut first = true;
    loop {
        let readies = targets.follow(&stop).await;
        if first {
            first = false;
            for rx in readies {
                let _ = rx.await;
            }
            board.set(DETECTION, false);
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(());
            }
        }
        let refresh = if config.clusterwide || literal_names(&config).is_some() {
            None
        } else {
            Some(NAMESPACE_REFRESH)
        };
        tokio::select! {
            _ = ended(stop.clone(), release.clone()) => break,
            _ = sleep_opt(refresh) => {}
        }
    }
    targets.release_all().await;
}

/// Waits until the peering resource of the scope is served (retrying; a mandatory peering
/// more often); `None` if the operator stops first. The operator is ready after the first
/// attempt, whatever it found.
async fn detect_resource(
    client: &Client,
    config: &PeeringConfig,
    ready_tx: &mut Option<oneshot::Sender<()>>,
    stop: &CancellationToken,
) -> Option<PeeringResource> {
    let mandatory = config.settings.mandatory;
    let scope = config.scope();
    let mut warned = false;
    loop {
        match resources::detect(client, scope).await {
            Ok(Some(resource)) => return Some(resource),
            Ok(None) if !warned => {
                warn_not_served(config, scope);
                warned = true;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(target: "kopf.peering", "Cannot detect the peering resources: {error}")
            }
        }
        if let Some(tx) = ready_tx.take() {
            let _ = tx.send(());
        }
        let retry = if mandatory {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(30)
        };
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// Says (once) that the peering resource is not served, and what the operator does then.
fn warn_not_served(config: &PeeringConfig, scope: Scope) {
    if config.settings.mandatory {
        tracing::warn!(
            target: "kopf.peering",
            "The peering resource {} is not served; staying paused until it is \
             (mandatory peering {:?}). Install it with `kopf peering install --apply`.",
            scope.kind(),
            config.settings.name
        );
    } else {
        tracing::info!(
            target: "kopf.peering",
            "The peering resource {} is not served: running standalone.",
            scope.kind()
        );
    }
}

/// The running [`Target`]s, by namespace (`None`: cluster-wide).
struct Targets {
    client: Client,
    resource: PeeringResource,
    config: Arc<PeeringConfig>,
    board: PauseBoard,
    running: BTreeMap<Option<String>, (CancellationToken, JoinHandle<()>)>,
}

impl Targets {
    /// Starts a target in each wanted namespace that has none and releases those of the
    /// namespaces no longer wanted; returns the new targets' readiness.
    async fn follow(&mut self, stop: &CancellationToken) -> Vec<oneshot::Receiver<()>> {
        let wanted = match wanted_namespaces(&self.client, &self.config).await {
            Ok(wanted) => wanted,
            Err(error) => {
                tracing::warn!(target: "kopf.peering", "Cannot list the namespaces for peering: {error}");
                self.running.keys().cloned().collect()
            }
        };
        let mut readies = Vec::new();
        for namespace in &wanted {
            if !self.running.contains_key(namespace) {
                readies.push(self.start(namespace, stop));
            }
        }
        let gone: Vec<Option<String>> = self
            .running
            .keys()
            .filter(|ns| !wanted.contains(*ns))
            .cloned()
            .collect();
        for namespace in gone {
            if let Some((own_release, handle)) = self.running.remove(&namespace) {
                own_release.cancel();
                let _ = handle.await;
                self.board.set(&target_key(namespace.as_deref()), false);
            }
        }
        readies
    }

    fn start(&mut self, namespace: &Option<String>, stop: &CancellationToken) -> oneshot::Receiver<()> {
        let own_release = CancellationToken::new();
        let (tx, rx) = oneshot::channel();
        let target = Target {
            client: self.client.clone(),
            resource: self.resource.clone(),
            namespace: namespace.clone(),
            config: self.config.clone(),
            board: self.board.clone(),
        };
        let handle = target.spawn(stop.clone(), own_release.clone(), tx);
        self.running.insert(namespace.clone(), (own_release, handle));
        rx
    }

    /// Releases every target at once and waits for them to finish.
    async fn release_all(self) {
        for (own_release, _) in self.running.values() {
            own_release.cancel();
        }
        for (_, (_, handle)) in self.running {
            let _ = handle.await;
        }
    }
}

async fn sleep_opt(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The literal namespace names of `-n`, if all are literal.
fn literal_names(config: &PeeringConfig) -> Option<BTreeSet<String>> {
    config
        .patterns()
        .iter()
        .map(|p| p.specific_name().map(str::to_owned))
        .collect()
}

async fn wanted_namespaces(
    client: &Client,
    config: &PeeringConfig,
) -> Result<BTreeSet<Option<String>>, ApiError> {
    if config.clusterwide {
        return Ok(BTreeSet::from([None]));
    }
    if let Some(names) = literal_names(config) {
        return Ok(names.into_iter().map(Some).collect());
    }
    let patterns = config.patterns();
    let list = patching::get(client, "/api/v1/namespaces").await?;
    Ok(list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ns| ns.pointer("/metadata/name").and_then(Value::as_str))
        .filter(|name| references::match_namespaces(name, &patterns))
        .map(|name| Some(name.to_owned()))
        .collect())
}
