//! Leader election through a `coordination.k8s.io/v1` Lease: one active replica.
//!
//! Safety comes from optimistic concurrency: every change is a PUT carrying the
//! resourceVersion that was read, so of two replicas racing for the same Lease the
//! second gets `409 Conflict`. As client-go's `leaderelection`, expiry is judged from
//! the locally observed time of the last change (the holder's clock does not matter):
//! a follower takes over only after the Lease stayed unchanged for its whole
//! `leaseDurationSeconds`. A leader that cannot renew for 2/3 of the duration steps
//! down first, so two replicas are never active at once (barring process freezes
//! longer than the duration). On exit, the holder releases the Lease (empty holder),
//! and a follower takes over at its next poll.
//!
//! The step-down must not depend on the API answering: the elector runs on a thread of
//! its own (a busy engine cannot delay it), with a client of its own (short timeouts,
//! not queued behind the engine's requests), every round has a deadline, and a leader's
//! round is cut off at its renew deadline (the watchdog), after which it pauses.

use std::{future::Future, sync::Arc, time::Duration};

use http::header::{ACCEPT, CONTENT_TYPE};
use kube::Client;
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{LEASE_TOGGLE, PeeringError};
use crate::{
    clients::{ApiError, auth::Credentials, connection, patching},
    options::RunOptions,
    signals::PauseToggles,
};

/// The default Lease duration (client-go's default).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(15);

/// Which Lease, who we are, and how long a Lease lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// The holder identity written by this replica.
    pub identity: String,
    /// `leaseDurationSeconds` (whole seconds, at least 1).
    pub duration: Duration,
}

impl LeaseConfig {
    /// Parses `NAME` or `NAMESPACE/NAME`; `NAME` alone goes to `default_namespace`.
    pub fn parse(value: &str, default_namespace: &str, identity: &str) -> Result<Self, PeeringError> {
        let bad = || PeeringError::BadLeaseName(value.to_owned());
        let (namespace, name) = match value.trim().split_once('/') {
            Some((ns, name)) => (ns.trim(), name.trim()),
            None => (default_namespace, value.trim()),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        if !valid(namespace) || !valid(name) {
            return Err(bad());
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: DEFAULT_DURATION,
        })
    }

    /// From `--lease`: the namespace defaults to the only `-n` namespace, else
    /// `POD_NAMESPACE`, else `default`; the duration comes from `KOPF_LEASE_DURATION`.
    pub fn from_options(value: &str, options: &RunOptions, identity: &str) -> Result<Self, PeeringError> {
        let single: Vec<&str> = crate::structs::references::namespace_parts(&options.namespaces).collect();
        let default_ns = match single.as_slice() {
            [one] if !one.contains(['*', '?', '!']) => (*one).to_owned(),
            _ => options
                .environment
                .pod_namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        };
        let mut config = Self::parse(value, &default_ns, identity)?;
        if let Some(duration) = options.environment.lease_duration {
            config.duration = duration;
        }
        Ok(config)
    }

    /// How often the leader renews (a third of the duration).
    pub fn renew_period(&self) -> Duration {
        self.duration / 3
    }

    /// How often followers poll (a fifth of the duration).
    pub fn retry_period(&self) -> Duration {
        self.duration / 5
    }

    /// A leader that has not renewed for this long steps down (2/3 of the duration).
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// The longest one round (a read and a write) may take: a third of the duration, so
    /// that a hung request leaves time for another attempt before the renew deadline.
    pub fn round_timeout(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(100))
    }

    fn url(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
            self.namespace, self.name
        )
    }

    fn collection_url(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.namespace
        )
    }
}

