//! Where progress records live on an object, as Kopf's default `SmartProgressStorage`:
//! read from annotations (V2, then V1) and the legacy status field, write annotations,
//! purge every location (see [`super::progress`] for the records themselves).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::conventions::{DEFAULT_PREFIX, KeyConvention};
use super::layouts::Layout;
use super::progress::{HandlerState, ProgressError, ProgressRecord, State, max_record_size};
use super::times::Timestamp;
use crate::structs::dicts;
use crate::structs::patches::Patch;
use crate::structs::pyjson::py_truthy;

/// Where and how progress is stored (Kopf's `SmartProgressStorage` defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressStorage {
    keys: KeyConvention,
    touch_key: String,
    pub(super) status_field: Vec<String>,
    verbose: bool,
    /// Kopf's storage class (see [`super::storages`]).
    pub(super) layout: Layout,
}

impl Default for ProgressStorage {
    fn default() -> Self {
        Self {
            keys: KeyConvention::new(DEFAULT_PREFIX, true).unwrap_or_else(|_| unreachable!("non-empty")),
            touch_key: "touch-dummy".into(),
            status_field: vec!["status".into(), "kopf".into(), "progress".into()],
            verbose: false,
            layout: Layout::SMART,
        }
    }
}

impl ProgressStorage {
    /// A storage with a custom annotation prefix and V1 switch; other settings as Kopf's.
    pub fn new(prefix: &str, v1: bool) -> Result<Self, ProgressError> {
        Ok(Self {
            keys: KeyConvention::new(prefix, v1)?,
            ..Self::default()
        })
    }

    /// The key convention (prefix, V1 switch).
    pub fn keys(&self) -> &KeyConvention {
        &self.keys
    }

    /// Write `null`s too (Kopf's `verbose=True`).
    pub fn with_verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Read a handler's record: annotations (V2, then V1), then the legacy status field.
    pub fn fetch(&self, key: &str, body: &Value) -> Result<Option<ProgressRecord>, ProgressError> {
        let keys = self.keys.make_keys(key, Some(body));
        for full_key in keys.iter().filter(|_| self.layout.annotations) {
            let Some(encoded) = dicts::resolve(body, &["metadata", "annotations", full_key.as_str()]) else {
                continue;
            };
            let decoded: Value = match encoded {
                Value::String(text) => serde_json::from_str(text).map_err(|source| ProgressError::Json {
                    key: full_key.clone(),
                    source,
                })?,
                Value::Null => continue,
                _ => return Err(ProgressError::NotAnObject(full_key.clone())),
            };
            match decoded {
                Value::Null => continue,
                Value::Object(record) => return Ok(Some(record)),
                _ => return Err(ProgressError::NotAnObject(full_key.clone())),
            }
        }
        let container = dicts::resolve(body, &self.status_field).filter(|_| self.layout.status_read);
        match container.and_then(|c| c.as_object()).and_then(|c| c.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(record)) => Ok(Some(record.clone())),
            Some(_) => Err(ProgressError::NotAnObject(key.to_owned())),
        }
    }

    /// Write a handler's state into the patch (annotations only, as Kopf ≥ 1.44, by default).
    pub fn store(&self, key: &str, state: &HandlerState, body: &Value, patch: &mut Patch) {
        if !store_status_progress(self, key, state, patch) {
            return;
        }
        let encoded = state.to_json_text(self.verbose);
        for full_key in self.keys.make_keys(key, Some(body)).iter() {
            let _ = patch.set_annotation(full_key, Some(&encoded));
        }
        self.keys.store_marker(patch, body);
    }

    /// How many bytes the annotations may grow by when the handlers `ids` store their
    /// records (each at most [`max_record_size`], or its current size if larger: records
    /// of sub-handlers' parents list them), under every key.
    pub fn growth_bound<'a>(&self, body: &Value, ids: impl IntoIterator<Item = &'a str>) -> usize {
        let mut growth = 0;
        for id in ids {
            for full_key in self.keys.make_keys(id, Some(body)).iter() {
                let current = dicts::resolve(body, &["metadata", "annotations", full_key.as_str()])
                    .and_then(Value::as_str);
                growth += match current {
                    Some(text) => max_record_size().saturating_sub(text.len()),
                    None => full_key.len() + max_record_size(),
                };
            }
        }
        growth
    }

    /// Purge a handler's record from all locations.
    pub fn purge(&self, key: &str, body: &Value, patch: &mut Patch) {
        for full_key in self.keys.make_keys(key, Some(body)).iter() {
            purge_path(body, patch, &["metadata", "annotations", full_key.as_str()]);
        }
        let mut path: Vec<&str> = self.status_field.iter().map(String::as_str).collect();
        path.push(key);
        purge_path(body, patch, &path);
    }

    /// Set (or with `None`, clear) the `touch-dummy` annotation if it differs from the body.
    /// Kopf clears it whenever a real patch is about to be sent.
    pub fn touch(&self, body: &Value, patch: &mut Patch, value: Option<&str>) {
        for full_key in self.keys.make_keys(&self.touch_key, Some(body)).iter() {
            let current = dicts::resolve(body, &["metadata", "annotations", full_key.as_str()]);
            let current = current.and_then(Value::as_str);
            if current != value {
                let _ = patch.set_annotation(full_key, value);
                self.keys.store_marker(patch, body);
            }
        }
    }

    /// Remove this storage's own data from an essence: annotations under the prefix and the
    /// legacy status field; then drop emptied stanzas.
    pub fn clear(&self, essence: &mut Value) {
        let prefix = self.keys.prefix();
        if let Some(annotations) = essence
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
            .and_then(Value::as_object_mut)
        {
            let own = |k: &str| k.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'));
            if annotations.keys().any(|k| own(k)) {
                annotations.retain(|k, _| !own(k));
            }
        }
        remove_empty_stanzas(essence);
        let _ = dicts::remove(essence, &self.status_field);
        remove_empty_stanzas(essence);
    }
}

