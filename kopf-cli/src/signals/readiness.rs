//! Readiness of a replica: the operator has discovered its resources, every watch stream
//! it runs has completed its first listing, and no pause toggle is on.
//!
//! Kopf has no readiness endpoint; this one lets a Deployment (and a Service in front of
//! the metrics or webhooks) tell a replica that serves from one that is still listing or
//! stands by (paused by peering or by the Lease). Served by the engine's probing (`engines::probing`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::PauseToggles;

/// What a replica waits for before it is ready. Shared by the reactor (which reports
/// streams and listings) and the probing endpoint (which asks).
#[derive(Debug, Default)]
pub struct Readiness {
    discovered: AtomicBool,
    /// Running streams by name: whether the first listing of each is complete.
    streams: Mutex<BTreeMap<String, bool>>,
}

impl Readiness {
    /// The resources are discovered and their streams started.
    pub fn discovered(&self) {
        self.discovered.store(true, Ordering::SeqCst);
    }

    /// A stream starts (or restarts after a pause): it waits for its first listing again.
    pub fn stream_started(&self, stream: &str) {
        self.lock().insert(stream.to_owned(), false);
    }

    /// A stream stopped (its namespace went away, or the operator paused or exits).
    pub fn stream_stopped(&self, stream: &str) {
        self.lock().remove(stream);
    }

    /// A stream's listing is complete.
    pub fn listed(&self, stream: &str) {
        if let Some(listed) = self.lock().get_mut(stream) {
            *listed = true;
        }
    }

    /// Why the replica is not ready (empty when it is): `discovering`, `paused: REASON`
    /// per pause toggle, `listing: STREAM` per stream still listing.
    pub fn unready_reasons(&self, toggles: &PauseToggles) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.discovered.load(Ordering::SeqCst) {
            reasons.push("discovering".to_owned());
        }
        reasons.extend(toggles.reasons().into_iter().map(|r| format!("paused: {r}")));
        reasons.extend(
            self.lock()
                .iter()
                .filter(|(_, listed)| !**listed)
                .map(|(stream, _)| format!("listing: {stream}")),
        );
        reasons
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, BTreeMap<String, bool>> {
        self.streams.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_discovered_listed_and_not_paused() {
        let readiness = Readiness::default();
        let toggles = PauseToggles::default();
        assert_eq!(readiness.unready_reasons(&toggles), ["discovering"]);
        readiness.stream_started("kex");
        readiness.discovered();
        assert_eq!(readiness.unready_reasons(&toggles), ["listing: kex"]);
        readiness.listed("kex");
        assert!(readiness.unready_reasons(&toggles).is_empty());
        toggles.set("peering", true);
        assert_eq!(readiness.unready_reasons(&toggles), ["paused: peering"]);
        // A pause stops the streams; the resumed ones list again.
        readiness.stream_stopped("kex");
        toggles.set("peering", false);
        readiness.stream_started("kex");
        assert_eq!(readiness.unready_reasons(&toggles), ["listing: kex"]);
        readiness.listed("gone");
        readiness.listed("kex");
        assert!(readiness.unready_reasons(&toggles).is_empty());
    }
}
