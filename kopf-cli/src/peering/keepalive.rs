//! The running side of Kopf peering: keep-alives in the peering object(s), watching
//! them, and turning the `"peering"` pause toggle on and off.
//!
//! One target per peering object: the cluster-wide `ClusterKopfPeering` (with `-A`), or a
//! `KopfPeering` in each served namespace (with `-n`). The operator pauses while any
//! target says so (Kopf's `operator_paused` toggle set).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use kube::Client;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    PEERING_TOGGLE,
    records::{self, Peer},
    resources::{PeeringResource, Scope},
};
use crate::structs::backoff::sleep_until_opt;
use crate::{
    clients::{
        ApiError, patching,
        watching::{EventType, WatchItem, WatchSettings, watch_continuously},
    },
    settings::PeeringSettings,
    signals::PauseToggles,
    structs::references::NamespacePattern,
};

/// How long the exit steps wait for [`super::shutdown`] after the stop (then give up).
const EXIT_GRACE: Duration = Duration::from_secs(300);
/// How often namespace patterns are re-listed (for `KopfPeering` per namespace).
pub(super) const NAMESPACE_REFRESH: Duration = Duration::from_secs(30);

/// What the peering tasks need to know.
#[derive(Debug, Clone)]
pub struct PeeringConfig {
    /// This operator's identity (the key of its record).
    pub identity: String,
    /// The identity is shared by Lease replicas: only the Lease holder removes the record
    /// on exit.
    pub shared_identity: bool,
    /// `settings.peering`: name, priority, lifetime, mandatory, stealth.
    pub settings: PeeringSettings,
    /// Use the `ClusterKopfPeering`; else a `KopfPeering` per namespace.
    pub clusterwide: bool,
    /// `-n` values (names or patterns, possibly comma-separated), for the namespaced mode.
    pub namespaces: Vec<String>,
}

impl PeeringConfig {
    pub(super) fn scope(&self) -> Scope {
        if self.clusterwide {
            Scope::Cluster
        } else {
            Scope::Namespaced
        }
    }

    pub(super) fn patterns(&self) -> Vec<NamespacePattern> {
        crate::structs::references::namespace_parts(&self.namespaces)
            .map(NamespacePattern::new)
            .collect()
    }

    /// Kopf's keep-alive period: `min(lifetime, max(1, lifetime - rand(5..=10)))`.
    fn keepalive_period(&self) -> Duration {
        let lifetime = self.settings.lifetime.max(1);
        let jitter: u64 = rand::random_range(5..=10);
        Duration::from_secs(lifetime.min(lifetime.saturating_sub(jitter).max(1)))
    }
}

/// Which targets currently want the operator paused; drives the `"peering"` toggle.
#[derive(Debug, Clone)]
pub struct PauseBoard {
    toggles: PauseToggles,
    paused: Arc<Mutex<BTreeSet<String>>>,
}

impl PauseBoard {
    /// A board over the operator's toggles.
    pub fn new(toggles: PauseToggles) -> Self {
        Self {
            toggles,
            paused: Arc::default(),
        }
    }

    /// Records one target's wish; the toggle is on while any target wants a pause.
    pub fn set(&self, target: &str, paused: bool) {
        let mut set = self.paused.lock();
        if paused {
            set.insert(target.to_owned());
        } else {
            set.remove(target);
        }
        self.toggles.set(PEERING_TOGGLE, !set.is_empty());
    }

    /// Whether a target wants a pause.
    pub fn is_set(&self, target: &str) -> bool {
        self.paused.lock().contains(target)
    }
}

/// Completes when the peering/lease tasks must end: on `release`, or some time after `stop`.
pub async fn ended(stop: CancellationToken, release: CancellationToken) {
    tokio::select! {
        _ = release.cancelled() => {}
        _ = async { stop.cancelled().await; tokio::time::sleep(EXIT_GRACE).await } => {}
    }
}

