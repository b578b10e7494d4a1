//! Memos: per-object containers for values that cannot be serialised (Kopf's `memo`).
//!
//! A [`Memo`] is a map of shared values, `Arc<dyn Any + Send + Sync>`, addressed by a
//! string key ([`Memo::insert`], [`Memo::get`], [`Memo::get_or_insert_with`]) or by the
//! value's type ([`Memo::insert_typed`], [`Memo::typed`], [`Memo::typed_or_insert_with`]).
//! It lives inside the plugin, in memory only: connections, caches, channels, counters.
//!
//! Which memo [`crate::Context::memo`] returns, as in Kopf:
//!
//! * **Resource handlers, daemons, timers, indexers** of one object share the object's
//!   memo, keyed by the object's uid. It starts as a *shallow copy* of the operator memo
//!   (the same values, in a map of its own) when the object's memo is first asked for, and
//!   is dropped when the object is gone: the host tells the plugin after a deletion, or
//!   when the object vanished while the watch was down (a re-list).
//! * **Activities** (startup, login, probe, cleanup) get the operator memo itself
//!   ([`operator_memo`]); what a startup handler puts there is seen by every object
//!   memo created afterwards.
//! * **Admission handlers** (validate, mutate) get a throwaway shallow copy of the
//!   operator memo: what they put there is gone after the call.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! #[kopf::on::startup]
//! fn connect(ctx: &kopf::Context) {
//!     // Shared by all objects: each object's memo starts with this value.
//!     ctx.memo().insert("greeting", String::from("hello"));
//! }
//!
//! #[kopf::on::update("kopfexamples")]
//! fn count(ctx: &kopf::Context) -> kopf::Result<usize> {
//!     // Per object: kept across this object's handler calls, never persisted.
//!     let hits = ctx.memo().get_or_insert_with("hits", || AtomicUsize::new(0))?;
//!     Ok(hits.fetch_add(1, Ordering::Relaxed) + 1)
//! }
//! # fn main() {}
//! ```
//!
//! Values are handed out as `Arc<T>`: use interior mutability (atomics, `Mutex`,
//! `tokio::sync::Mutex`) to change them in place. The per-object memos of a plugin are
//! separate from those of other plugins loaded into the same operator.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

/// A value stored in a memo.
pub type MemoValue = Arc<dyn Any + Send + Sync>;

/// A memo key: a name, or a type (for the typed accessors).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Name(String),
    Type(TypeId),
}

/// Errors of the memo accessors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoError {
    /// The key holds a value of another type than asked for.
    #[error("memo key {key:?} holds a value of another type than {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The type asked for.
        expected: &'static str,
    },
}

/// A container of shared, non-serialisable values (Kopf's `kopf.Memo`). Cloning gives
/// another handle to the *same* map; [`Memo::shallow_copy`] gives a new map with the
/// same values.
#[derive(Clone, Default)]
pub struct Memo {
    map: Arc<RwLock<HashMap<Key, MemoValue>>>,
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("keys", &self.keys())
            .field(
                "typed",
                &self.read().keys().filter(|k| matches!(k, Key::Type(_))).count(),
            )
            .finish()
    }
}

impl Memo {
    /// An empty memo.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<Key, MemoValue>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Key, MemoValue>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A new memo holding the same values (the `Arc`s are cloned, not the values):
    /// Kopf's `copy.copy(memo)`. Keys added to either memo afterwards are not seen by the
    /// other; values changed in place are.
    pub fn shallow_copy(&self) -> Self {
        Self {
            map: Arc::new(RwLock::new(self.read().clone())),
        }
    }

