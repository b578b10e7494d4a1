//! The diff-base: the object's "essence" as last handled, stored in the annotation
//! `kopf.zalando.org/last-handled-configuration` (Kopf's `AnnotationsDiffBaseStorage`).
//!
//! The essence is the body without `apiVersion`, `kind`, `metadata`, `status`, plus
//! `metadata.labels` and `metadata.annotations` minus the annotations of Kopf-managed
//! prefixes, minus `kubectl.kubernetes.io/last-applied-configuration`, minus the diff-base
//! keys themselves, plus the handlers' extra `field=` paths, minus emptied stanzas and the
//! `ignored_fields`. It is stored as compact JSON plus `"\n"`.

use serde_json::{Map, Value};

use super::conventions::{self, ConventionError, DEFAULT_PREFIX, KeyConvention};
use super::layouts::Layout;
use super::progress_storage::{ProgressStorage, remove_empty_stanzas};
use crate::structs::bodies::Body;
use crate::structs::dicts::{self, FieldPath};
use crate::structs::patches::Patch;
use crate::structs::pyjson;

/// The annotation `kubectl apply` keeps; never part of an essence.
pub const KUBECTL_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Kubernetes' limit on the total size of an object's annotations (keys plus values).
pub const ANNOTATIONS_SIZE_LIMIT: usize = 256 * 1024;

