//! The patch accumulated during one processing cycle of an object, as Kopf's `Patch`:
//! a JSON merge-patch (RFC 7386) plus body transformations ("fns") that are sent as a
//! JSON-patch (RFC 6902) guarded by a `resourceVersion` test (Kopf ≥ 1.44).
//!
//! On the wire this becomes at most three requests (see [`Patch::requests`]):
//! a merge-patch of the body, a merge-patch of `/status` (only for resources with a status
//! subresource), and a JSON-patch with the finalizer operations.

use serde_json::{Map, Value, json};

use super::bodies::Body;
use super::dicts::{self, DictsError};
use super::diffs::{self, DiffItem, DiffScope};
use super::pyjson::py_truthy;

/// Fields Kubernetes drops entirely when patched to an empty list/object; not reported as
/// inconsistencies (Kopf's `KNOWN_INCONSISTENCIES`).
const KNOWN_INCONSISTENCIES: [[&str; 2]; 3] = [
    ["metadata", "annotations"],
    ["metadata", "finalizers"],
    ["metadata", "labels"],
];

/// A body transformation applied through JSON-patch: the finalizer operations, and
/// handlers' functions (Kopf's `patch.fns`) kept by their plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchFn {
    /// Add the finalizer to `metadata.finalizers` unless it is there (Kopf's `block_deletion`).
    AddFinalizer(String),
    /// Remove every occurrence of the finalizer (Kopf's `allow_deletion`).
    RemoveFinalizer(String),
    /// A handler's function, kept by the plugin of that index under that token; only the
    /// plugin can apply it (the JSON-patch operations are its difference, computed by the
    /// caller: [`Patch::json_requests`]'s `extra`).
    Plugin {
        /// The plugin's index.
        plugin: usize,
        /// The function's token.
        token: u64,
    },
}

/// The accumulated patch of one processing cycle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    merge: Map<String, Value>,
    fns: Vec<PatchFn>,
}

/// The merge-patch requests a [`Patch`] splits into.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergeRequests {
    /// The merge-patch for the object itself (`application/merge-patch+json`).
    pub body: Option<Value>,
    /// The merge-patch `{"status": ...}` for the `/status` subresource.
    pub status: Option<Value>,
}

impl Patch {
    /// An empty patch.
    pub fn new() -> Self {
        Self::default()
    }

    /// A patch with this merge-patch content (non-objects give an empty merge part).
    pub fn from_merge(value: Value) -> Self {
        match value {
            Value::Object(merge) => Self {
                merge,
                fns: Vec::new(),
            },
            _ => Self::default(),
        }
    }

    /// Nothing to send: no merge-patch keys and no transformations (Kopf's `bool(patch)`).
    pub fn is_empty(&self) -> bool {
        self.merge.is_empty() && self.fns.is_empty()
    }

    /// The merge-patch part.
    pub fn merge(&self) -> &Map<String, Value> {
        &self.merge
    }