    /// True when both handles refer to the same map.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.map, &other.map)
    }

    /// Stores a value under a key, replacing any earlier one; returns the stored value.
    pub fn insert<T: Any + Send + Sync>(&self, key: impl Into<String>, value: T) -> Arc<T> {
        let value = Arc::new(value);
        self.insert_arc(key, value.clone());
        value
    }

    /// Stores an already shared value under a key, replacing any earlier one.
    pub fn insert_arc<T: Any + Send + Sync>(&self, key: impl Into<String>, value: Arc<T>) {
        self.write().insert(Key::Name(key.into()), value);
    }

    /// The value under a key, if present and of type `T`.
    pub fn get<T: Any + Send + Sync>(&self, key: &str) -> Option<Arc<T>> {
        let value = self.read().get(&Key::Name(key.to_owned())).cloned()?;
        value.downcast::<T>().ok()
    }

    /// The value under a key, whatever its type.
    pub fn get_any(&self, key: &str) -> Option<MemoValue> {
        self.read().get(&Key::Name(key.to_owned())).cloned()
    }

    /// The value under a key, created with `init` if absent. Concurrent callers get the
    /// same value (under a race, `init` may run more than once but only one result is
    /// kept). `init` runs without any lock held, so it may use the memo. Fails if the key
    /// holds a value of another type.
    pub fn get_or_insert_with<T, F>(&self, key: &str, init: F) -> Result<Arc<T>, MemoError>
    where
        T: Any + Send + Sync,
        F: FnOnce() -> T,
    {
        let wrong = || MemoError::WrongType {
            key: key.to_owned(),
            expected: type_name::<T>(),
        };
        if let Some(value) = self.get_any(key) {
            return value.downcast::<T>().map_err(|_| wrong());
        }
        let fresh: MemoValue = Arc::new(init());
        let value = self
            .write()
            .entry(Key::Name(key.to_owned()))
            .or_insert(fresh)
            .clone();
        value.downcast::<T>().map_err(|_| wrong())
    }

    /// Removes a key; true if it was there.
    pub fn remove(&self, key: &str) -> bool {
        self.write().remove(&Key::Name(key.to_owned())).is_some()
    }

    /// True when the key is present.
    pub fn contains(&self, key: &str) -> bool {
        self.read().contains_key(&Key::Name(key.to_owned()))
    }

    /// The named keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .read()
            .keys()
            .filter_map(|k| match k {
                Key::Name(n) => Some(n.clone()),
                Key::Type(_) => None,
            })
            .collect();
        keys.sort();
        keys
    }

    /// The number of entries (named and typed).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when the memo holds nothing.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Removes everything.
    pub fn clear(&self) {
        self.write().clear();
    }

    /// Stores a value under its type, replacing any earlier value of that type; returns
    /// the stored value.
    pub fn insert_typed<T: Any + Send + Sync>(&self, value: T) -> Arc<T> {
        let value = Arc::new(value);
        self.write().insert(Key::Type(TypeId::of::<T>()), value.clone());
        value
    }

    /// The value of type `T`, if stored with [`Memo::insert_typed`].
    pub fn typed<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let value = self.read().get(&Key::Type(TypeId::of::<T>())).cloned()?;
        value.downcast::<T>().ok()
    }

    /// The value of type `T`, created with `init` if absent (as for
    /// [`Memo::get_or_insert_with`], `init` runs without a lock held).
    pub fn typed_or_insert_with<T, F>(&self, init: F) -> Arc<T>
    where
        T: Any + Send + Sync,
        F: FnOnce() -> T,
    {
        if let Some(value) = self.typed::<T>() {
            return value;
        }
        let fresh = Arc::new(init());
        let mut map = self.write();
        let key = Key::Type(TypeId::of::<T>());
        if let Some(existing) = map.get(&key).cloned().and_then(|v| v.downcast::<T>().ok()) {
            return existing;
        }
        map.insert(key, fresh.clone());
        fresh
    }

    /// Removes the value of type `T`; true if it was there.
    pub fn remove_typed<T: Any + Send + Sync>(&self) -> bool {
        self.write().remove(&Key::Type(TypeId::of::<T>())).is_some()
    }
}

/// The operator memo: what activities (startup, login, probe, cleanup) see as
/// [`crate::Context::memo`], and the seed of every object's memo. An embedding
/// application may fill it before starting the operator (Kopf's `memo=` argument).
pub fn operator_memo() -> Memo {
    static OPERATOR: OnceLock<Memo> = OnceLock::new();
    OPERATOR.get_or_init(Memo::new).clone()
}

fn objects() -> MutexGuard<'static, HashMap<String, Memo>> {
    static OBJECTS: OnceLock<Mutex<HashMap<String, Memo>>> = OnceLock::new();
    OBJECTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The memo of the object with this uid, created as a shallow copy of the operator memo
/// on first use.
pub fn object_memo(uid: &str) -> Memo {
    if let Some(memo) = objects().get(uid) {
        return memo.clone();
    }
    // Copy outside the objects lock: the operator memo has a lock of its own.
    let fresh = operator_memo().shallow_copy();
    objects().entry(uid.to_owned()).or_insert(fresh).clone()
}

/// Drops the memo of the object with this uid (the object is gone); true if it had one.
/// The host does this through the `memo` control method; values still held elsewhere
/// (e.g. by a running task) live on until released.
pub fn forget(uid: &str) -> bool {
    objects().remove(uid).is_some()
}

/// How many objects have a memo in this plugin now.
pub fn tracked_objects() -> usize {
    objects().len()
}

/// A request of the `memo` control method (see [`kopf_abi::protocol::control_methods::MEMO`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MemoControl {
    /// Drop the memo of the object with this uid: `{"op": "forget", "uid": "..."}`,
    /// answered with `{"forgotten": bool}`.
    Forget {
        /// The object's uid.
        uid: String,
    },
    /// Report the number of per-object memos: `{"op": "stats"}`, answered with
    /// `{"objects": n}`.
    Stats,
}

