//! `kopf run --sharding [NS/]NAME`: active replicas split the objects among themselves.
//!
//! Membership: one `coordination.k8s.io/v1` Lease per replica, labelled
//! `kopf.dev/sharding=NAME`, renewed like the `--lease` elector's (own thread and client,
//! a deadline per round, a watchdog). A member is live while its Lease changes within its
//! duration, as observed locally (client-go's rule; clocks do not matter).
//!
//! Hand-over (docs/scale-out.md): the live members form a view; a replica works only
//! under a view that every member of it has acknowledged. A replica that sees the view
//! change pauses (the `"sharding"` toggle), waits until the reactor has stopped (handlers
//! finished, daemons and timers stopped, memory dropped), and only then publishes the new
//! view's id in its Lease (`kopf.dev/sharding-view`). Once every live member publishes
//! the same id, each takes its share of that view ([`Assignment`]) and resumes. Members
//! that left are out of the view only after their Lease expired (or was deleted on a
//! graceful exit); a member that cannot renew pauses itself before that.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use kube::Client;
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::lease::{LeaseConfig, elector_client, exit_step, micro_time, on_own_thread, replace};
use crate::{
    clients::{ApiError, auth::Credentials, patching, requests},
    signals::{
        PauseToggles,
        shards::{self, Assignment, View},
    },
};

/// The pause toggle of sharding: on while this replica works under no acknowledged view.
pub const SHARDING_TOGGLE: &str = "sharding";
/// The label naming a member Lease's ring.
pub const RING_LABEL: &str = "kopf.dev/sharding";
/// The annotation in which a member acknowledges a view (its id).
pub const VIEW_ANNOTATION: &str = "kopf.dev/sharding-view";
/// A member Lease unchanged for this many of its durations belongs to a member that is
/// gone (killed, never back): the lowest live member deletes it. Long past the one
/// duration after which it is counted out, so a slow member is never mistaken for one.
const GONE_AFTER_DURATIONS: u32 = 3;

/// Which ring, and this member's Lease in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// The ring's namespace and name, this member's identity and the Lease duration.
    pub lease: LeaseConfig,
}

impl RingConfig {
    /// This member's Lease name: the ring's name and a hash of the identity (identities
    /// hold characters names may not).
    pub fn member_lease(&self) -> String {
        format!(
            "{}-{:012x}",
            self.lease.name,
            shards::hash(&self.lease.identity) >> 16
        )
    }

    fn collection_url(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.lease.namespace
        )
    }

    fn member_url(&self) -> String {
        format!("{}/{}", self.collection_url(), self.member_lease())
    }

    fn list_url(&self) -> String {
        format!(
            "{}?labelSelector={RING_LABEL}%3D{}",
            self.collection_url(),
            self.lease.name
        )
    }

    /// `ns/name`, for logs.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.lease.namespace, self.lease.name)
    }
}

/// Another member as its Lease shows it.
#[derive(Debug, Clone)]
struct Peer {
    identity: String,
    view: Option<String>,
}

/// A member Lease left by a member that is gone: the version seen, so that deleting it
/// fails if it changes meanwhile.
#[derive(Debug, Clone)]
struct Gone {
    name: String,
    uid: String,
    version: String,
    unchanged: Duration,
}

/// What one round decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Working under an acknowledged view, unchanged.
    Working,
    /// The view changed: this replica paused to hand over.
    Paused,
    /// Waiting for the reactor to stop, or for other members to acknowledge.
    Waiting,
    /// Every member acknowledged the view: this replica works on its share now.
    Resumed,
}

/// One replica's side of the ring.
pub struct Ring {
    client: Client,
    config: RingConfig,
    toggles: PauseToggles,
    /// Other members' Leases: the last resourceVersion seen and when it was first seen.
    observed: HashMap<String, (String, Instant)>,
    /// The view id this replica's Lease acknowledges.
    acked: Option<String>,
    /// The view this replica works under (its toggle is off exactly then).
    active: Option<View>,
    /// When the last successful renewal's round started.
    last_renew: Option<Instant>,
    /// Whether this replica's Lease exists (so that exit deletes it).
    created: bool,
    /// Member Leases unchanged for [`GONE_AFTER_DURATIONS`] durations, from the last list.
    gone: Vec<Gone>,
}

