//! In-memory indices of `index` handlers, as Kopf's `indexing.py`.
//!
//! An index handler runs on every event of its resource; a JSON-object result merges
//! each key/value into the index under the object, any other non-null result is stored
//! under the `null` key, and a null result keeps the previous values. Entries go away
//! with the object. Handlers of any kind read indices by name through the `index.get`
//! host method (an array of the values stored under a key).
//!
//! Until every indexed resource is fully listed and every listed object indexed, other
//! handlers wait — without holding a worker slot, so a small worker limit cannot
//! deadlock the indexing as it can in Kopf. Meanwhile each object keeps only its newest
//! waiting event (`reactor::processing`), and once the wait exceeds
//! [`INDEXING_TIMEOUT`] the liveness probe fails, naming what is not listed or indexed
//! ([`Indices::stalled`]): an operator whose indices never complete is restarted rather
//! than idle for ever.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::structs::bodies::Body;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::watch;

/// How long other handlers may wait for the indices before the liveness probe fails.
pub const INDEXING_TIMEOUT: Duration = Duration::from_secs(300);
/// Identifies an object in an index: `namespace/name#uid`.
pub type ObjectKey = String;

#[derive(Debug, Default)]
struct Index {
    /// Values by index key (canonical JSON text of the key), then by object.
    by_key: HashMap<String, BTreeMap<ObjectKey, Value>>,
    /// The keys each object contributes to (for removal).
    by_object: HashMap<ObjectKey, Vec<String>>,
}

#[derive(Debug, Default)]
struct Stream {
    listed: bool,
    unindexed: HashSet<String>,
}

/// All indices of an operator, and the readiness of indexed resources.
#[derive(Debug)]
pub struct Indices {
    indices: RwLock<HashMap<String, Index>>,
    streams: Mutex<HashMap<String, Stream>>,
    ready: watch::Sender<bool>,
    /// Since when the indices are not ready (`None` while ready).
    waiting_since: Mutex<Option<Instant>>,
}

impl Default for Indices {
    fn default() -> Self {
        Self {
            indices: RwLock::default(),
            streams: Mutex::default(),
            ready: watch::Sender::new(true),
            waiting_since: Mutex::default(),
        }
    }
}

/// The object key of a body.
pub fn object_key(body: &Value) -> ObjectKey {
    let body = Body::new(body);
    format!(
        "{}/{}#{}",
        body.namespace().unwrap_or_default(),
        body.name().unwrap_or_default(),
        body.uid().unwrap_or_default()
    )
}

impl Indices {
    /// Makes an index known (lookups answer `[]` rather than "unknown index").
    pub fn declare(&self, name: &str) {
        self.indices.write().entry(name.to_owned()).or_default();
    }

    /// Stores a handler's result for an object, replacing what the object had there.
    /// A null result keeps the previous values (Kopf: `None` indexes nothing).
    pub fn store(&self, name: &str, object: &ObjectKey, result: &Value) {
        if result.is_null() {
            return;
        }
        let entries: Vec<(String, Value)> = match result {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (Value::String(k.clone()).to_string(), v.clone()))
                .collect(),
            other => vec![(Value::Null.to_string(), other.clone())],
        };
        let mut indices = self.indices.write();
        let index = indices.entry(name.to_owned()).or_default();
        remove_from(index, object);
        let keys = entries.iter().map(|(k, _)| k.clone()).collect();
        for (key, value) in entries {
            index.by_key.entry(key).or_default().insert(object.clone(), value);
        }
        index.by_object.insert(object.clone(), keys);
    }

    /// Removes an object from an index (its handler failed permanently, or it is gone).
    pub fn remove(&self, name: &str, object: &ObjectKey) {
        if let Some(index) = self.indices.write().get_mut(name) {
            remove_from(index, object);
        }
    }

    /// The values stored under `key`; `None` if no such index exists.
    pub fn get(&self, name: &str, key: &Value) -> Option<Vec<Value>> {
        let indices = self.indices.read();
        let index = indices.get(name)?;
        Some(
            index
                .by_key
                .get(&key.to_string())
                .map(|store| store.values().cloned().collect())
                .unwrap_or_default(),
        )
    }

    /// Every key of an index with the values stored under it (Kopf's mapping API); `None`
    /// if no such index exists.
    pub fn items(&self, name: &str) -> Option<Vec<(Value, Vec<Value>)>> {
        let indices = self.indices.read();
        let index = indices.get(name)?;
        Some(
            index
                .by_key
                .iter()
                .map(|(key, store)| {
                    let key = serde_json::from_str(key).unwrap_or(Value::Null);
                    (key, store.values().cloned().collect())
                })
                .collect(),
        )
    }

    /// A stream of an indexed resource starts: readiness waits for its first listing.
    pub fn stream_started(&self, stream: &str) {
        self.streams.lock().entry(stream.to_owned()).or_default();
        self.update();
    }

    /// A stream stopped for good (its namespace went away).
    pub fn stream_removed(&self, stream: &str) {
        self.streams.lock().remove(stream);
        self.update();
    }

    /// An object arrived in a stream's first listing: it must be indexed before ready.
    pub fn listed(&self, stream: &str, uid: &str) {
        if let Some(s) = self.streams.lock().get_mut(stream)
            && !s.listed
        {
            s.unindexed.insert(uid.to_owned());
        }
    }

    /// A stream's first listing is complete.
    pub fn list_done(&self, stream: &str) {
        if let Some(s) = self.streams.lock().get_mut(stream) {
            s.listed = true;
        }
        self.update();
    }

    /// An object was indexed (or found unindexable).
    pub fn indexed(&self, uid: &str) {
        let mut changed = false;
        for s in self.streams.lock().values_mut() {
            changed |= s.unindexed.remove(uid);
        }
        if changed {
            self.update();
        }
    }

    /// Whether every indexed resource is fully listed and indexed.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// A receiver that turns true when ready.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Why the indices are still not ready after `timeout` of waiting (which resources
    /// are not listed, how many objects are not indexed); `None` while within it.
    pub fn stalled(&self, timeout: Duration) -> Option<String> {
        let since = (*self.waiting_since.lock())?;
        let waited = since.elapsed();
        if waited < timeout {
            return None;
        }
        let streams = self.streams.lock();
        let mut unlisted: Vec<&str> = streams
            .iter()
            .filter(|(_, s)| !s.listed)
            .map(|(name, _)| name.as_str())
            .collect();
        unlisted.sort_unstable();
        let unindexed: usize = streams.values().map(|s| s.unindexed.len()).sum();
        Some(format!(
            "the indices are not ready after {}s (limit {}s): not fully listed: {}; objects not indexed yet: {unindexed}; other handlers wait for them",
            waited.as_secs(),
            timeout.as_secs(),
            if unlisted.is_empty() {
                "none".to_owned()
            } else {
                unlisted.join(", ")
            }
        ))
    }

    fn update(&self) {
        let ready = self
            .streams
            .lock()
            .values()
            .all(|s| s.listed && s.unindexed.is_empty());
        {
            let mut since = self.waiting_since.lock();
            match (ready, *since) {
                (true, _) => *since = None,
                (false, None) => *since = Some(Instant::now()),
                (false, Some(_)) => {}
            }
        }
        self.ready
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }
}

