//! Reading indices: Kopf's `kopf.Index` (a read-only mapping of keys to `kopf.Store`s).
//!
//! [`IndexRef::get`] looks one key up (`index.get`); [`IndexRef::snapshot`] fetches the
//! whole index once (`index.items`) for Kopf's mapping API: keys, values, iteration,
//! length, membership, and each key's [`Store`] of values. Keys are JSON values: the
//! keys of an indexer's object result are strings, and a non-object result is stored
//! under `null`.
//!
//! ```no_run
//! #[kopf::timer("kopfexamples", interval = 10.0)]
//! fn census(ctx: &kopf::Context) -> kopf::Result<serde_json::Value> {
//!     let index = ctx.index("pods_by_namespace").snapshot()?;
//!     for (namespace, pods) in &index {
//!         tracing::info!("{namespace}: {} pods", pods.len());
//!     }
//!     Ok(serde_json::json!({"namespaces": index.len(), "has_default": index.contains_key("default")}))
//! }
//! # fn main() {}
//! ```

use kopf_abi::protocol::host_methods;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::HostCallError;
use crate::host;

/// A named index, read through the host (Kopf's index kwargs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRef {
    name: String,
}

fn key_value(method: &str, key: impl Serialize) -> Result<Value, HostCallError> {
    serde_json::to_value(key).map_err(|e| HostCallError::BadJson {
        method: method.to_owned(),
        message: e.to_string(),
    })
}

impl IndexRef {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }

    /// The index name (the indexer's id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The values stored under `key`, as a JSON array (empty for an unknown key).
    pub fn get(&self, key: impl Serialize) -> Result<Value, HostCallError> {
        let key = key_value(host_methods::INDEX_GET, key)?;
        host::call(
            host_methods::INDEX_GET,
            1,
            &json!({ "index": self.name, "key": key }),
        )
    }

    /// The whole index as it is now: Kopf's mapping API.
    pub fn snapshot(&self) -> Result<IndexSnapshot, HostCallError> {
        let items: Vec<(Value, Vec<Value>)> =
            host::call(host_methods::INDEX_ITEMS, 1, &json!({ "index": self.name }))?;
        let mut items: Vec<(Value, Store)> = items.into_iter().map(|(k, v)| (k, Store(v))).collect();
        items.sort_by_cached_key(|(k, _)| k.to_string());
        Ok(IndexSnapshot { items })
    }
}

/// The values of one index key (Kopf's `kopf.Store`): one per object that indexed a value
/// under the key, in no particular order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Store(Vec<Value>);

impl Store {
    /// How many values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (an index never keeps an empty store).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values.
    pub fn iter(&self) -> std::slice::Iter<'_, Value> {
        self.0.iter()
    }

    /// Whether `value` is among them.
    pub fn contains(&self, value: &Value) -> bool {
        self.0.contains(value)
    }

    /// The values, owned.
    pub fn into_values(self) -> Vec<Value> {
        self.0
    }
}

impl<'a> IntoIterator for &'a Store {
    type Item = &'a Value;
    type IntoIter = std::slice::Iter<'a, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A whole index at one moment (Kopf's `kopf.Index`): keys with their [`Store`]s, sorted
/// by the keys' JSON text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexSnapshot {
    items: Vec<(Value, Store)>,
}

impl IndexSnapshot {
    /// How many keys.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the index has no keys.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The store of `key`, if the index has that key.
    pub fn get(&self, key: impl Serialize) -> Option<&Store> {
        let key = serde_json::to_value(key).ok()?;
        self.items.iter().find(|(k, _)| *k == key).map(|(_, s)| s)
    }

    /// Whether the index has `key`.
    pub fn contains_key(&self, key: impl Serialize) -> bool {
        self.get(key).is_some()
    }

    /// The keys.
    pub fn keys(&self) -> impl Iterator<Item = &Value> {
        self.items.iter().map(|(k, _)| k)
    }

    /// The stores.
    pub fn values(&self) -> impl Iterator<Item = &Store> {
        self.items.iter().map(|(_, s)| s)
    }

    /// The keys with their stores.
    pub fn iter(&self) -> impl Iterator<Item = Pair<'_>> {
        self.items.iter().map(pair)
    }
}

type Pair<'a> = (&'a Value, &'a Store);

fn pair(item: &(Value, Store)) -> Pair<'_> {
    (&item.0, &item.1)
}

impl<'a> IntoIterator for &'a IndexSnapshot {
    type Item = Pair<'a>;
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (Value, Store)>, fn(&'a (Value, Store)) -> Pair<'a>>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter().map(pair as fn(&'a (Value, Store)) -> Pair<'a>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> IndexSnapshot {
        IndexSnapshot {
            items: vec![
                (json!("a"), Store(vec![json!(1), json!(2)])),
                (json!("b"), Store(vec![json!(3)])),
                (Value::Null, Store(vec![json!("other")])),
            ],
        }
    }

    #[test]
    fn the_mapping_api() {
        let index = snapshot();
        assert_eq!(index.len(), 3);
        assert!(index.contains_key("a") && index.contains_key(Value::Null) && !index.contains_key("c"));
        assert_eq!(
            index.keys().cloned().collect::<Vec<_>>(),
            [json!("a"), json!("b"), Value::Null]
        );
        assert_eq!(index.values().map(Store::len).sum::<usize>(), 4);
        let store = index.get("a").unwrap();
        assert!(store.contains(&json!(2)) && !store.contains(&json!(3)));
        assert_eq!(store.iter().count(), 2);
        let pairs: Vec<(String, usize)> = (&index)
            .into_iter()
            .map(|(k, s)| (k.to_string(), s.len()))
            .collect();
        assert_eq!(pairs[1], ("\"b\"".to_owned(), 1));
        assert!(index.get("c").is_none());
    }

    #[test]
    fn without_a_host_the_snapshot_is_an_error() {
        assert!(IndexRef::new("idx").snapshot().is_err());
    }
}