/// `MicroTime`: RFC 3339 with microseconds, UTC.
pub(super) fn micro_time(now: jiff::Timestamp) -> String {
    now.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Replaces an object with a PUT (the body's resourceVersion is the precondition).
pub(super) async fn replace(client: &Client, url: &str, object: &Value) -> Result<Value, ApiError> {
    let body = serde_json::to_vec(object).map_err(|e| ApiError::Request(e.to_string()))?;
    let request = http::Request::put(url)
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .body(body)
        .map_err(|e| ApiError::Request(e.to_string()))?;
    crate::clients::requests::request_json(client, request).await
}

/// One replica's side of the election.
pub struct Elector {
    client: Client,
    config: LeaseConfig,
    /// The last seen resourceVersion of someone else's Lease, and when we saw it change.
    observed: Option<(String, Instant)>,
    leading: bool,
    last_renew: Option<Instant>,
}

impl Elector {
    /// A replica that does not lead yet.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            client,
            config,
            observed: None,
            leading: false,
            last_renew: None,
        }
    }

    /// Whether this replica believes it leads.
    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// The configuration.
    #[cfg(test)]
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One election round: creates, acquires or renews the Lease when possible.
    /// Returns whether this replica leads afterwards. On an error, a leader keeps
    /// leading until its renew deadline passes.
    pub async fn round(&mut self) -> Result<bool, ApiError> {
        match self.try_round().await {
            Ok(leading) => {
                self.leading = leading;
                if leading {
                    self.last_renew = Some(Instant::now());
                }
                Ok(leading)
            }
            Err(error) => {
                self.step_down_if_overdue();
                Err(error)
            }
        }
    }

    /// A round with a deadline: [`LeaseConfig::round_timeout`], and for a leader no later
    /// than its renew deadline (the watchdog: a hung request cannot keep it leading).
    pub async fn bounded_round(&mut self) -> Result<bool, ApiError> {
        let mut limit = self.config.round_timeout();
        if self.leading {
            let left = self.renew_deadline_at().saturating_duration_since(Instant::now());
            limit = limit.min(left);
        }
        match tokio::time::timeout(limit, self.round()).await {
            Ok(result) => result,
            Err(_) => {
                self.step_down_if_overdue();
                Err(ApiError::Request(format!(
                    "no answer within {limit:?} (the Lease round was abandoned)"
                )))
            }
        }
    }

    /// When a leader must have renewed by (now if it never did).
    fn renew_deadline_at(&self) -> Instant {
        self.last_renew
            .map_or_else(Instant::now, |t| t + self.config.renew_deadline())
    }

    fn step_down_if_overdue(&mut self) {
        if self.leading && Instant::now() >= self.renew_deadline_at() {
            self.leading = false;
        }
    }

    async fn try_round(&mut self) -> Result<bool, ApiError> {
        let now = jiff::Timestamp::now();
        let lease = match patching::get(&self.client, &self.config.url()).await {
            Ok(lease) => lease,
            Err(e) if e.is_not_found() => return self.create(now).await,
            Err(e) => return Err(e),
        };
        let holder = lease
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty());
        let rv = lease
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut updated = lease.clone();
        let duration_secs = self.config.duration.as_secs().max(1);
        match holder {
            Some(holder) if holder == self.config.identity => {
                updated["spec"]["renewTime"] = json!(micro_time(now));
                updated["spec"]["leaseDurationSeconds"] = json!(duration_secs);
                self.put(&updated).await
            }
            _ if holder.is_some() && !self.expired(&lease, &rv) => Ok(false),
            _ => {
                let transitions = lease
                    .pointer("/spec/leaseTransitions")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let spec = &mut updated["spec"];
                spec["holderIdentity"] = json!(self.config.identity);
                spec["leaseDurationSeconds"] = json!(duration_secs);
                spec["acquireTime"] = json!(micro_time(now));
                spec["renewTime"] = json!(micro_time(now));
                spec["leaseTransitions"] = json!(if holder.is_some() || transitions > 0 {
                    transitions + 1
                } else {
                    transitions
                });
                self.put(&updated).await
            }
        }
    }

    /// Whether someone else's Lease has not changed for its whole duration (as observed here).
    fn expired(&mut self, lease: &Value, rv: &str) -> bool {
        let duration = lease
            .pointer("/spec/leaseDurationSeconds")
            .and_then(Value::as_u64)
            .map_or(self.config.duration, Duration::from_secs);
        match &self.observed {
            Some((seen, at)) if seen == rv => at.elapsed() >= duration,
            _ => {
                self.observed = Some((rv.to_owned(), Instant::now()));
                false
            }
        }
    }

    async fn create(&mut self, now: jiff::Timestamp) -> Result<bool, ApiError> {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.config.name, "namespace": self.config.namespace},
            "spec": {
                "holderIdentity": self.config.identity,
                "leaseDurationSeconds": self.config.duration.as_secs().max(1),
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": 0,
            },
        });
        match patching::create(&self.client, &self.config.collection_url(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn put(&mut self, lease: &Value) -> Result<bool, ApiError> {
        match replace(&self.client, &self.config.url(), lease).await {
            Ok(_) => Ok(true),
            // Someone else changed it since we read it: not ours (re-read next round).
            Err(e) if e.code() == Some(409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this replica holds it: clears the holder so that a follower
    /// takes over at its next poll rather than after the whole duration.
    pub async fn release(&mut self) -> Result<bool, ApiError> {
        if !self.leading {
            return Ok(false);
        }
        self.leading = false;
        let mut lease = patching::get(&self.client, &self.config.url()).await?;
        if lease.pointer("/spec/holderIdentity").and_then(Value::as_str) != Some(&self.config.identity) {
            return Ok(false);
        }
        let now = micro_time(jiff::Timestamp::now());
        let spec = &mut lease["spec"];
        spec["holderIdentity"] = Value::Null;
        spec["leaseDurationSeconds"] = json!(1);
        spec["renewTime"] = json!(now);
        replace(&self.client, &self.config.url(), &lease).await?;
        Ok(true)
    }
}

/// The elector's own client: the credentials in force, with every connect, read and
/// write bounded by the round timeout, and its own request limit (never queued behind
/// the engine's requests).
pub(super) fn elector_client(credentials: &Credentials, config: &LeaseConfig) -> Result<Client, ApiError> {
    let mut kube_config = credentials.config();
    let timeout = config.round_timeout();
    kube_config.connect_timeout = Some(timeout);
    kube_config.read_timeout = Some(timeout);
    kube_config.write_timeout = Some(timeout);
    connection::counted_client(kube_config, credentials.metrics())
        .map_err(|e| ApiError::Request(e.to_string()))
}

/// Spawns the election loop on a thread of its own: the `"lease"` toggle is on (paused)
/// from now until this replica acquires the Lease. The returned future resolves after
/// the first round. The task keeps renewing until `release` (or a while after `stop`),
/// then releases the Lease.
pub fn spawn(
    credentials: Arc<Credentials>,
    config: LeaseConfig,
    toggles: PauseToggles,
    stop: CancellationToken,
    release: CancellationToken,
) -> (JoinHandle<()>, impl Future<Output = ()> + Send + 'static) {
    toggles.set(LEASE_TOGGLE, true);
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let task = on_own_thread("the Lease elector", move || {
        elect(credentials, config, toggles, stop, release, ready_tx)
    });
    (task, async move {
        let _ = ready_rx.await;
    })
}

/// Runs a Lease loop on a thread and runtime of its own, so that a busy engine cannot
/// delay its renewals (and so its watchdog).
pub(super) fn on_own_thread<F, Fut>(what: &'static str, run: F) -> JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    tokio::task::spawn_blocking(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(target: "kopf.peering", "Cannot start {what}: {error}");
                return;
            }
        };
        runtime.block_on(run());
    })
}

