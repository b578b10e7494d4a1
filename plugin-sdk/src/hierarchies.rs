//! The hierarchy toolkit (Kopf's `kopf/_kits/hierarchies.py`): make child objects belong
//! to the object being handled — owner references, names, namespaces and labels.
//!
//! Every function edits a Kubernetes object given as a `serde_json::Value` or as any
//! `Serialize + DeserializeOwned` type (a `k8s_openapi` `Pod`, your own struct...): typed
//! objects make a round trip through JSON. The owner is anything implementing [`Owner`]:
//! the handler's [`Context`] (the object being handled, as in Kopf) or a body as a `Value`.
//!
//! ```
//! use serde_json::json;
//!
//! let owner = json!({
//!     "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
//!     "metadata": {"name": "parent", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
//! });
//! let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": []}});
//! kopf::adopt(&mut pod, &owner).unwrap();
//! assert_eq!(pod["metadata"]["generateName"], "parent-");
//! assert_eq!(pod["metadata"]["namespace"], "ns");
//! assert_eq!(pod["metadata"]["labels"]["app"], "x");
//! assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "u-1");
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::context::{Context, resolve_path};

/// Why a hierarchy function could not do its job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HierarchyError {
    /// The owner has no `metadata.uid`, so no owner reference can point to it.
    #[error("the owner has no metadata.uid: an owner reference cannot be built")]
    OwnerWithoutUid,
    /// The owner has no `metadata.name` to name the children after.
    #[error("the owner has no metadata.name: the children's name must be set explicitly")]
    OwnerWithoutName,
    /// The object is not a JSON object (or its type does not serialise to one).
    #[error("the object is not a JSON object but {0}")]
    NotAnObject(&'static str),
    /// A typed object could not be converted to or from JSON.
    #[error("the object cannot be converted through JSON: {0}")]
    Json(String),
}

/// Something that owns children: the handled object's body.
pub trait Owner {
    /// The owner's body (`apiVersion`, `kind`, `metadata`...).
    fn owner_body(&self) -> &Value;
}

impl Owner for Context {
    fn owner_body(&self) -> &Value {
        self.body()
    }
}

impl Owner for Value {
    fn owner_body(&self) -> &Value {
        self
    }
}

/// Options of [`adopt_with`] (Kopf's `forced`, `strict`, `nested`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdoptOptions {
    /// Overwrite names, namespaces and labels that the child already has.
    pub forced: bool,
    /// Use the owner's name as the child's `name` instead of a `generateName` prefix.
    pub strict: bool,
    /// Dotted paths of nested objects (e.g. `spec.template`) that get the labels too.
    pub nested: Vec<String>,
}

/// Kopf's `build_object_reference`: `apiVersion`, `kind`, `name`, `uid`, `namespace` of a
/// body, leaving out absent or empty ones (e.g. `namespace` of cluster-scoped objects).
pub fn build_object_reference(body: &Value) -> Value {
    let meta = body.get("metadata");
    let mut r = Map::new();
    for (key, value) in [
        ("apiVersion", body.get("apiVersion")),
        ("kind", body.get("kind")),
        ("name", meta.and_then(|m| m.get("name"))),
        ("uid", meta.and_then(|m| m.get("uid"))),
        ("namespace", meta.and_then(|m| m.get("namespace"))),
    ] {
        if let Some(v) = value.filter(|v| is_truthy(v)) {
            r.insert(key.to_owned(), v.clone());
        }
    }
    Value::Object(r)
}

/// Kopf's `build_owner_reference` with `controller=True, block_owner_deletion=True`.
pub fn build_owner_reference(body: &Value) -> Value {
    build_owner_reference_with(body, Some(true), Some(true))
}

/// Kopf's `build_owner_reference`: `None` flags are left out of the reference.
pub fn build_owner_reference_with(
    body: &Value,
    controller: Option<bool>,
    block_owner_deletion: Option<bool>,
) -> Value {
    let meta = body.get("metadata");
    let mut r = Map::new();
    if let Some(c) = controller {
        r.insert("controller".into(), Value::Bool(c));
    }
    if let Some(b) = block_owner_deletion {
        r.insert("blockOwnerDeletion".into(), Value::Bool(b));
    }
    for (key, value) in [
        ("apiVersion", body.get("apiVersion")),
        ("kind", body.get("kind")),
        ("name", meta.and_then(|m| m.get("name"))),
        ("uid", meta.and_then(|m| m.get("uid"))),
    ] {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            r.insert(key.to_owned(), v.clone());
        }
    }
    Value::Object(r)
}