/// Writes (or with `lifetime <= 0`, removes) this operator's record. `Ok(None)` when the
/// peering object does not exist.
pub async fn touch(
    client: &Client,
    resource: &PeeringResource,
    namespace: Option<&str>,
    name: &str,
    identity: &str,
    priority: i64,
    lifetime: i64,
) -> Result<Option<Value>, ApiError> {
    let record =
        (lifetime > 0).then(|| Peer::own(identity, priority, lifetime, jiff::Timestamp::now()).as_value());
    let patch = records::status_patch([(identity, record)]);
    let url = resource.object_url(namespace, name);
    match patching::patch(client, &url, patching::PatchType::Merge, &patch).await {
        Ok(body) => Ok(Some(body)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the given records (dead peers) from the peering object.
pub async fn clean(
    client: &Client,
    resource: &PeeringResource,
    namespace: Option<&str>,
    name: &str,
    identities: &[String],
) -> Result<Option<Value>, ApiError> {
    let patch = records::status_patch(identities.iter().map(|id| (id.as_str(), None)));
    let url = resource.object_url(namespace, name);
    match patching::patch(client, &url, patching::PatchType::Merge, &patch).await {
        Ok(body) => Ok(Some(body)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// One peering object: keep-alives, watching, decisions.
pub(super) struct Target {
    pub(super) client: Client,
    pub(super) resource: PeeringResource,
    pub(super) namespace: Option<String>,
    pub(super) config: Arc<PeeringConfig>,
    pub(super) board: PauseBoard,
}

/// The state of a target between events.
struct TargetState {
    /// The latest known peering object (`None`: absent).
    body: Option<Value>,
    /// Re-evaluate then (when a blocking peer expires).
    recheck: Option<Instant>,
    /// The same-priority peers last warned about.
    warned_same: BTreeSet<String>,
    /// Keep-alive due.
    next_touch: Instant,
    /// The last keep-alive (rate limit for re-adding a removed record).
    last_touch: Option<Instant>,
}

impl Target {
    fn key(&self) -> String {
        target_key(self.namespace.as_deref())
    }

    fn name(&self) -> &str {
        &self.config.settings.name
    }

    fn where_(&self) -> String {
        self.resource.describe(self.namespace.as_deref(), self.name())
    }

    /// Watches the peering object until `stop`.
    fn watch(&self, stop: &CancellationToken) -> mpsc::Receiver<WatchItem> {
        let (tx, rx) = mpsc::channel::<WatchItem>(16);
        // Only the peering object itself: RBAC may grant just that name.
        let watch = WatchSettings {
            page_size: 100,
            field_selector: Some(format!("metadata.name={}", self.name())),
            metrics: self.board.toggles.metrics().clone(),
            ..WatchSettings::default()
        };
        tokio::spawn(watch_continuously(
            self.client.clone(),
            self.resource.path(),
            self.namespace.clone(),
            watch,
            tx,
            stop.clone(),
        ));
        rx
    }

    /// Runs the target on a task of its own until `stop` or `release`.
    pub(super) fn spawn(
        self,
        stop: CancellationToken,
        release: CancellationToken,
        ready: oneshot::Sender<()>,
    ) -> JoinHandle<()> {
        tokio::spawn(self.run(stop, release, ready))
    }

    async fn run(self, stop: CancellationToken, release: CancellationToken, ready: oneshot::Sender<()>) {
        let mut state = TargetState {
            body: None,
            recheck: None,
            warned_same: BTreeSet::new(),
            next_touch: Instant::now(),
            last_touch: None,
        };
        // Paused until the first decision: a replica that starts while the API fails must
        // not work beside a live higher-priority peer it has not seen yet.
        self.board.set(&self.key(), true);
        // The first keep-alive (retried until the API answers), then the first decision
        // from the patched object.
        while !self.keepalive(&mut state).await {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = release.cancelled() => return,
                _ = tokio::time::sleep_until(state.next_touch) => {}
            }
        }
        self.evaluate(&mut state, true).await;
        let _ = ready.send(());

        let watch_stop = CancellationToken::new();
        let mut rx = self.watch(&watch_stop);
        let ended = ended(stop, release);
        tokio::pin!(ended);
        let mut listing: Option<Option<Value>> = None;
        loop {
            tokio::select! {
                _ = &mut ended => break,
                item = rx.recv() => {
                    let Some(item) = item else { break };
                    let changed = match item {
                        WatchItem::ListStarted => { listing = Some(None); false }
                        WatchItem::Listed(body) => {
                            if self.is_ours(&body) && let Some(slot) = listing.as_mut() {
                                *slot = Some(body);
                            }
                            false
                        }
                        WatchItem::ListDone => {
                            let found = listing.take().flatten();
                            self.accept(&mut state, found, true)
                        }
                        WatchItem::Event(kind, body) => {
                            if !self.is_ours(&body) {
                                false
                            } else if kind == EventType::Deleted {
                                self.accept(&mut state, None, true)
                            } else {
                                self.accept(&mut state, Some(body), false)
                            }
                        }
                    };
                    if changed {
                        self.evaluate(&mut state, false).await;
                    }
                }
                _ = tokio::time::sleep_until(state.next_touch) => {
                    self.keepalive(&mut state).await;
                    self.evaluate(&mut state, false).await;
                }
                _ = sleep_until_opt(state.recheck) => {
                    state.recheck = None;
                    self.evaluate(&mut state, false).await;
                }
            }
        }
        watch_stop.cancel();
        if self.config.shared_identity && self.board.toggles.reasons().contains(super::LEASE_TOGGLE) {
            // A follower: the record belongs to the Lease holder.
            return;
        }
        // Exit: remove our record (Kopf writes lifetime=0, i.e. null).
        let exit = touch(
            &self.client,
            &self.resource,
            self.namespace.as_deref(),
            self.name(),
            &self.config.identity,
            self.config.settings.priority,
            0,
        );
        match tokio::time::timeout(Duration::from_secs(5), exit).await {
            Ok(Ok(_)) => tracing::debug!(target: "kopf.peering", "Removed self from {}.", self.where_()),
            Ok(Err(error)) => {
                tracing::warn!(target: "kopf.peering", "Couldn't remove self from the peering: {error}")
            }
            Err(_) => {
                tracing::warn!(target: "kopf.peering", "Couldn't remove self from the peering in time.")
            }
        }
    }

    fn is_ours(&self, body: &Value) -> bool {
        body.pointer("/metadata/name").and_then(Value::as_str) == Some(self.name())
    }

    /// Takes a newer state of the object; ignores older ones (by numeric resourceVersion)
    /// unless `force`. Returns whether anything changed.
    fn accept(&self, state: &mut TargetState, body: Option<Value>, force: bool) -> bool {
        let rv = |b: &Value| {
            b.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<u64>().ok())
        };
        if !force
            && let (Some(old), Some(new)) = (state.body.as_ref().and_then(rv), body.as_ref().and_then(rv))
            && new < old
        {
            return false;
        }
        state.body = body;
        true
    }

    /// Writes our record; returns whether the API answered (the object or its absence).
    async fn keepalive(&self, state: &mut TargetState) -> bool {
        let lifetime = i64::try_from(self.config.settings.lifetime).unwrap_or(i64::MAX);
        let result = touch(
            &self.client,
            &self.resource,
            self.namespace.as_deref(),
            self.name(),
            &self.config.identity,
            self.config.settings.priority,
            lifetime,
        )
        .await;
        state.last_touch = Some(Instant::now());
        state.next_touch = Instant::now() + self.config.keepalive_period();
        let outcome = match result {
            Ok(Some(body)) => {
                self.accept(state, Some(body), false);
                "ok"
            }
            Ok(None) => {
                state.body = None;
                "not found"
            }
            Err(error) => {
                tracing::warn!(target: "kopf.peering", "Keep-alive in {} failed: {error}", self.where_());
                // Retry sooner than the regular period.
                state.next_touch = Instant::now() + Duration::from_secs(1);
                return false;
            }
        };
        if !self.config.settings.stealth || outcome != "ok" {
            tracing::debug!(target: "kopf.peering", "Keep-alive in {}: {outcome}.", self.where_());
        }
        true
    }

    /// Decides about pausing from the latest peering object. `first`: the target's first
    /// decision, made while it holds its initial pause (not one to announce the end of).
    async fn evaluate(&self, state: &mut TargetState, first: bool) {
        let key = self.key();
        let was_paused = !first && self.board.is_set(&key);
        let Some(body) = state.body.clone() else {
            self.object_absent(&key, was_paused);
            state.recheck = None;
            return;
        };
        let now = jiff::Timestamp::now();
        let peers = records::peers_of(&body);
        let identity = &self.config.identity;
        let decision = records::decide(&peers, identity, self.config.settings.priority, now);
        self.clean_dead(state, &decision).await;
        // Our own record missing (removed by someone, or the object re-created): re-add soon.
        if !peers.iter().any(|p| &p.identity == identity) {
            let soon = state
                .last_touch
                .map_or(Instant::now(), |t| t + Duration::from_secs(1));
            state.next_touch = state.next_touch.min(soon);
        }
        self.pause_or_resume(state, &key, was_paused, &decision, &peers);
        state.recheck = decision.recheck_at.map(|at| {
            let wait = now.duration_until(at);
            let wait = if wait.is_negative() {
                Duration::ZERO
            } else {
                wait.unsigned_abs()
            };
            Instant::now() + wait + Duration::from_millis(50)
        });
    }

    /// Without a peering object: a mandatory peering pauses, an optional one runs.
    fn object_absent(&self, key: &str, was_paused: bool) {
        if self.config.settings.mandatory {
            if !was_paused {
                tracing::warn!(
                    target: "kopf.peering",
                    "The peering object {} does not exist: pausing until it does (mandatory peering).",
                    self.where_()
                );
            }
            self.board.set(key, true);
        } else if self.board.is_set(key) {
            if was_paused {
                tracing::info!(target: "kopf.peering", "The peering object {} is gone: resuming operations.", self.where_());
            }
            self.board.set(key, false);
        }
    }

    /// Removes the expired records of other peers from the peering object.
    async fn clean_dead(&self, state: &mut TargetState, decision: &records::Decision) {
        let identity = &self.config.identity;
        let dead: Vec<String> = decision
            .dead
            .iter()
            .map(|p| p.identity.clone())
            .filter(|id| id != identity)
            .collect();
        if dead.is_empty() {
            return;
        }
        tracing::debug!(target: "kopf.peering", "Cleaning dead peers in {}: {dead:?}", self.where_());
        let namespace = self.namespace.as_deref();
        match clean(&self.client, &self.resource, namespace, self.name(), &dead).await {
            Ok(Some(body)) => {
                self.accept(state, Some(body), false);
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(target: "kopf.peering", "Cannot clean dead peers: {error}"),
        }
    }

    /// Kopf's rule, logged as Kopf logs it: pause for a higher priority, pause everyone
    /// for the same priority (warned once per set of peers), else run.
    fn pause_or_resume(
        &self,
        state: &mut TargetState,
        key: &str,
        was_paused: bool,
        decision: &records::Decision,
        peers: &[Peer],
    ) {
        if !decision.higher.is_empty() {
            if !was_paused {
                tracing::info!(
                    target: "kopf.peering",
                    "Pausing operations in favour of {}.",
                    records::describe(&decision.higher)
                );
            }
            self.board.set(key, true);
            state.warned_same.clear();
        } else if !decision.same.is_empty() {
            let same: BTreeSet<String> = decision.same.iter().map(|p| p.identity.clone()).collect();
            if same != state.warned_same {
                tracing::warn!(
                    target: "kopf.peering",
                    "Possibly conflicting operators with the same priority: {}.",
                    records::describe(&decision.same)
                );
                state.warned_same = same;
            }
            if !was_paused {
                tracing::warn!(target: "kopf.peering", "Pausing all operators, including self: {}", records::describe(peers));
            }
            self.board.set(key, true);
        } else {
            if was_paused {
                tracing::info!(
                    target: "kopf.peering",
                    "Resuming operations after the pause. Conflicting operators with the same priority are gone."
                );
            }
            self.board.set(key, false);
            state.warned_same.clear();
        }
    }
}

/// The pause board's key of a target: its namespace, or `<cluster>`.
pub(super) fn target_key(namespace: Option<&str>) -> String {
    namespace.unwrap_or("<cluster>").to_owned()
}