/// The election loop (see [`spawn`]).
async fn elect(
    credentials: Arc<Credentials>,
    config: LeaseConfig,
    toggles: PauseToggles,
    stop: CancellationToken,
    release: CancellationToken,
    ready_tx: oneshot::Sender<()>,
) {
    let mut ready_tx = Some(ready_tx);
    let client = match elector_client(&credentials, &config) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(target: "kopf.peering", "Cannot build the Lease elector's client: {error}");
            return;
        }
    };
    let mut generation = credentials.generation();
    let mut elector = Elector::new(client, config);
    let where_ = format!("{}/{}", elector.config.namespace, elector.config.name);
    tracing::info!(
        target: "kopf.peering",
        "Electing the active replica through the Lease {where_} as {:?}.",
        elector.config.identity
    );
    let ended = super::keepalive::ended(stop, release);
    tokio::pin!(ended);
    loop {
        // After a re-login, the elector follows the new credentials.
        if credentials.generation() != generation {
            generation = credentials.generation();
            match elector_client(&credentials, &elector.config) {
                Ok(client) => elector.client = client,
                Err(error) => tracing::warn!(target: "kopf.peering", "Lease {where_}: {error}"),
            }
        }
        let was_leading = elector.is_leading();
        let result = elector.bounded_round().await;
        if let Err(error) = &result {
            tracing::warn!(target: "kopf.peering", "Lease {where_}: {error}");
        }
        let leading = elector.is_leading();
        if leading && !was_leading {
            tracing::info!(target: "kopf.peering", "Acquired the Lease {where_}: this replica is active.");
            toggles.set(LEASE_TOGGLE, false);
            toggles.metrics().lease_holder(true);
        } else if !leading && was_leading {
            tracing::warn!(target: "kopf.peering", "Lost the Lease {where_}: pausing operations.");
            toggles.set(LEASE_TOGGLE, true);
            toggles.metrics().lease_holder(false);
        } else if !leading && ready_tx.is_some() {
            tracing::info!(target: "kopf.peering", "The Lease {where_} is held by another replica: standing by.");
        }
        if let Some(tx) = ready_tx.take() {
            let _ = tx.send(());
        }
        let period = if leading && result.is_ok() {
            elector.config.renew_period()
        } else {
            elector.config.retry_period()
        };
        tokio::select! {
            _ = &mut ended => break,
            _ = tokio::time::sleep(period.max(Duration::from_millis(100))) => {}
        }
    }
    toggles.metrics().lease_holder(false);
    let timeout = elector.config.round_timeout();
    let done = format!("Released the Lease {where_}.");
    exit_step(
        timeout,
        elector.release(),
        &done,
        &format!("release the Lease {where_}"),
    )
    .await;
}

