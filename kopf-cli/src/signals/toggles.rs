//! Pausing the operator: named toggles (peering, lease, ...) of which any may pause it.
//!
//! Kopf's `ToggleSet`: the operator is paused while at least one toggle is on. Watch
//! streams stop while paused (in-flight handlers finish) and restart — with a fresh
//! listing — when the last toggle goes off.

use std::collections::BTreeSet;

use tokio::sync::watch;

use crate::observability::metrics;

/// A set of named pause toggles; cheap to clone, all clones share the state.
#[derive(Debug, Clone)]
pub struct PauseToggles {
    sender: watch::Sender<BTreeSet<String>>,
}

impl Default for PauseToggles {
    fn default() -> Self {
        Self::new()
    }
}

impl PauseToggles {
    /// No toggle is on: the operator runs.
    pub fn new() -> Self {
        metrics::replica_active(true);
        Self {
            sender: watch::Sender::new(BTreeSet::new()),
        }
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
            metrics::replica_paused(name, paused);
            metrics::replica_active(set.is_empty());
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
        let toggles = PauseToggles::new();
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
}