    /// The merge-patch part, mutable.
    pub fn merge_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.merge
    }

    /// The merge-patch part as a JSON value (cloned).
    pub fn merge_value(&self) -> Value {
        Value::Object(self.merge.clone())
    }

    /// The pending transformations.
    pub fn fns(&self) -> &[PatchFn] {
        &self.fns
    }

    /// Add a transformation.
    pub fn push_fn(&mut self, f: PatchFn) {
        self.fns.push(f);
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.merge.clear();
        self.fns.clear();
    }

    /// Take only the transformations out (what remains after the merge-patches were sent).
    pub fn take_fns(&mut self) -> Vec<PatchFn> {
        std::mem::take(&mut self.fns)
    }

    /// The plugins' functions, in order: `(plugin, token)`.
    pub fn plugin_fns(&self) -> Vec<(usize, u64)> {
        self.fns
            .iter()
            .filter_map(|f| match f {
                PatchFn::Plugin { plugin, token } => Some((*plugin, *token)),
                _ => None,
            })
            .collect()
    }

    /// A patch of only the plugins' functions: what a refused JSON patch carries to the
    /// next cycle (Kopf's remaining patch; the finalizer is decided again there).
    pub fn plugin_fns_only(&self) -> Patch {
        Patch {
            merge: Map::new(),
            fns: self
                .fns
                .iter()
                .filter(|f| matches!(f, PatchFn::Plugin { .. }))
                .cloned()
                .collect(),
        }
    }

    /// `body` with the finalizer transformations applied (the plugins' functions start
    /// from it, so that their difference comes after the finalizer operations).
    pub fn with_finalizer_fns(&self, body: &Value) -> Value {
        let mut body = body.clone();
        self.apply_fns(&mut body);
        body
    }

    fn apply_fns(&self, body: &mut Value) {
        for f in &self.fns {
            match f {
                PatchFn::AddFinalizer(name) => block_deletion(body, name),
                PatchFn::RemoveFinalizer(name) => allow_deletion(body, name),
                PatchFn::Plugin { .. } => {}
            }
        }
    }

    /// Resolve a field of the merge-patch.
    pub fn get<S: AsRef<str>>(&self, path: &[S]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        dicts::resolve(self.merge.get(first.as_ref())?, rest)
    }

    /// Set a field of the merge-patch (`null` deletes it on the server).
    pub fn set<S: AsRef<str>>(&mut self, path: &[S], value: Value) -> Result<(), DictsError> {
        let Some((first, rest)) = path.split_first() else {
            return Err(DictsError::RootPath);
        };
        if rest.is_empty() {
            self.merge.insert(first.as_ref().to_owned(), value);
            return Ok(());
        }
        let child = self
            .merge
            .entry(first.as_ref().to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        dicts::ensure(child, rest, value)
    }

    /// Remove a field from the merge-patch itself (not from the object), pruning empty parents.
    pub fn unset<S: AsRef<str>>(&mut self, path: &[S]) -> Result<(), DictsError> {
        let mut root = Value::Object(std::mem::take(&mut self.merge));
        let result = dicts::remove(&mut root, path);
        if let Value::Object(map) = root {
            self.merge = map;
        }
        result
    }

    /// An annotation in the merge-patch: `Some(None)` when it is set to `null` (deletion).
    pub fn annotation(&self, key: &str) -> Option<Option<&str>> {
        self.get(&["metadata", "annotations", key]).map(Value::as_str)
    }

    /// Set an annotation (`None` deletes it on the server).
    pub fn set_annotation(&mut self, key: &str, value: Option<&str>) -> Result<(), DictsError> {
        let value = value.map_or(Value::Null, |v| Value::String(v.to_owned()));
        self.set(&["metadata", "annotations", key], value)
    }

    /// Overlay another merge-patch (e.g. one returned by a handler) on top of this one:
    /// objects merge recursively, everything else (incl. `null` and lists) replaces.
    pub fn merge_from(&mut self, other: &Value) {
        if let Value::Object(src) = other {
            overlay(&mut self.merge, src);
        }
    }

    /// Overlay another accumulated patch, including its transformations.
    pub fn extend(&mut self, other: &Patch) {
        overlay(&mut self.merge, &other.merge);
        self.fns.extend(other.fns.iter().cloned());
    }

    /// Deliver a handler's result into `status.<handler_id>` (Kopf's `deliver_results`):
    /// an object result is shallow-merged into what the patch already has there; anything
    /// else replaces it. `null` results are not delivered.
    pub fn deliver_result(&mut self, handler_id: &str, result: &Value) {
        if result.is_null() {
            return;
        }
        let status = self
            .merge
            .entry("status".to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !status.is_object() {
            *status = Value::Object(Map::new());
        }
        let Some(status) = status.as_object_mut() else {
            return;
        };
        match result {
            Value::Object(fields) => {
                let slot = status
                    .entry(handler_id.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Some(slot) = slot.as_object_mut() {
                    for (k, v) in fields {
                        slot.insert(k.clone(), v.clone());
                    }
                }
            }
            other => {
                status.insert(handler_id.to_owned(), other.clone());
            }
        }
    }

    /// Split the merge-patch into the body and status requests, as Kopf's `patch_obj`:
    /// with a status subresource, `status` goes separately as `{"status": ...}`.
    /// Empty parts produce no request.
    pub fn requests(&self, status_subresource: bool) -> MergeRequests {
        let (body, status) = if status_subresource {
            let body: Map<String, Value> = self
                .merge
                .iter()
                .filter(|(k, _)| *k != "status")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (body, self.merge.get("status").cloned())
        } else {
            (self.merge.clone(), None)
        };
        MergeRequests {
            body: (!body.is_empty()).then_some(Value::Object(body)),
            status: status
                .filter(|s| !s.as_object().is_some_and(Map::is_empty))
                .map(|s| json!({ "status": s })),
        }
    }

    /// The JSON-patch operations of the transformations relative to `base` (the freshest
    /// known body), without the `test` operation. Empty if the transformations change nothing.
    pub fn json_ops(&self, base: &Value) -> Vec<Value> {
        let mut ops = Vec::new();
        let mut state = Finalizers::of(base);
        for f in &self.fns {
            match f {
                PatchFn::AddFinalizer(name) => add_finalizer_ops(&mut ops, &mut state, name),
                PatchFn::RemoveFinalizer(name) => remove_finalizer_ops(&mut ops, &mut state, name),
                PatchFn::Plugin { .. } => {}
            }
        }
        ops
    }

    /// The JSON-patch requests: `(body_ops, status_ops)`, each prefixed with Kopf's
    /// `{"op":"test","path":"/metadata/resourceVersion","value":<rv of base>}`; `None` when
    /// there is nothing to send. Status ops exist only with a status subresource. `extra`:
    /// the operations of the plugins' functions, after the finalizer's.
    pub fn json_requests(
        &self,
        base: &Value,
        status_subresource: bool,
        extra: Vec<Value>,
    ) -> (Option<Vec<Value>>, Option<Vec<Value>>) {
        let mut ops = self.json_ops(base);
        ops.extend(extra);
        let (status_ops, body_ops): (Vec<Value>, Vec<Value>) = ops.into_iter().partition(|op| {
            status_subresource
                && op["path"]
                    .as_str()
                    .is_some_and(|p| p == "/status" || p.starts_with("/status/"))
        });
        let rv = dicts::resolve(base, &["metadata", "resourceVersion"])
            .cloned()
            .unwrap_or(Value::Null);
        let wrap = |ops: Vec<Value>| {
            (!ops.is_empty()).then(|| {
                let mut all = Vec::with_capacity(ops.len() + 1);
                all.push(test_rv_op(rv.clone()));
                all.extend(ops);
                all
            })
        };
        (wrap(body_ops), wrap(status_ops))
    }

    /// The merge-patched fields that did not come back as written in the resulting body
    /// (Kopf warns "Merge-patching finished with inconsistencies"): a left-scoped diff of the
    /// merge-patch against the body, minus empty K8s-managed fields.
    pub fn inconsistencies(&self, resulting_body: &Value) -> Vec<DiffItem> {
        let merge = Value::Object(self.merge.clone());
        diffs::diff_scoped(Some(&merge), Some(resulting_body), DiffScope::Left)
            .into_iter()
            .filter(|d| {
                py_truthy(&d.old)
                    || py_truthy(&d.new)
                    || !KNOWN_INCONSISTENCIES
                        .iter()
                        .any(|k| d.field.iter().map(String::as_str).eq(k.iter().copied()))
            })
            .collect()
    }

    /// Whether the merge-patch part would change `body` (the transformations are not
    /// considered: they turn into JSON-patch ops only when they change something).
    /// Cheaper than applying the patch to a copy and comparing.
    pub fn merge_changes(&self, body: &Value) -> bool {
        merge_changes(Some(body), &self.merge)
    }

    /// Apply the merge-patch and the transformations to a body in memory (Kopf's
    /// `_apply_patch` semantics: `null` removes, pruning parents that become empty).
    pub fn apply_to(&self, body: &mut Value) -> Result<(), DictsError> {
        let mut path = Vec::new();
        apply_merge(body, &mut path, &self.merge)?;
        self.apply_fns(body);
        Ok(())
    }
}

/// The `test` op guarding JSON-patches with the resource version they were computed for.
pub fn test_rv_op(resource_version: Value) -> Value {
    json!({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version})
}

fn overlay(dst: &mut Map<String, Value>, src: &Map<String, Value>) {
    for (k, v) in src {
        match (dst.get_mut(k), v) {
            (Some(Value::Object(d)), Value::Object(s)) => overlay(d, s),
            _ => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_changes(body: Option<&Value>, patch: &Map<String, Value>) -> bool {
    patch.iter().any(|(key, value)| {
        let current = body.and_then(|b| b.get(key));
        match value {
            Value::Null => current.is_some(),
            Value::Object(sub) => merge_changes(current, sub),
            other => current != Some(other),
        }
    })
}

fn apply_merge(
    body: &mut Value,
    path: &mut Vec<String>,
    patch: &Map<String, Value>,
) -> Result<(), DictsError> {
    for (k, v) in patch {
        path.push(k.clone());
        match v {
            Value::Null => dicts::remove(body, path)?,
            Value::Object(sub) => apply_merge(body, path, sub)?,
            other => dicts::ensure(body, path, other.clone())?,
        }
        path.pop();
    }
    Ok(())
}

/// Add the finalizer in memory (Kopf's `block_deletion`).
pub fn block_deletion(body: &mut Value, finalizer: &str) {
    if Body::new(body).has_finalizer(finalizer) || !body.is_object() {
        return;
    }
    let Some(root) = body.as_object_mut() else { return };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else { return };
    let list = meta
        .entry("finalizers")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    if let Some(list) = list.as_array_mut() {
        list.push(Value::String(finalizer.to_owned()));
    }
}

/// Remove the finalizer in memory (Kopf's `allow_deletion`), dropping an emptied list.
pub fn allow_deletion(body: &mut Value, finalizer: &str) {
    let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(list) = meta.get_mut("finalizers").and_then(Value::as_array_mut) {
        list.retain(|f| f.as_str() != Some(finalizer));
        if list.is_empty() {
            dicts::shift_remove(meta, "finalizers");
        }
    }
}

/// The finalizers as the JSON-patch generator tracks them while applying transformations.
#[derive(Debug)]
enum Finalizers {
    /// No `metadata` at all.
    NoMetadata,
    /// `metadata` exists, `finalizers` does not.
    Absent,
    /// `finalizers` exists but is not a list (e.g. `null`).
    NotAList,
    /// The list.
    List(Vec<Value>),
}

impl Finalizers {
    fn of(base: &Value) -> Self {
        match base.get("metadata") {
            None => Self::NoMetadata,
            Some(meta) => match meta.get("finalizers") {
                None => Self::Absent,
                Some(Value::Array(items)) => Self::List(items.clone()),
                Some(_) => Self::NotAList,
            },
        }
    }
}

fn add_finalizer_ops(ops: &mut Vec<Value>, state: &mut Finalizers, name: &str) {
    let op = match state {
        Finalizers::List(items) if items.iter().any(|f| f.as_str() == Some(name)) => return,
        Finalizers::List(items) => {
            let path = format!("/metadata/finalizers/{}", items.len());
            items.push(Value::String(name.to_owned()));
            ops.push(json!({"op": "add", "path": path, "value": name}));
            return;
        }
        Finalizers::NoMetadata => json!({"op": "add", "path": "/metadata", "value": {"finalizers": [name]}}),
        Finalizers::Absent => json!({"op": "add", "path": "/metadata/finalizers", "value": [name]}),
        Finalizers::NotAList => json!({"op": "replace", "path": "/metadata/finalizers", "value": [name]}),
    };
    ops.push(op);
    *state = Finalizers::List(vec![Value::String(name.to_owned())]);
}

fn remove_finalizer_ops(ops: &mut Vec<Value>, state: &mut Finalizers, name: &str) {
    let Finalizers::List(items) = state else { return };
    let remaining: Vec<Value> = items
        .iter()
        .filter(|f| f.as_str() != Some(name))
        .cloned()
        .collect();
    if remaining.is_empty() {
        // An emptied list (or an already empty one) is removed as a whole, as in Kopf.
        ops.push(json!({"op": "remove", "path": "/metadata/finalizers"}));
        *state = Finalizers::Absent;
        return;
    }
    let mut removed = 0;
    for (index, f) in items.iter().enumerate() {
        if f.as_str() == Some(name) {
            ops.push(json!({"op": "remove", "path": format!("/metadata/finalizers/{}", index - removed)}));
            removed += 1;
        }
    }
    *items = remaining;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_changes_agrees_with_applying() {
        let body = json!({"metadata": {"annotations": {"a": "b"}}, "status": {"h": {"x": 1}}});
        let cases = [
            (json!({"metadata": {"annotations": {"a": "b"}}}), false),
            (json!({"metadata": {"annotations": {"a": "c"}}}), true),
            (json!({"metadata": {"annotations": {"z": null}}}), false),
            (json!({"metadata": {"annotations": {"a": null}}}), true),
            (json!({"status": {"h": {"x": 1}}}), false),
            (json!({"status": {"h": {"y": 1}}}), true),
            (json!({"spec": {"new": 1}}), true),
            (json!({"spec": {"gone": null}}), false),
        ];
        for (merge, expected) in cases {
            let patch = Patch::from_merge(merge.clone());
            let mut applied = body.clone();
            patch.apply_to(&mut applied).unwrap();
            assert_eq!(applied != body, expected, "{merge}");
            assert_eq!(patch.merge_changes(&body), expected, "{merge}");
        }
    }

    #[test]
    fn split_into_requests() {
        let mut p = Patch::new();
        p.set(&["metadata", "annotations", "a"], json!("b")).unwrap();
        p.deliver_result("h1", &json!({"x": 1}));
        p.deliver_result("h1", &json!({"y": 2}));
        let r = p.requests(true);
        assert_eq!(r.body, Some(json!({"metadata": {"annotations": {"a": "b"}}})));
        assert_eq!(r.status, Some(json!({"status": {"h1": {"x": 1, "y": 2}}})));
        let r = p.requests(false);
        assert!(r.status.is_none());
        assert_eq!(r.body.unwrap()["status"]["h1"]["y"], json!(2));
    }

    #[test]
    fn finalizer_json_patch_has_a_test_op() {
        let body = json!({"metadata": {"resourceVersion": "7", "finalizers": ["other"]}});
        let mut p = Patch::new();
        p.push_fn(PatchFn::AddFinalizer("f".into()));
        let (ops, status) = p.json_requests(&body, true, Vec::new());
        assert_eq!(
            ops,
            Some(vec![
                json!({"op": "test", "path": "/metadata/resourceVersion", "value": "7"}),
                json!({"op": "add", "path": "/metadata/finalizers/1", "value": "f"}),
            ])
        );
        assert!(status.is_none());
        assert!(!p.is_empty());
    }

    #[test]
    fn plugin_fns_follow_the_finalizer_and_split_by_status() {
        let body = json!({"metadata": {"resourceVersion": "7"}, "spec": {"l": [1]}});
        let mut p = Patch::new();
        p.push_fn(PatchFn::AddFinalizer("f".into()));
        p.push_fn(PatchFn::Plugin { plugin: 2, token: 9 });
        assert_eq!(p.plugin_fns(), [(2, 9)]);
        let carried = p.plugin_fns_only();
        assert_eq!(carried.fns(), [PatchFn::Plugin { plugin: 2, token: 9 }]);
        assert!(carried.merge().is_empty());
        // The plugin's functions start from the body with the finalizer added.
        let before = p.with_finalizer_fns(&body);
        assert_eq!(before["metadata"]["finalizers"], json!(["f"]));
        let extra = vec![
            json!({"op": "add", "path": "/spec/l/1", "value": 2}),
            json!({"op": "add", "path": "/status", "value": {"n": 2}}),
        ];
        let (ops, status) = p.json_requests(&body, true, extra);
        let ops = ops.unwrap();
        assert_eq!(
            ops.len(),
            3,
            "test, finalizer, then the function's body op: {ops:?}"
        );
        assert_eq!(ops[2]["path"], json!("/spec/l/1"));
        let status = status.unwrap();
        assert_eq!(status[0]["op"], json!("test"));
        assert_eq!(status[1]["path"], json!("/status"));
    }

    #[test]
    fn merge_from_overlays() {
        let mut p = Patch::from_merge(json!({"spec": {"a": 1, "b": {"c": 1}}}));
        p.merge_from(&json!({"spec": {"b": {"d": null}, "l": [1]}}));
        assert_eq!(
            p.merge_value(),
            json!({"spec": {"a": 1, "b": {"c": 1, "d": null}, "l": [1]}})
        );
    }
}