/// A Lease loop's last request (a release, a leave), bounded by `timeout`; logs `done`
/// if it did something, or that it cannot do `what`.
pub(super) async fn exit_step(
    timeout: Duration,
    step: impl Future<Output = Result<bool, ApiError>>,
    done: &str,
    what: &str,
) {
    match tokio::time::timeout(timeout, step)
        .await
        .unwrap_or_else(|_| Err(ApiError::Request("no answer in time".into())))
    {
        Ok(true) => tracing::info!(target: "kopf.peering", "{done}"),
        Ok(false) => {}
        Err(error) => tracing::warn!(target: "kopf.peering", "Cannot {what}: {error}"),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    pub(in crate::peering) use crate::clients::connection::emulated as cluster;
    use kopf_testing::EmulatorHandle;

    fn config(identity: &str, millis: u64) -> LeaseConfig {
        let mut c = LeaseConfig::parse("default/my-lease", "default", identity).unwrap();
        c.duration = Duration::from_millis(millis);
        c
    }

    fn holder(emu: &EmulatorHandle) -> Option<String> {
        emu.get_object("coordination.k8s.io/v1", "leases", Some("default"), "my-lease")
            .and_then(|l| {
                l.pointer("/spec/holderIdentity")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
    }

    /// Runs rounds of `elector` until it leads, up to `timeout`.
    async fn until_leading(elector: &mut Elector, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if elector.round().await.unwrap() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[test]
    fn names_parse_and_bad_ones_fail() {
        let c = LeaseConfig::parse("kopf-leader", "ops", "me").unwrap();
        assert_eq!((c.namespace.as_str(), c.name.as_str()), ("ops", "kopf-leader"));
        let c = LeaseConfig::parse("other/kopf-leader", "ops", "me").unwrap();
        assert_eq!(c.namespace, "other");
        for bad in ["", "/x", "x/", "Upper", "a/b/c", "sp ace"] {
            assert!(LeaseConfig::parse(bad, "ops", "me").is_err(), "{bad:?}");
        }
        assert_eq!(c.renew_period(), Duration::from_secs(5));
        assert_eq!(c.renew_deadline(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn first_creates_second_follows_until_expiry() {
        let (emu, client) = cluster().await;
        let mut a = Elector::new(client.clone(), config("a", 1000));
        let mut b = Elector::new(client.clone(), config("b", 1000));
        assert!(a.round().await.unwrap());
        assert_eq!(holder(&emu).as_deref(), Some("a"));
        assert!(!b.round().await.unwrap());
        // While `a` renews, `b` never takes over, even after several durations.
        let until = Instant::now() + Duration::from_millis(2500);
        let mut last_renewal = Instant::now();
        while Instant::now() < until {
            assert!(a.round().await.unwrap(), "the leader lost a free renewal");
            last_renewal = Instant::now();
            assert!(
                !b.round().await.unwrap(),
                "the follower took over a renewed lease"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        // `a` dies silently: `b` takes over after a full duration without changes.
        assert!(until_leading(&mut b, Duration::from_secs(10)).await);
        assert!(
            last_renewal.elapsed() >= Duration::from_millis(1000),
            "taken over before expiry"
        );
        assert_eq!(holder(&emu).as_deref(), Some("b"));
        let lease = emu
            .get_object("coordination.k8s.io/v1", "leases", Some("default"), "my-lease")
            .unwrap();
        assert_eq!(lease.pointer("/spec/leaseTransitions"), Some(&json!(1)));
        // The old leader notices at its next round.
        assert!(!a.round().await.unwrap());
        assert!(!a.is_leading());
    }

    #[tokio::test]
    async fn release_hands_over_at_once() {
        let (emu, client) = cluster().await;
        let mut a = Elector::new(client.clone(), config("a", 60_000));
        let mut b = Elector::new(client.clone(), config("b", 60_000));
        assert!(a.round().await.unwrap());
        assert!(!b.round().await.unwrap());
        assert!(a.release().await.unwrap());
        assert_eq!(holder(&emu), None);
        assert!(b.round().await.unwrap(), "a released lease must be free at once");
        assert_eq!(holder(&emu).as_deref(), Some("b"));
        // Releasing when not leading is a no-op.
        assert!(!a.release().await.unwrap());
        assert_eq!(holder(&emu).as_deref(), Some("b"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_replicas_elect_exactly_one() {
        let (emu, client) = cluster().await;
        for round in 0..5 {
            let mut electors: Vec<Elector> = (0..4)
                .map(|i| Elector::new(client.clone(), config(&format!("r{round}-{i}"), 60_000)))
                .collect();
            if round > 0 {
                // Free the lease with a release by its current holder's identity.
                let current = holder(&emu);
                let mut releaser = Elector::new(client.clone(), config(current.as_deref().unwrap(), 60_000));
                releaser.leading = true;
                assert!(releaser.release().await.unwrap());
            }
            let results = futures::future::join_all(electors.iter_mut().map(|e| e.round())).await;
            let winners = results.into_iter().filter(|r| *r.as_ref().unwrap()).count();
            assert_eq!(winners, 1, "round {round}: {winners} winners");
            assert!(holder(&emu).is_some_and(|h| h.starts_with(&format!("r{round}-"))));
        }
    }

    #[tokio::test]
    async fn a_leader_whose_requests_hang_steps_down_by_its_renew_deadline() {
        let (emu, client) = cluster().await;
        let mut a = Elector::new(client.clone(), config("a", 900));
        assert!(a.bounded_round().await.unwrap());
        let renewed = Instant::now();
        let leases = kopf_testing::FaultMatch {
            resource: Some("leases".into()),
            ..Default::default()
        };
        emu.faults()
            .fail_ratio(1.0, leases, kopf_testing::FaultKind::BlackHole);
        while a.is_leading() {
            assert!(a.bounded_round().await.is_err(), "a hung round succeeded");
            assert!(
                renewed.elapsed() < Duration::from_secs(5),
                "a hung leader never stepped down"
            );
        }
        // Stepped down by the renew deadline (a margin for a loaded machine), well before
        // the Lease expires for the followers.
        let after = renewed.elapsed();
        assert!(
            after >= a.config().renew_deadline(),
            "stepped down early: {after:?}"
        );
        assert!(
            after < a.config().duration,
            "stepped down after expiry: {after:?}"
        );
        emu.faults().clear();
        emu.shutdown().await;
    }

    #[tokio::test]
    async fn a_leader_that_cannot_renew_steps_down() {
        let (emu, client) = cluster().await;
        let mut a = Elector::new(client.clone(), config("a", 300));
        assert!(a.round().await.unwrap());
        emu.shutdown().await;
        // Errors within the renew deadline keep the leadership; beyond it, it is lost.
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.is_leading() {
            assert!(a.round().await.is_err());
            assert!(Instant::now() < deadline, "never stepped down");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
