//! Peering between operators: Kopf-compatible `KopfPeering`/`ClusterKopfPeering` objects,
//! and Lease elections.
//!
//! Both gate the operator through the pause toggles: `"peering"` is on while a live
//! higher- or same-priority peer exists (or, with mandatory peering, while the peering
//! object is missing); `"lease"` is on while another replica holds the Lease. The
//! reactor stops all watch streams while any toggle is on, and re-lists on resume.
//!
//! On exit, the tasks keep their records alive until [`Peering::shutdown`] is called (after the
//! reactor has let in-flight handlers finish), then remove the keep-alive record and
//! release the Lease.

pub mod keepalive;
pub mod lease;
pub mod records;
pub mod resources;
pub mod sharding;
mod supervision;

use std::{future::Future, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    contexts::OperatorContext,
    options::{RunOptions, detect_own_id},
};

/// The pause toggle of Kopf peering.
pub const PEERING_TOGGLE: &str = "peering";
/// The pause toggle of the Lease election.
pub const LEASE_TOGGLE: &str = "lease";

/// Errors of peering and lease operations.
#[derive(Debug, thiserror::Error)]
pub enum PeeringError {
    /// The API refused or failed a request.
    #[error(transparent)]
    Api(#[from] crate::clients::ApiError),
    /// The peering CRDs are not served by the cluster.
    #[error(
        "the peering resource {0} is not served: install the CRDs with `kopf peering install --apply` \
         (or kubectl apply -f deploy/peering-crds.yaml)"
    )]
    NotInstalled(&'static str),
    /// The `--lease` value is malformed.
    #[error("invalid --lease {0:?}: expected NAME or NAMESPACE/NAME")]
    BadLeaseName(String),
    /// The `--sharding` value is malformed.
    #[error(
        "invalid --sharding {0:?}: expected NAME or NAMESPACE/NAME, the NAME a label value (63 characters at most)"
    )]
    BadRingName(String),
}

/// A spawned Lease loop and the future of its first round.
type Spawned = (JoinHandle<()>, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>);

/// Background tasks that must finish their exit steps (records, lease release).
struct Registered {
    release: CancellationToken,
    task: JoinHandle<()>,
}

/// Peering and the Lease election of a running operator, owned by it:
/// [`Peering::shutdown`] runs their exit steps.
#[derive(Default)]
#[must_use = "the operator awaits Peering::shutdown on exit"]
pub struct Peering {
    registered: Vec<Registered>,
    /// The Lease of `--lease` or the ring of `--sharding` hands this replica's objects
    /// over on exit.
    hands_over: bool,
}

impl Peering {
    /// Keeps a Lease loop for its exit steps, and waits briefly for its first round: a
    /// replica that may not work yet (a follower, a ring member) stays paused from the start.
    async fn hold(
        &mut self,
        release: CancellationToken,
        (task, ready): (JoinHandle<()>, impl Future<Output = ()>),
    ) {
        self.registered.push(Registered { release, task });
        self.hands_over = true;
        let _ = tokio::time::timeout(Duration::from_secs(10), ready).await;
    }

    /// Whether another replica takes this one's objects over once its Lease is released:
    /// the handler calls still running must return first.
    pub fn hands_over(&self) -> bool {
        self.hands_over
    }

    /// Ends peering and the Lease election: removes this operator's keep-alive records
    /// and releases the Lease. Call after the reactor stopped (in-flight handlers
    /// finished).
    pub async fn shutdown(self) {
        for r in &self.registered {
            r.release.cancel();
        }
        for r in self.registered {
            if tokio::time::timeout(Duration::from_secs(5), r.task)
                .await
                .is_err()
            {
                tracing::warn!(target: "kopf.peering", "Peering did not finish its exit steps in time.");
            }
        }
    }
}