/// Handles a `memo` control call: JSON in, JSON out.
pub(crate) fn control(payload: &str) -> Result<String, String> {
    let request: MemoControl =
        serde_json::from_str(payload).map_err(|e| format!("bad memo control payload: {e}"))?;
    let answer = match request {
        MemoControl::Forget { uid } => serde_json::json!({ "forgotten": forget(&uid) }),
        MemoControl::Stats => serde_json::json!({ "objects": tracked_objects() }),
    };
    Ok(answer.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn named_values_round_trip_by_type() {
        let memo = Memo::new();
        assert!(memo.is_empty());
        memo.insert("n", 5_u32);
        assert_eq!(memo.get::<u32>("n").as_deref(), Some(&5));
        assert!(memo.get::<String>("n").is_none(), "wrong type reads as absent");
        assert!(memo.get::<u32>("other").is_none());
        assert!(memo.contains("n"));
        assert_eq!(memo.keys(), vec!["n".to_owned()]);
        assert!(memo.remove("n"));
        assert!(!memo.remove("n"));
        assert!(memo.is_empty());
    }

    #[test]
    fn get_or_insert_with_creates_once_and_checks_types() {
        let memo = Memo::new();
        let calls = AtomicUsize::new(0);
        let a = memo
            .get_or_insert_with("c", || {
                calls.fetch_add(1, Ordering::Relaxed);
                AtomicUsize::new(0)
            })
            .unwrap();
        a.fetch_add(1, Ordering::Relaxed);
        let b = memo
            .get_or_insert_with("c", || {
                calls.fetch_add(1, Ordering::Relaxed);
                AtomicUsize::new(100)
            })
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.load(Ordering::Relaxed), 1);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        let err = memo.get_or_insert_with("c", || 1_u8).unwrap_err();
        assert!(
            matches!(err, MemoError::WrongType { ref key, .. } if key == "c"),
            "{err}"
        );
        assert!(err.to_string().contains("u8"), "{err}");
    }

    #[test]
    fn typed_values_are_keyed_by_type() {
        struct Conn(&'static str);
        let memo = Memo::new();
        assert!(memo.typed::<Conn>().is_none());
        memo.insert_typed(Conn("db"));
        memo.insert("Conn", 1_i32); // a named key never collides with a typed one
        assert_eq!(memo.typed::<Conn>().map(|c| c.0), Some("db"));
        let again = memo.typed_or_insert_with(|| Conn("other"));
        assert_eq!(again.0, "db");
        assert_eq!(memo.len(), 2);
        assert!(memo.remove_typed::<Conn>());
        assert_eq!(memo.typed_or_insert_with(|| Conn("new")).0, "new");
    }

    #[test]
    fn shallow_copies_share_values_but_not_keys() {
        let base = Memo::new();
        let shared = base.insert("counter", AtomicUsize::new(0));
        let copy = base.shallow_copy();
        assert!(!copy.ptr_eq(&base));
        assert!(base.clone().ptr_eq(&base));
        copy.get::<AtomicUsize>("counter")
            .unwrap()
            .fetch_add(1, Ordering::Relaxed);
        assert_eq!(shared.load(Ordering::Relaxed), 1, "values are shared");
        copy.insert("own", true);
        assert!(!base.contains("own"), "keys are not");
        base.insert("late", 1_u8);
        assert!(!copy.contains("late"));
    }

    #[test]
    fn object_memos_are_seeded_kept_and_forgotten() {
        operator_memo().insert("seed-test", 7_u64);
        let uid = "memo-unit-test-uid";
        let first = object_memo(uid);
        assert_eq!(first.get::<u64>("seed-test").as_deref(), Some(&7));
        first.insert("mine", 1_u8);
        assert!(!operator_memo().contains("mine"));
        assert!(object_memo(uid).ptr_eq(&first), "the same memo on every call");
        let stats: serde_json::Value = serde_json::from_str(&control(r#"{"op":"stats"}"#).unwrap()).unwrap();
        assert!(stats["objects"].as_u64().unwrap() >= 1);
        let answer = control(&format!(r#"{{"op":"forget","uid":"{uid}"}}"#)).unwrap();
        assert_eq!(answer, r#"{"forgotten":true}"#);
        let answer = control(&format!(r#"{{"op":"forget","uid":"{uid}"}}"#)).unwrap();
        assert_eq!(answer, r#"{"forgotten":false}"#);
        let fresh = object_memo(uid);
        assert!(!fresh.ptr_eq(&first));
        assert!(!fresh.contains("mine"), "a forgotten object starts afresh");
        forget(uid);
        operator_memo().remove("seed-test");
    }

    #[test]
    fn bad_control_payloads_are_errors() {
        assert!(
            control("not json")
                .unwrap_err()
                .contains("bad memo control payload")
        );
        assert!(control(r#"{"op":"explode"}"#).is_err());
        assert!(control(r#"{"op":"forget"}"#).is_err(), "uid is required");
    }
}