/// Set the field to `null` if the body has it; otherwise drop it from the patch.
fn purge_path(body: &Value, patch: &mut Patch, path: &[&str]) {
    if dicts::resolve(body, path).is_some() {
        let _ = patch.set(path, Value::Null);
    } else if patch.get(path).is_some() {
        let _ = patch.unset(path);
    }
}

/// Drop empty `metadata.annotations`, `metadata.labels`, `metadata`, `status` (Kopf's
/// `remove_empty_stanzas`).
pub fn remove_empty_stanzas(essence: &mut Value) {
    let empty = |v: Option<&Value>| v.is_some_and(|v| !py_truthy(v));
    if let Some(root) = essence.as_object_mut() {
        if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
            for stanza in ["annotations", "labels"] {
                if empty(meta.get(stanza)) {
                    dicts::shift_remove(meta, stanza);
                }
            }
        }
        for stanza in ["metadata", "status"] {
            if empty(root.get(stanza)) {
                dicts::shift_remove(root, stanza);
            }
        }
    }
}

/// Stores a handler's record in the status field if the layout writes there
/// (`StatusProgressStorage.store`: every field, `null` for the absent ones, so that a
/// merge-patch also clears what is no longer set); whether annotations are written too.
fn store_status_progress(
    storage: &ProgressStorage,
    key: &str,
    state: &HandlerState,
    patch: &mut Patch,
) -> bool {
    if storage.layout.status_write {
        let mut path: Vec<&str> = storage.status_field.iter().map(String::as_str).collect();
        path.push(key);
        let record = state
            .for_storage()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let _ = patch.set(&path, Value::Object(record));
    }
    storage.layout.annotations
}

/// Reading and writing an object's handler states through a storage (here, not in
/// `progress`, so that the records and their storage do not depend on each other).
impl State {
    /// Read the stored states of these handlers (all handlers of the resource). A record
    /// that cannot be read is left out (its handler starts over) and returned with its
    /// error: one bad record does not reset the others.
    pub fn from_storage<'a>(
        storage: &ProgressStorage,
        body: &Value,
        handler_ids: impl IntoIterator<Item = &'a str>,
        now: Timestamp,
    ) -> (Self, Vec<(String, ProgressError)>) {
        let mut states = BTreeMap::new();
        let mut unreadable = Vec::new();
        for id in handler_ids {
            let state = storage
                .fetch(id, body)
                .and_then(|record| record.map(|r| HandlerState::from_record(&r, now, id)).transpose());
            match state {
                Ok(Some(state)) => {
                    states.insert(id.to_owned(), state);
                }
                Ok(None) => {}
                Err(error) => unreadable.push((id.to_owned(), error)),
            }
        }
        let state = Self {
            states,
            purpose: None,
        };
        (state, unreadable)
    }

    /// Write the changed states into the patch.
    pub fn store(&self, storage: &ProgressStorage, body: &Value, patch: &mut Patch) {
        for (id, state) in &self.states {
            if state.is_changed() {
                storage.store(id, state, body, patch);
            }
        }
    }

    /// Purge the records of these handlers (all handlers of the resource), of all states
    /// known here, and of all their sub-handlers.
    pub fn purge<'a>(
        &self,
        storage: &ProgressStorage,
        body: &Value,
        patch: &mut Patch,
        handler_ids: impl IntoIterator<Item = &'a str>,
    ) {
        let ids: BTreeSet<&str> = handler_ids.into_iter().collect();
        for id in &ids {
            storage.purge(id, body, patch);
        }
        for (id, state) in &self.states {
            if !ids.contains(id.as_str()) {
                storage.purge(id, body, patch);
            }
            for subref in &state.subrefs {
                storage.purge(subref, body, patch);
            }
        }
    }
}