/// Adds an owner reference to `owner` (controller, blocking deletion) unless one with the
/// owner's uid is already there.
pub fn append_owner_reference<T, O>(obj: &mut T, owner: &O) -> Result<(), HierarchyError>
where
    T: Serialize + DeserializeOwned,
    O: Owner + ?Sized,
{
    append_owner_reference_with(obj, owner, Some(true), Some(true))
}

/// [`append_owner_reference`] with explicit `controller` and `blockOwnerDeletion` flags.
pub fn append_owner_reference_with<T, O>(
    obj: &mut T,
    owner: &O,
    controller: Option<bool>,
    block_owner_deletion: Option<bool>,
) -> Result<(), HierarchyError>
where
    T: Serialize + DeserializeOwned,
    O: Owner + ?Sized,
{
    let owner = owner.owner_body();
    let uid = owner_uid(owner)?;
    let reference = build_owner_reference_with(owner, controller, block_owner_deletion);
    edit(obj, |obj| {
        let refs = array_entry(metadata(obj)?, "ownerReferences");
        if !refs
            .iter()
            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        {
            refs.push(reference);
        }
        Ok(())
    })
}

/// Removes the owner references to `owner` (matched by uid), if any.
pub fn remove_owner_reference<T, O>(obj: &mut T, owner: &O) -> Result<(), HierarchyError>
where
    T: Serialize + DeserializeOwned,
    O: Owner + ?Sized,
{
    let uid = owner_uid(owner.owner_body())?;
    edit(obj, |obj| {
        let refs = array_entry(metadata(obj)?, "ownerReferences");
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        Ok(())
    })
}

/// Kopf's `label`: sets the labels on the object and on its `nested` sub-objects (dotted
/// paths such as `spec.template`; missing or non-object paths are skipped). Existing
/// labels are kept unless `forced`. A `null` value is stored as `null` (in a merge patch,
/// that removes the label).
pub fn label<T, K, V, I>(obj: &mut T, labels: I, forced: bool, nested: &[&str]) -> Result<(), HierarchyError>
where
    T: Serialize + DeserializeOwned,
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<Value>,
{
    let labels: Vec<(String, Value)> = labels.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    edit(obj, |obj| {
        apply_labels(obj, &labels, forced)?;
        for path in nested {
            if let Some(sub) = resolve_path_mut(obj, path).filter(|v| v.is_object()) {
                apply_labels(sub, &labels, forced)?;
            }
        }
        Ok(())
    })
}

/// Kopf's `harmonize_naming`: names the object after `name` — `generateName: "<name>-"`
/// (the API server adds a suffix), or exactly `name` when `strict`. Objects that already
/// have a `name` or `generateName` keep it unless `forced`.
pub fn harmonize_naming<T>(obj: &mut T, name: &str, forced: bool, strict: bool) -> Result<(), HierarchyError>
where
    T: Serialize + DeserializeOwned,
{
    edit(obj, |obj| {
        let meta = metadata(obj)?;
        let named = meta.contains_key("name") || meta.contains_key("generateName");
        if forced || !named {
            if strict {
                meta.insert("name".into(), Value::String(name.to_owned()));
                meta.remove("generateName");
            } else {
                meta.insert("generateName".into(), Value::String(format!("{name}-")));
                meta.remove("name");
            }
        }
        Ok(())
    })
}

/// Kopf's `adjust_namespace`: puts the object into `namespace` unless it has one already
/// (or always when `forced`). `None` (a cluster-scoped owner) writes `null`.
pub fn adjust_namespace<T>(obj: &mut T, namespace: Option<&str>, forced: bool) -> Result<(), HierarchyError>
where
    T: Serialize + DeserializeOwned,
{
    edit(obj, |obj| {
        let meta = metadata(obj)?;
        if forced || meta.get("namespace").is_none_or(Value::is_null) {
            let ns = namespace.map_or(Value::Null, |n| Value::String(n.to_owned()));
            meta.insert("namespace".into(), ns);
        }
        Ok(())
    })
}

/// Kopf's `adopt` with default options: an owner reference to `owner`, a name derived
/// from the owner's (`generateName`), the owner's namespace and the owner's labels —
/// each only where the child has none of its own.
pub fn adopt<T, O>(obj: &mut T, owner: &O) -> Result<(), HierarchyError>
where
    T: Serialize + DeserializeOwned,
    O: Owner + ?Sized,
{
    adopt_with(obj, owner, &AdoptOptions::default())
}