/// Starts peering (keep-alives and the pause decision) unless the operator is
/// standalone, and the Lease election if `--lease` is given. Returns once the initial
/// decision is made (so that a paused operator never starts its watch streams).
pub async fn start(context: &OperatorContext) -> anyhow::Result<Peering> {
    let mut peering = Peering::default();
    let identity = detect_own_id(false);
    // With a Lease or a ring, the replicas share one peering identity (`lease:NS/NAME`,
    // `sharding:NS/NAME`): they do not conflict with each other as same-priority peers,
    // Kopf peering pauses them as a group, and a new leader or member takes the record
    // over from a dead one without waiting for it to expire.
    if context.options.lease.is_some() && context.options.sharding.is_some() {
        anyhow::bail!("--lease and --sharding exclude each other: one active replica, or all active");
    }
    let release = CancellationToken::new();
    let (credentials, toggles, stop) = (
        context.credentials.clone(),
        context.toggles.clone(),
        context.stop.clone(),
    );
    let elected: Option<(String, Spawned)> = if let Some(lease) = &context.options.lease {
        let config = lease::LeaseConfig::from_options(lease, &context.options, &identity)?;
        let shared = format!("lease:{}/{}", config.namespace, config.name);
        let (task, ready) = lease::spawn(credentials, config, toggles, stop, release.clone());
        Some((shared, (task, Box::pin(ready))))
    } else if let Some(ring) = &context.options.sharding {
        let config = ring_config(ring, &context.options, &identity)?;
        let shared = format!("sharding:{}", config.describe());
        let (task, ready) = sharding::spawn(credentials, config, toggles, stop, release.clone());
        Some((shared, (task, Box::pin(ready))))
    } else {
        None
    };
    let shared_identity = elected.is_some();
    let mut peering_identity = identity.clone();
    if let Some((shared, spawned)) = elected {
        peering_identity = shared;
        peering.hold(release, spawned).await;
    }
    if context.settings.peering.standalone {
        tracing::debug!(target: "kopf.peering", "Standalone mode: no peering.");
        return Ok(peering);
    }
    let mut settings = context.settings.peering.clone();
    if let Some(lifetime) = context.options.environment.peering_lifetime {
        settings.lifetime = lifetime;
    }
    let clusterwide = context.options.clusterwide || context.options.namespaces.is_empty();
    let config = keepalive::PeeringConfig {
        identity: peering_identity,
        shared_identity,
        settings,
        clusterwide,
        namespaces: context.options.namespaces.clone(),
    };
    let release = CancellationToken::new();
    let (task, ready) = supervision::spawn(
        context.client.clone(),
        config,
        context.toggles.clone(),
        context.stop.clone(),
        release.clone(),
    );
    peering.registered.push(Registered { release, task });
    let _ = tokio::time::timeout(Duration::from_secs(10), ready).await;
    Ok(peering)
}

/// The ring of `--sharding`: as `--lease` names its Lease, the name also a label value.
fn ring_config(
    value: &str,
    options: &RunOptions,
    identity: &str,
) -> Result<sharding::RingConfig, PeeringError> {
    let lease = lease::LeaseConfig::from_options(value, options, identity)
        .map_err(|_| PeeringError::BadRingName(value.to_owned()))?;
    let label_like =
        lease.name.len() <= 63 && !lease.name.starts_with(['-', '.']) && !lease.name.ends_with(['-', '.']);
    if !label_like {
        return Err(PeeringError::BadRingName(value.to_owned()));
    }
    Ok(sharding::RingConfig { lease })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_names_must_be_label_values() {
        let options = RunOptions::default();
        let ring = ring_config("ops/kopf-ring", &options, "me").unwrap();
        assert_eq!(ring.describe(), "ops/kopf-ring");
        assert!(ring.member_lease().starts_with("kopf-ring-"));
        let long = "r".repeat(64);
        for bad in ["", "Upper", "a/b/c", "-ring", "ring.", long.as_str()] {
            assert!(ring_config(bad, &options, "me").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identity_has_kopf_shape() {
        // POD_ID may be set in some environments: only check the generated shape otherwise.
        if std::env::var("POD_ID").is_ok() {
            return;
        }
        let id = detect_own_id(false);
        let parts: Vec<&str> = id.split('/').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert!(parts[0].contains('@'));
        assert_eq!(parts[1].len(), 14);
        assert_eq!(parts[2].len(), 3);
        assert!(!detect_own_id(true).contains('/'));
    }
}