impl Ring {
    /// A member that works on nothing yet (its toggle is on).
    pub fn new(client: Client, config: RingConfig, toggles: PauseToggles) -> Self {
        hold(&toggles, &config);
        Self {
            client,
            config,
            toggles,
            observed: HashMap::new(),
            acked: None,
            active: None,
            last_renew: None,
            created: false,
            gone: Vec::new(),
        }
    }

    /// The view this replica works under, if any.
    #[cfg(test)]
    pub fn active(&self) -> Option<&View> {
        self.active.as_ref()
    }

    /// A round with a deadline: the round timeout, and while working no later than the
    /// renew deadline (the watchdog: a replica that cannot renew stops working before
    /// the others may count it out).
    pub async fn bounded_round(&mut self) -> Result<Step, ApiError> {
        let mut limit = self.config.lease.round_timeout();
        if self.active.is_some() {
            limit = limit.min(self.renew_deadline_at().saturating_duration_since(Instant::now()));
        }
        let result = match tokio::time::timeout(limit, self.round()).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Request(format!(
                "no answer within {limit:?} (the sharding round was abandoned)"
            ))),
        };
        if result.is_err() && self.active.is_some() && Instant::now() >= self.renew_deadline_at() {
            self.stand_down();
            return Ok(Step::Paused);
        }
        result
    }

    fn renew_deadline_at(&self) -> Instant {
        self.last_renew
            .map_or_else(Instant::now, |t| t + self.config.lease.renew_deadline())
    }

    /// One round: reads the ring, renews this member's Lease (with its acknowledgement),
    /// and pauses or resumes as the protocol says.
    pub async fn round(&mut self) -> Result<Step, ApiError> {
        let started = Instant::now();
        let list = patching::get(&self.client, &self.config.list_url()).await?;
        let items = list
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let own_name = self.config.member_lease();
        let own = items.iter().find(|l| lease_name(l) == Some(&own_name)).cloned();
        let peers = self.live_peers(&items, &own_name);
        let view = View::new(
            peers
                .iter()
                .map(|p| p.identity.clone())
                .chain([self.config.lease.identity.clone()]),
        );
        let mut step = Step::Waiting;
        if self.active.as_ref().is_some_and(|active| *active != view) {
            self.stand_down();
            step = Step::Paused;
        }
        if self.active.is_some() {
            step = Step::Working;
        } else if self.toggles.is_stopped() {
            // Nothing runs here any more: safe to say so for this view.
            self.acked = Some(view.id().to_owned());
        }
        self.renew(own).await?;
        self.last_renew = Some(started);
        let all_acked = peers.iter().all(|p| p.view.as_deref() == Some(view.id()));
        let cleans_up = view.members().first() == Some(&self.config.lease.identity);
        if self.active.is_none() && self.acked.as_deref() == Some(view.id()) && all_acked {
            self.take_up(view);
            step = Step::Resumed;
        }
        if cleans_up {
            self.delete_gone().await;
        }
        Ok(step)
    }

    /// Deletes the Leases of members gone for [`GONE_AFTER_DURATIONS`] durations (done by
    /// the lowest live member only, to spare requests). Each delete is conditional on the
    /// version seen, so a Lease renewed meanwhile stays; failures wait for the next round.
    async fn delete_gone(&mut self) {
        for gone in std::mem::take(&mut self.gone) {
            let url = format!("{}/{}", self.config.collection_url(), gone.name);
            match delete_lease(&self.client, &url, Some((&gone.uid, &gone.version))).await {
                Ok(true) => tracing::info!(
                    target: "kopf.peering",
                    "Sharding ring {}: deleted the Lease {} of a member gone for {}s.",
                    self.config.describe(),
                    gone.name,
                    gone.unchanged.as_secs()
                ),
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    target: "kopf.peering",
                    "Sharding ring {}: cannot delete the Lease {} of a member gone: {error}",
                    self.config.describe(),
                    gone.name
                ),
            }
        }
    }

    /// The other members whose Leases are live (held and changed within their duration).
    fn live_peers(&mut self, items: &[Value], own_name: &str) -> Vec<Peer> {
        let mut peers = Vec::new();
        let mut seen = HashMap::new();
        self.gone.clear();
        for lease in items {
            let Some(name) = lease_name(lease).filter(|n| *n != own_name) else {
                continue;
            };
            let rv = text(lease, "/metadata/resourceVersion").unwrap_or_default();
            let since = match self.observed.get(name) {
                Some((seen_rv, at)) if seen_rv == rv => *at,
                _ => Instant::now(),
            };
            seen.insert(name.to_owned(), (rv.to_owned(), since));
            let duration = lease
                .pointer("/spec/leaseDurationSeconds")
                .and_then(Value::as_u64)
                .map_or(self.config.lease.duration, Duration::from_secs);
            let holder = text(lease, "/spec/holderIdentity").filter(|h| !h.is_empty());
            if since.elapsed() >= duration * GONE_AFTER_DURATIONS {
                self.gone.push(Gone {
                    name: name.to_owned(),
                    uid: text(lease, "/metadata/uid").unwrap_or_default().to_owned(),
                    version: rv.to_owned(),
                    unchanged: since.elapsed(),
                });
            }
            if let Some(identity) = holder
                && since.elapsed() < duration
            {
                peers.push(Peer {
                    identity: identity.to_owned(),
                    view: text(
                        lease,
                        &format!("/metadata/annotations/{}", escape(VIEW_ANNOTATION)),
                    )
                    .map(str::to_owned),
                });
            }
        }
        self.observed = seen;
        peers
    }

    /// Stops working: owns nothing, pauses; the acknowledgement follows once the reactor
    /// has stopped.
    fn stand_down(&mut self) {
        if self.active.take().is_some() {
            tracing::info!(
                target: "kopf.peering",
                "Sharding ring {}: the members changed; pausing to hand objects over.",
                self.config.describe()
            );
        }
        self.toggles.shards().assign(None);
        self.toggles.set(SHARDING_TOGGLE, true);
    }

    /// Starts working on this replica's share of an acknowledged view.
    fn take_up(&mut self, view: View) {
        self.toggles
            .shards()
            .assign(Assignment::compute(&view).map(Arc::new));
        tracing::info!(
            target: "kopf.peering",
            "Sharding ring {}: working on this replica's share of {} members (view {}).",
            self.config.describe(),
            view.members().len(),
            view.id()
        );
        self.active = Some(view);
        self.toggles.set(SHARDING_TOGGLE, false);
    }

    /// Creates or renews this member's Lease, carrying the acknowledged view.
    async fn renew(&mut self, own: Option<Value>) -> Result<(), ApiError> {
        let now = micro_time(jiff::Timestamp::now());
        let Some(mut lease) = own else {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.config.member_lease(),
                    "namespace": self.config.lease.namespace,
                    "labels": {RING_LABEL: self.config.lease.name},
                    "annotations": {VIEW_ANNOTATION: self.acked.clone().unwrap_or_default()},
                },
                "spec": self.spec(&now),
            });
            patching::create(&self.client, &self.config.collection_url(), &lease).await?;
            self.created = true;
            return Ok(());
        };
        lease["spec"] = self.spec(&now);
        lease["metadata"]["annotations"][VIEW_ANNOTATION] = json!(self.acked.clone().unwrap_or_default());
        replace(&self.client, &self.config.member_url(), &lease).await?;
        self.created = true;
        Ok(())
    }

    fn spec(&self, now: &str) -> Value {
        json!({
            "holderIdentity": self.config.lease.identity,
            "leaseDurationSeconds": self.config.lease.duration.as_secs().max(1),
            "renewTime": now,
        })
    }

    /// Leaves the ring: deletes this member's Lease, so that the others hand its objects
    /// over at once. Call only after the reactor stopped.
    pub async fn leave(&mut self) -> Result<bool, ApiError> {
        self.stand_down();
        if !self.created {
            return Ok(false);
        }
        delete_lease(&self.client, &self.config.member_url(), None).await
    }
}