fn remove_from(index: &mut Index, object: &ObjectKey) {
    for key in index.by_object.remove(object).unwrap_or_default() {
        if let Some(store) = index.by_key.get_mut(&key) {
            store.remove(object);
            if store.is_empty() {
                index.by_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dict_results_merge_and_others_go_under_null() {
        let indices = Indices::default();
        indices.declare("by_ns");
        indices.store("by_ns", &"ns/a#1".into(), &json!({"ns": "a", "shared": 1}));
        indices.store("by_ns", &"ns/b#2".into(), &json!({"ns": "b", "shared": 2}));
        indices.store("by_ns", &"ns/c#3".into(), &json!("plain"));
        assert_eq!(
            indices.get("by_ns", &json!("shared")).unwrap(),
            vec![json!(1), json!(2)]
        );
        assert_eq!(indices.get("by_ns", &json!(null)).unwrap(), vec![json!("plain")]);
        // A new result replaces the object's old entries; null keeps them.
        indices.store("by_ns", &"ns/a#1".into(), &json!({"other": true}));
        indices.store("by_ns", &"ns/b#2".into(), &Value::Null);
        assert_eq!(indices.get("by_ns", &json!("shared")).unwrap(), vec![json!(2)]);
        indices.remove("by_ns", &"ns/b#2".into());
        assert_eq!(
            indices.get("by_ns", &json!("shared")).unwrap(),
            Vec::<Value>::new()
        );
        assert_eq!(indices.get("unknown", &json!("x")), None);
    }

    #[test]
    fn ready_after_first_listings_are_indexed() {
        let indices = Indices::default();
        assert!(indices.is_ready());
        indices.stream_started("pods@ns1");
        assert!(!indices.is_ready());
        indices.listed("pods@ns1", "u1");
        indices.list_done("pods@ns1");
        assert!(!indices.is_ready());
        indices.indexed("u1");
        assert!(indices.is_ready());
        // Later listings (relists) do not block again.
        indices.listed("pods@ns1", "u2");
        assert!(indices.is_ready());
    }

    #[test]
    fn indices_waiting_past_the_timeout_say_why() {
        let indices = Indices::default();
        assert_eq!(indices.stalled(Duration::ZERO), None, "ready");
        indices.stream_started("pods@ns1");
        indices.stream_started("secrets@ns1");
        indices.listed("secrets@ns1", "u1");
        indices.list_done("secrets@ns1");
        assert_eq!(
            indices.stalled(Duration::from_secs(60)),
            None,
            "within the timeout"
        );
        let reason = indices.stalled(Duration::ZERO).expect("past the timeout");
        assert!(reason.contains("not fully listed: pods@ns1;"), "{reason}");
        assert!(reason.contains("objects not indexed yet: 1"), "{reason}");
        indices.indexed("u1");
        indices.list_done("pods@ns1");
        assert_eq!(indices.stalled(Duration::ZERO), None, "ready again");
    }
}
