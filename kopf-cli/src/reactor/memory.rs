//! What a per-object worker remembers about its object between runs: the freshest body,
//! the echo of our own patch it waits for, the newest resourceVersion processed, the
//! error count of the throttle, the next retry.

use std::cmp::Ordering;

use serde_json::Value;
use tokio::time::Instant;

use super::queueing::RawEvent;
use crate::{
    settings::{OperatorSettings, seconds},
    structs::{bodies::Body, versions},
};

/// What a worker remembers about one object between runs.
#[derive(Debug, Default)]
pub struct ObjectMemory {
    /// The freshest known body (from the watch or from our own patch responses).
    pub(super) body: Option<Value>,
    /// The object came from a listing and was not fully handled in this process yet.
    pub(super) initial: bool,
    /// The resourceVersion our last patch produced, and how long to wait for its echo.
    pub(super) awaited: Option<(String, Instant)>,
    /// Consecutive unexpected errors (for throttling).
    pub(super) errors: usize,
    /// A digest of the essence last seen (to tell idle timers about changes); a digest,
    /// not a copy, keeps objects with timers small.
    pub(super) essence: Option<u64>,
    /// The object's uid (to stop its daemons and timers when the body is not kept).
    pub(super) uid: Option<String>,
    /// A patch failed without a clear answer: the body must be re-read before use.
    pub(super) stale: bool,
    /// Events that arrived while waiting for the indices to be ready.
    pub(super) pending: Vec<RawEvent>,
    /// When the next delayed handler is due: kept across runs that only see the echo of
    /// our own patch, so that the retry is not forgotten.
    pub(super) retry_at: Option<Instant>,
    /// The resourceVersion of the newest state processed (from events, patch responses
    /// and re-reads): older events are skipped when versions are comparable.
    pub(super) known_version: Option<Box<str>>,
}

impl ObjectMemory {
    /// Where a state of this `version` stands: older than the newest processed (never
    /// go back to it, however late it comes: a watch stream lagging behind our patches
    /// and re-reads for longer than the consistency timeout), and newer than our own
    /// patch whose echo is awaited (never discard it: a listing after a re-list carries
    /// no echo, the patch's event was compacted away). Only comparable versions tell.
    pub(super) fn place(&self, version: Option<&str>) -> (bool, bool) {
        let Some(version) = version else {
            return (false, false);
        };
        let compared = |other: &str| versions::compare(version, other);
        let older = self
            .known_version
            .as_deref()
            .and_then(compared)
            .is_some_and(Ordering::is_lt);
        let newer_than_awaited = self
            .awaited
            .as_ref()
            .and_then(|(awaited, _)| compared(awaited))
            .is_some_and(Ordering::is_gt);
        (older, newer_than_awaited)
    }

    /// Remembers the resourceVersion of `body` as the newest processed.
    pub(super) fn remember_version(&mut self, body: &Value) {
        if let Some(version) = resource_version(body)
            && self.known_version.as_deref() != Some(version)
        {
            self.known_version = Some(version.into());
        }
    }
}

/// Takes the object as the API server answered our patch (or re-read it after a refused
/// one) as the newest state; until its echo arrives, older events are not processed.
pub(super) fn adopt_patched(
    memory: &mut ObjectMemory,
    body: &mut Value,
    fresh: Value,
    settings: &OperatorSettings,
) {
    if let Some(rv) = resource_version(&fresh)
        && Some(rv) != resource_version(body)
    {
        let timeout = seconds(settings.persistence.consistency_timeout);
        memory.awaited = Some((rv.to_owned(), Instant::now() + timeout));
    }
    memory.remember_version(&fresh);
    *body = fresh;
}

fn resource_version(body: &Value) -> Option<&str> {
    Body::new(body).resource_version()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(known: &str, awaited: &str) -> ObjectMemory {
        ObjectMemory {
            known_version: Some(known.into()),
            awaited: Some((awaited.to_owned(), Instant::now())),
            ..ObjectMemory::default()
        }
    }

    #[test]
    fn comparable_versions_place_a_state_and_opaque_ones_never_skip_it() {
        let m = memory("10", "12");
        assert_eq!(m.place(Some("9")), (true, false), "older than processed");
        assert_eq!(
            m.place(Some("11")),
            (false, false),
            "between: the echo may follow"
        );
        assert_eq!(m.place(Some("13")), (false, true), "newer than our own patch");
        // Opaque versions (older servers, other storages) are never ordered: the state
        // is neither skipped as older nor taken as newer; the consistency wait decides.
        for (known, awaited, event) in [("10", "12", "a1"), ("x", "y", "5"), ("010", "12", "9")] {
            assert_eq!(
                memory(known, awaited).place(Some(event)),
                (false, false),
                "{known} {awaited} {event}"
            );
        }
        assert_eq!(m.place(None), (false, false));
    }
}