/// Kopf's `adopt(forced=, strict=, nested=)`.
pub fn adopt_with<T, O>(obj: &mut T, owner: &O, options: &AdoptOptions) -> Result<(), HierarchyError>
where
    T: Serialize + DeserializeOwned,
    O: Owner + ?Sized,
{
    let body = owner.owner_body();
    let meta = body.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .ok_or(HierarchyError::OwnerWithoutName)?;
    let namespace = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str);
    let labels: Vec<(String, Value)> = meta
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let nested: Vec<&str> = options.nested.iter().map(String::as_str).collect();
    edit(obj, |obj| {
        append_owner_reference(obj, body)?;
        harmonize_naming(obj, name, options.forced, options.strict)?;
        adjust_namespace(obj, namespace, options.forced)?;
        label(obj, labels, options.forced, &nested)
    })
}

// --- Internals ------------------------------------------------------------------------------

/// Python's truthiness for the JSON values of a reference.
fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) => true,
    }
}

fn owner_uid(owner: &Value) -> Result<&str, HierarchyError> {
    owner
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .ok_or(HierarchyError::OwnerWithoutUid)
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Runs `f` on the object as JSON: directly for a `Value`, through a JSON round trip for
/// typed objects (written back only on success).
fn edit<T, F>(obj: &mut T, f: F) -> Result<(), HierarchyError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce(&mut Value) -> Result<(), HierarchyError>,
{
    let json = |e: serde_json::Error| HierarchyError::Json(e.to_string());
    let mut value = serde_json::to_value(&*obj).map_err(json)?;
    if !value.is_object() {
        return Err(HierarchyError::NotAnObject(kind_name(&value)));
    }
    f(&mut value)?;
    *obj = serde_json::from_value(value).map_err(json)?;
    Ok(())
}

/// `obj.metadata` as a map, created (or replaced if `null`) on demand.
fn metadata(obj: &mut Value) -> Result<&mut Map<String, Value>, HierarchyError> {
    let map = obj
        .as_object_mut()
        .ok_or(HierarchyError::NotAnObject("not an object"))?;
    let meta = map
        .entry("metadata")
        .and_modify(|m| {
            if m.is_null() {
                *m = Value::Object(Map::new());
            }
        })
        .or_insert_with(|| Value::Object(Map::new()));
    let kind = kind_name(meta);
    meta.as_object_mut().ok_or(HierarchyError::NotAnObject(kind))
}

/// `map[key]` as an array, created (or reset if not an array) on demand.
fn array_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let entry = map.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = Value::Array(Vec::new());
    }
    match entry {
        Value::Array(a) => a,
        _ => unreachable!("just made an array"),
    }
}

