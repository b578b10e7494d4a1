//! Typed, zero-copy views of an object's body: [`Body`] reads the metadata the engine
//! needs (as kube's `ResourceExt` and Kopf's `bodies.Body` do), and [`ObjectRef`] names
//! an object wherever it is logged or keyed.
//!
//! The engine keeps bodies as raw JSON (`serde_json::Value`): it serves any resource, and
//! unknown fields must survive untouched. A view borrows that JSON; it never copies it,
//! and a missing or mistyped field reads as absent.

use std::fmt;

use serde_json::{Map, Value};

/// A read-only view of an object's body. Cheap to copy; borrows the JSON.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a>(&'a Value);

impl<'a> Body<'a> {
    /// A view of `body` (any JSON: a non-object reads as an object without fields).
    pub fn new(body: &'a Value) -> Self {
        Self(body)
    }

    /// The JSON underneath.
    pub fn raw(self) -> &'a Value {
        self.0
    }

    fn text(self, key: &str) -> Option<&'a str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// `apiVersion`.
    pub fn api_version(self) -> Option<&'a str> {
        self.text("apiVersion")
    }

    /// `kind`.
    pub fn kind(self) -> Option<&'a str> {
        self.text("kind")
    }

    /// `metadata`, if it is an object.
    pub fn metadata(self) -> Option<&'a Map<String, Value>> {
        self.0.get("metadata").and_then(Value::as_object)
    }

    fn meta_text(self, key: &str) -> Option<&'a str> {
        self.metadata()?.get(key).and_then(Value::as_str)
    }

    fn meta_map(self, key: &str) -> Option<&'a Map<String, Value>> {
        self.metadata()?.get(key).and_then(Value::as_object)
    }

    /// `metadata.name`.
    pub fn name(self) -> Option<&'a str> {
        self.meta_text("name")
    }

    /// `metadata.namespace`; `None` for cluster-scoped objects.
    pub fn namespace(self) -> Option<&'a str> {
        self.meta_text("namespace")
    }

    /// `metadata.uid`; `None` when absent or empty (a stub known by name only).
    pub fn uid(self) -> Option<&'a str> {
        self.meta_text("uid").filter(|uid| !uid.is_empty())
    }

    /// `metadata.resourceVersion`.
    pub fn resource_version(self) -> Option<&'a str> {
        self.meta_text("resourceVersion")
    }

    /// `metadata.creationTimestamp`.
    pub fn creation_timestamp(self) -> Option<&'a str> {
        self.meta_text("creationTimestamp")
    }

    /// `metadata.deletionTimestamp`.
    pub fn deletion_timestamp(self) -> Option<&'a str> {
        self.meta_text("deletionTimestamp")
    }

    /// Whether the object is being deleted (`metadata.deletionTimestamp` is set, not null).
    pub fn is_deleting(self) -> bool {
        self.metadata()
            .and_then(|meta| meta.get("deletionTimestamp"))
            .is_some_and(|stamp| !stamp.is_null())
    }

    /// The names in `metadata.finalizers` (entries that are not strings are skipped).
    pub fn finalizers(self) -> impl Iterator<Item = &'a str> {
        self.metadata()
            .and_then(|meta| meta.get("finalizers"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }

    /// Whether `finalizer` is in `metadata.finalizers`.
    pub fn has_finalizer(self, finalizer: &str) -> bool {
        self.finalizers().any(|name| name == finalizer)
    }

    /// `metadata.labels`.
    pub fn labels(self) -> Option<&'a Map<String, Value>> {
        self.meta_map("labels")
    }

    /// `metadata.annotations`.
    pub fn annotations(self) -> Option<&'a Map<String, Value>> {
        self.meta_map("annotations")
    }

    /// One label's value.
    pub fn label(self, key: &str) -> Option<&'a str> {
        self.labels()?.get(key).and_then(Value::as_str)
    }

    /// One annotation's value.
    pub fn annotation(self, key: &str) -> Option<&'a str> {
        self.annotations()?.get(key).and_then(Value::as_str)
    }

    /// How the object is named in logs and keys: `namespace/name` or `name`.
    pub fn reference(self) -> ObjectRef<'a> {
        ObjectRef {
            namespace: self.namespace(),
            name: self.name(),
        }
    }
}

/// How an object is named: its namespace (none for cluster-scoped objects) and its name
/// (none for a body without one). Displays as Kopf's log prefix does: `namespace/name`,
/// or `name`; a missing name shows as `?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef<'a> {
    /// `metadata.namespace`.
    pub namespace: Option<&'a str>,
    /// `metadata.name`.
    pub name: Option<&'a str>,
}

impl fmt::Display for ObjectRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name.unwrap_or("?");
        match self.namespace {
            Some(namespace) => write!(f, "{namespace}/{name}"),
            None => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_is_read_without_copies_and_mistyped_fields_read_as_absent() {
        let value = json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {
                "name": "x", "namespace": "ns", "uid": "u-1", "resourceVersion": "7",
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "finalizers": ["a", 5, "kopf.zalando.org/KopfFinalizerMarker"],
                "labels": {"app": "demo"}, "annotations": {"n": 1, "s": "t"},
            },
        });
        let body = Body::new(&value);
        assert_eq!(body.api_version(), Some("kopf.dev/v1"));
        assert_eq!(body.kind(), Some("KopfExample"));
        assert_eq!(
            (body.name(), body.namespace(), body.uid()),
            (Some("x"), Some("ns"), Some("u-1"))
        );
        assert_eq!(body.resource_version(), Some("7"));
        assert!(body.is_deleting());
        assert_eq!(
            body.finalizers().collect::<Vec<_>>(),
            ["a", "kopf.zalando.org/KopfFinalizerMarker"]
        );
        assert!(body.has_finalizer("a") && !body.has_finalizer("b"));
        assert_eq!(body.label("app"), Some("demo"));
        assert_eq!(body.annotation("n"), None, "a number is not an annotation's text");
        assert_eq!(body.annotation("s"), Some("t"));
        assert_eq!(body.reference().to_string(), "ns/x");
        assert!(std::ptr::eq(body.raw(), &value));
    }

    #[test]
    fn odd_bodies_read_as_empty() {
        for value in [
            json!(null),
            json!("text"),
            json!({"metadata": 5}),
            json!({"metadata": {"uid": ""}}),
        ] {
            let body = Body::new(&value);
            assert_eq!(body.name(), None);
            assert_eq!(body.uid(), None);
            assert!(!body.is_deleting());
            assert_eq!(body.finalizers().count(), 0);
            assert_eq!(body.reference().to_string(), "?");
        }
        let deleting_null = json!({"metadata": {"deletionTimestamp": null}});
        assert!(!Body::new(&deleting_null).is_deleting());
    }

    #[test]
    fn references_of_namespaced_and_cluster_objects() {
        let cluster = json!({"metadata": {"name": "n"}});
        assert_eq!(Body::new(&cluster).reference().to_string(), "n");
        let namespaced = json!({"metadata": {"name": "n", "namespace": "ns"}});
        let reference = Body::new(&namespaced).reference();
        assert_eq!(
            reference,
            ObjectRef {
                namespace: Some("ns"),
                name: Some("n")
            }
        );
        assert_eq!(reference.to_string(), "ns/n");
    }
}