/// The total size of the object's annotations (keys plus values, in bytes), as
/// Kubernetes counts it against [`ANNOTATIONS_SIZE_LIMIT`].
pub fn annotations_size(body: &Value) -> usize {
    body.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map_or(0, |annotations| {
            annotations
                .iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
}

/// Errors of the diff-base storage.
#[derive(Debug, thiserror::Error)]
pub enum DiffBaseError {
    /// The stored diff-base is not valid JSON.
    #[error("the diff-base in {key:?} is not valid JSON: {source}")]
    Json {
        /// The annotation key.
        key: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The storage configuration is invalid.
    #[error(transparent)]
    Convention(#[from] ConventionError),
}

/// The diff-base storage in annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffBaseStorage {
    keys: KeyConvention,
    key: String,
    ignored_fields: Vec<FieldPath>,
    /// Kopf's storage class (see [`super::storages`]) and its status field.
    layout: Layout,
    status_field: FieldPath,
}

impl Default for DiffBaseStorage {
    fn default() -> Self {
        Self {
            keys: KeyConvention::new(DEFAULT_PREFIX, true).unwrap_or_else(|_| unreachable!("non-empty")),
            key: "last-handled-configuration".into(),
            ignored_fields: Vec::new(),
            layout: Layout::ANNOTATIONS,
            status_field: dicts::parse_field("status.kopf.last-handled-configuration"),
        }
    }
}

/// Encode an essence as Kopf stores it: compact JSON (Python's `json.dumps` text) + `"\n"`.
pub fn encode_essence(essence: &Value) -> String {
    let mut text = pyjson::to_python_json(essence);
    text.push('\n');
    text
}

impl DiffBaseStorage {
    /// A storage with a custom prefix, key name, and ignored fields.
    pub fn new(
        prefix: &str,
        key: &str,
        v1: bool,
        ignored_fields: Vec<FieldPath>,
    ) -> Result<Self, DiffBaseError> {
        Ok(Self {
            keys: KeyConvention::new(prefix, v1)?,
            key: key.to_owned(),
            ignored_fields,
            ..Self::default()
        })
    }

    /// Where the diff-base is read and written, and the status field (see [`super::storages`]).
    pub fn with_layout(mut self, layout: Layout, status_field: FieldPath) -> Self {
        self.layout = layout;
        self.status_field = status_field;
        self
    }

    /// The key convention (prefix, V1 switch).
    pub fn keys(&self) -> &KeyConvention {
        &self.keys
    }

    /// Build the essence of a body (Kopf's `build`). Extra fields that walk into non-objects
    /// are skipped (Kopf crashes the processing cycle with a `TypeError` there).
    pub fn build(&self, body: &Value, extra_fields: &[FieldPath]) -> Value {
        let mut essence = Map::new();
        if let Some(root) = body.as_object() {
            for (k, v) in root {
                if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                    essence.insert(k.clone(), v.clone());
                }
            }
        }
        let mut essence = Value::Object(essence);
        let metadata_fields = [
            vec!["metadata".to_owned(), "labels".to_owned()],
            vec!["metadata".to_owned(), "annotations".to_owned()],
        ];
        let _ = dicts::cherrypick(body, &mut essence, &metadata_fields);

        if let Some(annotations) = essence
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
            .and_then(Value::as_object_mut)
        {
            let marked: Vec<String> =
                conventions::detect_marked_prefixes(annotations.keys().map(String::as_str))
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
            let marked_set = marked.iter().map(String::as_str).collect();
            annotations
                .retain(|k, _| !conventions::has_any_prefix(k, &marked_set) && k != KUBECTL_LAST_APPLIED);
        }

        for field in extra_fields {
            if let Ok(Some(value)) = dicts::resolve_strict(body, field) {
                let _ = dicts::ensure(&mut essence, field, value.clone());
            }
        }
        remove_empty_stanzas(&mut essence);
        for field in &self.ignored_fields {
            let _ = dicts::remove(&mut essence, field);
        }

        if self.layout.status_read {
            // Kopf's StatusDiffBaseStorage drops its own field (it matters only outside `status`).
            let _ = dicts::remove(&mut essence, &self.status_field);
        }
        // The storage's own keys (normally already gone as a Kopf-managed prefix).
        let own = self.keys.make_keys(&self.key, Some(body));
        if let Some(annotations) = essence
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
            .and_then(Value::as_object_mut)
            && own.iter().any(|k| annotations.contains_key(k))
        {
            annotations.retain(|k, _| !own.contains(k));
        }
        remove_empty_stanzas(&mut essence);
        essence
    }

    /// The essence as the reactor compares it: [`Self::build`] followed by the progress
    /// storage's cleaning of its own annotations and legacy status fields.
    pub fn essence(&self, progress: &ProgressStorage, body: &Value, extra_fields: &[FieldPath]) -> Value {
        let mut essence = self.build(body, extra_fields);
        progress.clear(&mut essence);
        essence
    }

    /// Read the last handled essence (V2 key, then V1); `None` if never stored.
    pub fn fetch(&self, body: &Value) -> Result<Option<Value>, DiffBaseError> {
        let annotated = if self.layout.annotations {
            self.keys.make_keys(&self.key, Some(body))
        } else {
            Default::default()
        };
        for full_key in annotated.iter() {
            let Some(encoded) = Body::new(body).annotation(full_key) else {
                continue;
            };
            let decoded: Value = serde_json::from_str(encoded).map_err(|source| DiffBaseError::Json {
                key: full_key.clone(),
                source,
            })?;
            if !decoded.is_null() {
                return Ok(Some(decoded));
            }
        }
        if self.layout.status_read {
            return fetch_status_diffbase(body, &self.status_field);
        }
        Ok(None)
    }

    /// The total size (keys plus values, in bytes, as Kubernetes counts it against
    /// [`ANNOTATIONS_SIZE_LIMIT`]) the object's annotations would have with `essence`
    /// stored as its diff-base.
    pub fn annotations_size_with(&self, body: &Value, essence: &Value) -> usize {
        let keys = self.keys.make_keys(&self.key, Some(body));
        let encoded = encode_essence(essence).len();
        let others: usize = Body::new(body)
            .annotations()
            .map(|annotations| {
                annotations
                    .iter()
                    .filter(|(k, _)| !keys.contains(k))
                    .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                    .sum()
            })
            .unwrap_or(0);
        others + keys.iter().map(|k| k.len() + encoded).sum::<usize>()
    }

    /// Store the essence into the patch under all keys (plus the marker for custom prefixes).
    pub fn store(&self, body: &Value, patch: &mut Patch, essence: &Value) {
        if self.layout.status_write {
            store_status_diffbase(patch, &self.status_field, essence);
        }
        if !self.layout.annotations {
            return;
        }
        let encoded = encode_essence(essence);
        for full_key in self.keys.make_keys(&self.key, Some(body)).iter() {
            let _ = patch.set_annotation(full_key, Some(&encoded));
        }
        self.keys.store_marker(patch, body);
    }
}

/// The diff-base kept in the status field (`StatusDiffBaseStorage.fetch`): a JSON text.
pub(super) fn fetch_status_diffbase(body: &Value, field: &[String]) -> Result<Option<Value>, DiffBaseError> {
    match dicts::resolve(body, field) {
        Some(Value::String(encoded)) => {
            let decoded: Value = serde_json::from_str(encoded).map_err(|source| DiffBaseError::Json {
                key: dicts::format_field(field),
                source,
            })?;
            Ok((!decoded.is_null()).then_some(decoded))
        }
        _ => Ok(None),
    }
}

/// Stores the diff-base in the status field as Kopf does: compact JSON, no newline.
pub(super) fn store_status_diffbase(patch: &mut Patch, field: &[String], essence: &Value) {
    let _ = patch.set(field, Value::String(pyjson::to_python_json(essence)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn annotations_size_counts_other_annotations_and_the_new_diff_base_once() {
        let body = json!({
            "metadata": {"name": "kex1", "annotations": {
                "other": "12345",
                "kopf.zalando.org/last-handled-configuration": "an old, long diff-base that is replaced\n"}},
            "spec": {"blob": "x"}});
        let storage = DiffBaseStorage::default();
        let essence = json!({"spec": {"blob": "x"}});
        let encoded = encode_essence(&essence);
        let key = "kopf.zalando.org/last-handled-configuration";
        assert_eq!(
            storage.annotations_size_with(&body, &essence),
            "other".len() + 5 + key.len() + encoded.len()
        );
        let huge = json!({"spec": {"blob": "z".repeat(ANNOTATIONS_SIZE_LIMIT)}});
        assert!(storage.annotations_size_with(&body, &huge) > ANNOTATIONS_SIZE_LIMIT);
    }

    #[test]
    fn essence_of_an_example() {
        let body = json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": "kex1", "labels": {"a": "b"}, "annotations": {
                "x": "y", "kopf.zalando.org/last-handled-configuration": "{}\n",
                "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"field": "value"}, "status": {"phase": "Running"}});
        let storage = DiffBaseStorage::default();
        let extra = vec![dicts::parse_field("status.phase")];
        let essence = storage.essence(&ProgressStorage::default(), &body, &extra);
        assert_eq!(
            essence,
            json!({"spec": {"field": "value"}, "metadata": {"labels": {"a": "b"}, "annotations": {"x": "y"}},
                   "status": {"phase": "Running"}})
        );
        let mut patch = Patch::new();
        storage.store(&body, &mut patch, &essence);
        let text = patch
            .annotation("kopf.zalando.org/last-handled-configuration")
            .flatten()
            .unwrap();
        assert!(text.ends_with("}\n"));
        let stored =
            json!({"metadata": {"annotations": {"kopf.zalando.org/last-handled-configuration": text}}});
        assert_eq!(storage.fetch(&stored).unwrap(), Some(essence));
    }
}