fn apply_labels(obj: &mut Value, labels: &[(String, Value)], forced: bool) -> Result<(), HierarchyError> {
    let meta = metadata(obj)?;
    let entry = meta.entry("labels").or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(existing) = entry {
        for (k, v) in labels {
            if forced || !existing.contains_key(k) {
                existing.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

fn resolve_path_mut<'a>(root: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    // Check first with the shared resolver, so missing paths create nothing.
    resolve_path(root, path)?;
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(root, |v, key| v.get_mut(key))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kopf_abi::protocol::Invocation;
    use serde_json::json;

    use super::*;

    fn owner() -> Value {
        json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": "parent", "namespace": "ns1", "uid": "uid-1",
                         "labels": {"app": "demo", "tier": "web"}},
        })
    }

    #[test]
    fn references() {
        let o = owner();
        assert_eq!(
            build_object_reference(&o),
            json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "name": "parent",
                   "uid": "uid-1", "namespace": "ns1"})
        );
        assert_eq!(
            build_owner_reference(&o),
            json!({"controller": true, "blockOwnerDeletion": true, "apiVersion": "kopf.dev/v1",
                   "kind": "KopfExample", "name": "parent", "uid": "uid-1"})
        );
        let r = build_owner_reference_with(&o, None, Some(false));
        assert!(r.get("controller").is_none());
        assert_eq!(r["blockOwnerDeletion"], false);
        // Cluster-scoped: no namespace in the object reference.
        let cluster = json!({"kind": "Node", "metadata": {"name": "n", "namespace": ""}});
        assert_eq!(
            build_object_reference(&cluster),
            json!({"kind": "Node", "name": "n"})
        );
    }

    #[test]
    fn owner_references_are_appended_once_and_removed_by_uid() {
        let o = owner();
        let mut child = json!({"metadata": {"ownerReferences": [{"uid": "other"}]}});
        append_owner_reference(&mut child, &o).unwrap();
        append_owner_reference(&mut child, &o).unwrap();
        let refs = child["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1]["uid"], "uid-1");
        remove_owner_reference(&mut child, &o).unwrap();
        assert_eq!(child["metadata"]["ownerReferences"], json!([{"uid": "other"}]));
        // An owner without a uid cannot be referenced.
        let no_uid = json!({"metadata": {"name": "x"}});
        assert_eq!(
            append_owner_reference(&mut child, &no_uid),
            Err(HierarchyError::OwnerWithoutUid)
        );
    }

    #[test]
    fn naming_respects_existing_names_unless_forced() {
        let mut a = json!({});
        harmonize_naming(&mut a, "p", false, false).unwrap();
        assert_eq!(a, json!({"metadata": {"generateName": "p-"}}));
        let mut b = json!({"metadata": {"name": "own"}});
        harmonize_naming(&mut b, "p", false, true).unwrap();
        assert_eq!(b["metadata"]["name"], "own");
        harmonize_naming(&mut b, "p", true, false).unwrap();
        assert_eq!(b, json!({"metadata": {"generateName": "p-"}}));
        harmonize_naming(&mut b, "p", true, true).unwrap();
        assert_eq!(b, json!({"metadata": {"name": "p"}}));
    }

    #[test]
    fn namespaces_and_labels() {
        let mut a = json!({"metadata": {"namespace": "mine", "labels": {"app": "own"}}});
        adjust_namespace(&mut a, Some("ns1"), false).unwrap();
        assert_eq!(a["metadata"]["namespace"], "mine");
        adjust_namespace(&mut a, Some("ns1"), true).unwrap();
        assert_eq!(a["metadata"]["namespace"], "ns1");
        label(&mut a, [("app", "x"), ("new", "y")], false, &[]).unwrap();
        assert_eq!(a["metadata"]["labels"], json!({"app": "own", "new": "y"}));
        label(&mut a, [("app", Some("x")), ("gone", None)], true, &[]).unwrap();
        assert_eq!(
            a["metadata"]["labels"],
            json!({"app": "x", "new": "y", "gone": null})
        );
    }

    #[test]
    fn nested_labels_skip_missing_paths() {
        let mut d = json!({"spec": {"template": {"spec": {}}, "scalar": 1}});
        label(
            &mut d,
            [("a", "b")],
            false,
            &["spec.template", "spec.missing", "spec.scalar"],
        )
        .unwrap();
        assert_eq!(d["metadata"]["labels"], json!({"a": "b"}));
        assert_eq!(d["spec"]["template"]["metadata"]["labels"], json!({"a": "b"}));
        assert!(d["spec"].get("missing").is_none());
        assert_eq!(d["spec"]["scalar"], 1);
    }

    #[test]
    fn adopt_from_a_context_and_typed_objects() {
        let ctx = Context::from_invocation(
            "h",
            Invocation {
                body: Some(owner()),
                ..Default::default()
            },
        );
        let mut child = json!({"kind": "Pod", "metadata": {"labels": {"tier": "db"}}});
        adopt(&mut child, &ctx).unwrap();
        assert_eq!(child["metadata"]["generateName"], "parent-");
        assert_eq!(child["metadata"]["namespace"], "ns1");
        assert_eq!(child["metadata"]["labels"], json!({"tier": "db", "app": "demo"}));
        assert_eq!(child["metadata"]["ownerReferences"][0]["kind"], "KopfExample");

        let mut strict = json!({"spec": {"template": {}}});
        let opts = AdoptOptions {
            forced: true,
            strict: true,
            nested: vec!["spec.template".into()],
        };
        adopt_with(&mut strict, &ctx, &opts).unwrap();
        assert_eq!(strict["metadata"]["name"], "parent");
        assert_eq!(strict["spec"]["template"]["metadata"]["labels"]["tier"], "web");

        #[derive(serde::Serialize, serde::Deserialize)]
        struct Meta {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            name: Option<String>,
            #[serde(default, rename = "generateName", skip_serializing_if = "Option::is_none")]
            generate_name: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            namespace: Option<String>,
            #[serde(default)]
            labels: BTreeMap<String, String>,
            #[serde(default, rename = "ownerReferences")]
            owner_references: Vec<Value>,
        }
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Typed {
            #[serde(default)]
            metadata: Option<Meta>,
        }
        let mut typed = Typed { metadata: None };
        adopt(&mut typed, &ctx).unwrap();
        let meta = typed.metadata.unwrap();
        assert_eq!(meta.generate_name.as_deref(), Some("parent-"));
        assert_eq!(meta.namespace.as_deref(), Some("ns1"));
        assert_eq!(meta.labels.len(), 2);
        assert_eq!(meta.owner_references.len(), 1);

        // Non-objects are refused, not mangled.
        let mut s = json!("text");
        assert_eq!(adopt(&mut s, &ctx), Err(HierarchyError::NotAnObject("a string")));
        let nameless = json!({"metadata": {"uid": "u"}});
        assert_eq!(
            adopt(&mut json!({}), &nameless),
            Err(HierarchyError::OwnerWithoutName)
        );
    }
}