/// Deletes a Lease; with `(uid, resourceVersion)`, only if it is still that version
/// (preconditions). `Ok(false)` if it is gone already or has changed.
async fn delete_lease(client: &Client, url: &str, version: Option<(&str, &str)>) -> Result<bool, ApiError> {
    let body = match version {
        Some((uid, rv)) => {
            let mut preconditions = json!({"resourceVersion": rv});
            if !uid.is_empty() {
                preconditions["uid"] = json!(uid);
            }
            let options =
                json!({"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions});
            serde_json::to_vec(&options).map_err(|e| ApiError::Request(e.to_string()))?
        }
        None => Vec::new(),
    };
    let request = http::Request::delete(url)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| ApiError::Request(e.to_string()))?;
    match requests::request_json(client, request).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}

fn lease_name(lease: &Value) -> Option<&str> {
    text(lease, "/metadata/name")
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// A JSON-pointer token (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Pauses the replica and makes it own nothing until a view is acknowledged.
fn hold(toggles: &PauseToggles, config: &RingConfig) {
    toggles.set(SHARDING_TOGGLE, true);
    toggles.shards().enable(&config.lease.identity);
}

/// Spawns the ring loop on a thread of its own: the `"sharding"` toggle is on from now
/// until every member acknowledged a view. The returned future resolves after the first
/// round. The task renews until `release` (or a while after `stop`), then leaves.
pub fn spawn(
    credentials: Arc<Credentials>,
    config: RingConfig,
    toggles: PauseToggles,
    stop: CancellationToken,
    release: CancellationToken,
) -> (JoinHandle<()>, impl Future<Output = ()> + Send + 'static) {
    // At once, not on the ring's thread: the reactor must not start unsharded meanwhile.
    hold(&toggles, &config);
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let task = on_own_thread("the sharding ring", move || {
        keep(credentials, config, toggles, stop, release, ready_tx)
    });
    (task, async move {
        let _ = ready_rx.await;
    })
}

/// The ring loop (see [`spawn`]).
async fn keep(
    credentials: Arc<Credentials>,
    config: RingConfig,
    toggles: PauseToggles,
    stop: CancellationToken,
    release: CancellationToken,
    ready_tx: oneshot::Sender<()>,
) {
    let mut ready_tx = Some(ready_tx);
    let client = match elector_client(&credentials, &config.lease) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(target: "kopf.peering", "Cannot build the sharding ring's client: {error}");
            return;
        }
    };
    let mut generation = credentials.generation();
    let where_ = config.describe();
    tracing::info!(
        target: "kopf.peering",
        "Joining the sharding ring {where_} as {:?} (Lease {}).",
        config.lease.identity,
        config.member_lease()
    );
    let mut ring = Ring::new(client, config, toggles);
    let ended = super::keepalive::ended(stop, release);
    tokio::pin!(ended);
    loop {
        // After a re-login, the ring follows the new credentials.
        if credentials.generation() != generation {
            generation = credentials.generation();
            match elector_client(&credentials, &ring.config.lease) {
                Ok(client) => ring.client = client,
                Err(error) => tracing::warn!(target: "kopf.peering", "Sharding ring {where_}: {error}"),
            }
        }
        let result = ring.bounded_round().await;
        if let Err(error) = &result {
            tracing::warn!(target: "kopf.peering", "Sharding ring {where_}: {error}");
        }
        if let Some(tx) = ready_tx.take() {
            let _ = tx.send(());
        }
        let period = match result {
            Ok(Step::Working | Step::Resumed) => ring.config.lease.renew_period(),
            // Hand-overs go quickly; errors are retried as the elector does.
            Ok(Step::Paused | Step::Waiting) => ring.config.lease.duration / 15,
            Err(_) => ring.config.lease.retry_period(),
        };
        tokio::select! {
            _ = &mut ended => break,
            _ = tokio::time::sleep(period.max(Duration::from_millis(100))) => {}
        }
    }
    let timeout = ring.config.lease.round_timeout();
    let done = format!("Left the sharding ring {where_}.");
    exit_step(
        timeout,
        ring.leave(),
        &done,
        &format!("leave the sharding ring {where_}"),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peering::lease::tests::cluster;
    use kopf_testing::EmulatorHandle;

    fn member(client: &Client, identity: &str, millis: u64) -> (Ring, PauseToggles) {
        let mut lease = LeaseConfig::parse("default/ring", "default", identity).unwrap();
        lease.duration = Duration::from_millis(millis);
        let toggles = PauseToggles::default();
        (
            Ring::new(client.clone(), RingConfig { lease }, toggles.clone()),
            toggles,
        )
    }

    fn acked(emu: &EmulatorHandle, ring: &Ring) -> Option<String> {
        let lease = lease_of(emu, ring)?;
        text(&lease, "/metadata/annotations/kopf.dev~1sharding-view").map(str::to_owned)
    }

    fn lease_of(emu: &EmulatorHandle, ring: &Ring) -> Option<Value> {
        emu.get_object(
            "coordination.k8s.io/v1",
            "leases",
            Some("default"),
            &ring.config.member_lease(),
        )
    }

    /// Members `a` and `b` (Leases of `millis`), working on a view of both: neither
    /// runs a reactor, so each stands down, acknowledges and resumes in one round.
    async fn two_working(client: &Client, millis: u64) -> ((Ring, PauseToggles), (Ring, PauseToggles)) {
        let (mut a, a_toggles) = member(client, "a", millis);
        let (mut b, b_toggles) = member(client, "b", millis);
        assert_eq!(a.round().await.unwrap(), Step::Resumed);
        assert_eq!(b.round().await.unwrap(), Step::Waiting);
        assert_eq!(a.round().await.unwrap(), Step::Resumed);
        assert_eq!(b.round().await.unwrap(), Step::Resumed);
        ((a, a_toggles), (b, b_toggles))
    }

    /// The keys each gate lets through, out of `keys`.
    fn owned(toggles: &PauseToggles, keys: &[serde_json::Value]) -> Vec<usize> {
        (0..keys.len())
            .filter(|i| toggles.shards().owns(&keys[*i]))
            .collect()
    }

    #[tokio::test]
    async fn a_joiner_waits_until_the_working_member_has_stopped_and_acknowledged() {
        let (emu, client) = cluster().await;
        let (mut a, a_toggles) = member(&client, "a", 60_000);
        let (mut b, b_toggles) = member(&client, "b", 60_000);
        let keys: Vec<Value> = (0..200)
            .map(|i| json!({"metadata": {"name": format!("o{i}"), "namespace": "default"}}))
            .collect();
        assert!(
            owned(&a_toggles, &keys).is_empty(),
            "owns objects before any view"
        );
        assert_eq!(a.round().await.unwrap(), Step::Resumed);
        assert!(!a_toggles.is_paused());
        assert_eq!(owned(&a_toggles, &keys).len(), keys.len());
        // A's reactor runs; B joins and must wait for A.
        assert!(a_toggles.claim_running());
        assert_eq!(b.round().await.unwrap(), Step::Waiting);
        assert!(b_toggles.is_paused());
        assert_eq!(a.round().await.unwrap(), Step::Paused);
        assert!(a_toggles.is_paused() && owned(&a_toggles, &keys).is_empty());
        let two = View::new(["a".to_owned(), "b".to_owned()]);
        assert_ne!(
            acked(&emu, &a).as_deref(),
            Some(two.id()),
            "acknowledged while running"
        );
        for _ in 0..3 {
            assert_eq!(
                b.round().await.unwrap(),
                Step::Waiting,
                "B started before A stopped"
            );
            assert_eq!(a.round().await.unwrap(), Step::Waiting);
        }
        // A's reactor has stopped: it acknowledges, and both take their shares.
        a_toggles.mark_stopped();
        assert_eq!(a.round().await.unwrap(), Step::Resumed);
        assert_eq!(acked(&emu, &a).as_deref(), Some(two.id()));
        assert_eq!(b.round().await.unwrap(), Step::Resumed);
        let (mine, theirs) = (owned(&a_toggles, &keys), owned(&b_toggles, &keys));
        assert!(!mine.is_empty() && !theirs.is_empty(), "{mine:?} {theirs:?}");
        assert_eq!(mine.len() + theirs.len(), keys.len());
        assert!(mine.iter().all(|i| !theirs.contains(i)), "an object owned twice");
        // A stable view: rounds keep working.
        assert_eq!(a.round().await.unwrap(), Step::Working);
        assert_eq!(b.round().await.unwrap(), Step::Working);
        // B leaves gracefully: its Lease is gone, A takes everything over at once.
        assert!(b.leave().await.unwrap());
        assert!(b_toggles.is_paused() && owned(&b_toggles, &keys).is_empty());
        // (A's reactor is stopped: it stands down, acknowledges and resumes in one round.)
        assert_eq!(a.round().await.unwrap(), Step::Resumed);
        assert_eq!(owned(&a_toggles, &keys).len(), keys.len());
    }

    #[tokio::test]
    async fn a_silent_member_is_counted_out_only_after_its_lease_expired() {
        let (_emu, client) = cluster().await;
        let ((mut a, a_toggles), _) = two_working(&client, 1000).await;
        // B dies silently (no rounds): A keeps working with two members for a duration.
        let died = Instant::now();
        loop {
            assert!(
                died.elapsed() < Duration::from_secs(30),
                "B was never counted out"
            );
            let step = a.round().await.unwrap();
            if step != Step::Working {
                assert_eq!(step, Step::Resumed);
                break;
            }
            assert_eq!(a.active().map(|v| v.members().len()), Some(2));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(died.elapsed() >= Duration::from_millis(1000), "counted out early");
        assert_eq!(a.active().map(|v| v.members().len()), Some(1));
        assert!(!a_toggles.is_paused());
    }

    #[tokio::test]
    async fn the_lowest_member_deletes_leases_of_members_long_gone_never_renewed_ones() {
        let (emu, client) = cluster().await;
        let ((mut a, _), (b, _)) = two_working(&client, 1000).await;
        // B dies (kill -9): its Lease stays; A counts it out after one duration, and
        // deletes the Lease only after GONE_AFTER_DURATIONS of them.
        let died = Instant::now();
        while lease_of(&emu, &b).is_some() {
            assert!(died.elapsed() < Duration::from_secs(30), "never deleted");
            a.round().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            died.elapsed() >= Duration::from_millis(1000) * GONE_AFTER_DURATIONS,
            "deleted after {:?}",
            died.elapsed()
        );
        assert!(lease_of(&emu, &a).is_some());
        // A Lease renewed since it was read is never deleted (the precondition).
        let (mut c, _) = member(&client, "c", 1000);
        c.round().await.unwrap();
        let read = lease_of(&emu, &c).unwrap();
        let version = text(&read, "/metadata/resourceVersion").unwrap().to_owned();
        let uid = text(&read, "/metadata/uid").unwrap().to_owned();
        c.round().await.unwrap();
        let deleted = delete_lease(&client, &c.config.member_url(), Some((&uid, &version))).await;
        assert!(!deleted.unwrap(), "a renewed Lease was deleted");
        assert!(lease_of(&emu, &c).is_some());
    }

    #[tokio::test]
    async fn a_member_that_cannot_renew_stops_working_by_its_renew_deadline() {
        let (emu, client) = cluster().await;
        let (mut a, a_toggles) = member(&client, "a", 900);
        assert_eq!(a.bounded_round().await.unwrap(), Step::Resumed);
        let renewed = Instant::now();
        let leases = kopf_testing::FaultMatch {
            resource: Some("leases".into()),
            ..Default::default()
        };
        emu.faults()
            .fail_ratio(1.0, leases, kopf_testing::FaultKind::BlackHole);
        while a.active().is_some() {
            let _ = a.bounded_round().await;
            assert!(
                renewed.elapsed() < Duration::from_secs(5),
                "never stopped working"
            );
        }
        assert!(a_toggles.is_paused());
        assert!(
            renewed.elapsed() < a.config.lease.duration,
            "stopped after expiry"
        );
        emu.faults().clear();
        emu.shutdown().await;
    }
}
