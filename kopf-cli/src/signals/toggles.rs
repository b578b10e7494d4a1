//! Pausing the operator: named toggles (peering, lease, ...) of which any may pause it.
//!
//! Kopf's `ToggleSet`: the operator is paused while at least one toggle is on. Watch
//! streams stop while paused (in-flight handlers finish) and restart — with a fresh
//! listing — when the last toggle goes off.

use std::collections::BTreeSet;

use tokio::sync::watch;

use super::shards::ShardGate;
use crate::observability::metrics::Metrics;

/// A set of named pause toggles; cheap to clone, all clones share the state.
#[derive(Debug, Clone)]
pub struct PauseToggles {
    sender: watch::Sender<BTreeSet<String>>,
    /// Whether the reactor runs watch streams (or is still stopping them): a part that
    /// paused it can wait until its work has really stopped (see [`Self::wait_stopped`]).
    running: watch::Sender<bool>,
    /// Which objects this replica owns (`--sharding`; all without it).
    shards: ShardGate,
    /// The operator's metrics: the replica's role follows the toggles.
    metrics: Metrics,
}

impl Default for PauseToggles {
    /// Toggles with metrics of their own (tests, one-shot commands).
    fn default() -> Self {
        Self::new(Metrics::default())
    }
}

impl PauseToggles {
    /// No toggle is on: the operator runs; its role is recorded in `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        metrics.replica_active(true);
        Self {
            sender: watch::Sender::new(BTreeSet::new()),
            running: watch::Sender::new(false),
            shards: ShardGate::default(),
            metrics,
        }
    }

    /// The operator's metrics (the parts that pause it record their role there too).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The reactor is about to start its streams: allowed (and recorded) only if no
    /// toggle is on, atomically with [`Self::set`], so that a part that turned its toggle
    /// on and then saw the reactor stopped cannot be overtaken by a resume.
    pub fn claim_running(&self) -> bool {
        let mut claimed = false;
        self.sender.send_if_modified(|set| {
            claimed = set.is_empty();
            if claimed {
                self.running.send_replace(true);
            }
            false
        });
        claimed
    }

    /// The reactor has stopped its streams and their workers finished.
    pub fn mark_stopped(&self) {
        self.running.send_replace(false);
    }

    /// Whether the reactor is stopped (no streams, no workers).
    pub fn is_stopped(&self) -> bool {
        !*self.running.borrow()
    }

    /// Waits until the reactor is stopped.
    pub async fn wait_stopped(&self) {
        let mut receiver = self.running.subscribe();
        // The sender lives in `self`, so waiting cannot fail.
        let _ = receiver.wait_for(|running| !*running).await;
    }

    /// The gate of owned objects (`--sharding`).
    pub fn shards(&self) -> &ShardGate {
        &self.shards
    }

    /// Turns the toggle `name` on (pause) or off (resume); the replica's role metrics
    /// follow.
    pub fn set(&self, name: &str, paused: bool) {
        self.sender.send_if_modified(|set| {
            let changed = if paused {
                set.insert(name.to_owned())
            } else {
                set.remove(name)
            };
            self.metrics.replica_paused(name, paused);
            self.metrics.replica_active(set.is_empty());
            changed
        });
    }

    /// Whether any toggle is on.
    pub fn is_paused(&self) -> bool {
        !self.sender.borrow().is_empty()
    }

    /// The toggles that are on.
    pub fn reasons(&self) -> BTreeSet<String> {
        self.sender.borrow().clone()
    }

    /// A receiver notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<String>> {
        self.sender.subscribe()
    }

    /// Waits until no toggle is on.
    pub async fn wait_resumed(&self) {
        let mut receiver = self.subscribe();
        // The sender lives in `self`, so waiting cannot fail.
        let _ = receiver.wait_for(BTreeSet::is_empty).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn any_toggle_pauses() {
        let toggles = PauseToggles::default();
        let changes = toggles.subscribe();
        assert!(!toggles.is_paused());
        toggles.set("peering", true);
        toggles.set("lease", true);
        assert!(changes.has_changed().unwrap());
        toggles.set("peering", false);
        assert!(toggles.is_paused());
        assert_eq!(toggles.reasons(), BTreeSet::from(["lease".to_owned()]));
        toggles.set("lease", false);
        toggles.wait_resumed().await;
        assert!(!toggles.is_paused());
    }

    #[tokio::test]
    async fn the_reactor_may_run_only_while_no_toggle_is_on() {
        let toggles = PauseToggles::default();
        assert!(toggles.is_stopped());
        toggles.set("sharding", true);
        assert!(!toggles.claim_running(), "claimed while paused");
        assert!(toggles.is_stopped());
        toggles.set("sharding", false);
        assert!(toggles.claim_running());
        assert!(!toggles.is_stopped());
        toggles.set("sharding", true);
        let waiter = tokio::spawn({
            let toggles = toggles.clone();
            async move { toggles.wait_stopped().await }
        });
        toggles.mark_stopped();
        waiter.await.unwrap();
        assert!(toggles.is_stopped());
    }
}
