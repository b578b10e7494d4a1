//! Patch flavours: JSON merge, JSON patch, strategic merge (approximated), server-side apply
//! (simplified field ownership).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::ApiError;

mod json_patch_ops;

/// The real server's message for any failing JSON-patch operation (it does not say which).
const JSON_PATCH_REJECTED: &str = "the server rejected our request due to an error in our request";

/// The patch flavour, from the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7386.
    Merge,
    /// RFC 6902.
    Json,
    /// Kubernetes strategic merge patch.
    Strategic,
    /// Server-side apply.
    Apply,
}

const ACCEPTED: &str = "the body of the request was in an unknown format - accepted media types include: \
application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

const ACCEPTED_STRATEGIC: &str = "the body of the request was in an unknown format - accepted media types include: \
application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
application/strategic-merge-patch+json";

impl PatchKind {
    /// Pick the flavour from a Content-Type; custom resources do not accept strategic merge.
    pub fn from_content_type(ct: Option<&str>, custom: bool) -> Result<Self, ApiError> {
        let ct = ct
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match ct.as_str() {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" if !custom => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            _ if custom => Err(ApiError::unsupported_media(ACCEPTED)),
            _ => Err(ApiError::unsupported_media(ACCEPTED_STRATEGIC)),
        }
    }
}

/// Parse a patch body (JSON, or YAML for apply).
pub fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Apply => serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}"))),
        PatchKind::Json => {
            serde_json::from_slice::<Value>(body).map_err(|_| ApiError::bad_request("invalid JSON patch"))
        }
        _ => serde_json::from_slice::<Value>(body).map_err(|e| ApiError::bad_request(format!("{e}"))),
    }
}

/// Apply a merge, JSON or strategic patch to `doc`.
pub fn apply_patch(kind: PatchKind, doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            json_patch::merge(doc, patch);
            Ok(())
        }
        PatchKind::Json => match json_patch_ops::apply(doc, patch) {
            Err(e) => Err(ApiError::bad_request(e.to_string())),
            Ok(Err(e)) => {
                // The real server says no more than its bare message; the emulator adds
                // which operation failed and why.
                let mut err = ApiError::unprocessable(format!("{JSON_PATCH_REJECTED}: {e}"));
                err.details = Some(json!({}));
                Err(err)
            }
            Ok(Ok(())) => Ok(()),
        },
        PatchKind::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            }
            strategic_merge(doc, patch, "");
            Ok(())
        }
        PatchKind::Apply => Err(ApiError::internal("apply is handled separately")),
    }
}

fn merge_key(items: &[Value]) -> Option<&'static str> {
    ["name", "uid", "type", "containerPort", "mountPath", "ip"]
        .into_iter()
        .find(|k| !items.is_empty() && items.iter().all(|i| i.get(k).is_some()))
}

/// An approximation of strategic merge: maps merge, `$patch: delete|replace` honoured, lists of
/// objects merged by a well-known key (name, uid, type, ...), `finalizers` merged as a set,
/// other lists replaced.
fn strategic_merge(doc: &mut Value, patch: &Value, path: &str) {
    let Some(pmap) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    if pmap.get("$patch").and_then(|v| v.as_str()) == Some("replace") {
        let mut p = pmap.clone();
        p.remove("$patch");
        *doc = Value::Object(p);
        return;
    }
    if !doc.is_object() {
        *doc = json!({});
    }
    let Some(dmap) = doc.as_object_mut() else { return };
    for (k, pv) in pmap {
        if k.starts_with('$') {
            continue;
        }
        let child_path = format!("{path}.{k}");
        match pv {
            Value::Null => {
                dmap.remove(k);
            }
            Value::Object(o) if o.get("$patch").and_then(|v| v.as_str()) == Some("delete") => {
                dmap.remove(k);
            }
            Value::Object(_) => strategic_merge(dmap.entry(k.clone()).or_insert(json!({})), pv, &child_path),
            Value::Array(items) => {
                let cur = dmap.get_mut(k);
                match cur {
                    Some(Value::Array(existing)) if k == "finalizers" => {
                        for it in items {
                            if !existing.contains(it) {
                                existing.push(it.clone());
                            }
                        }
                    }
                    Some(Value::Array(existing)) => {
                        if let Some(key) =
                            merge_key(items).filter(|key| existing.iter().all(|e| e.get(key).is_some()))
                        {
                            for it in items {
                                let id = it.get(key).cloned();
                                let deleting = it.get("$patch").and_then(|v| v.as_str()) == Some("delete");
                                match existing.iter().position(|e| e.get(key).cloned() == id) {
                                    Some(i) if deleting => {
                                        existing.remove(i);
                                    }
                                    Some(i) => strategic_merge(&mut existing[i], it, &child_path),
                                    None if deleting => {}
                                    None => existing.push(it.clone()),
                                }
                            }
                        } else {
                            *existing = items.clone();
                        }
                    }
                    _ => {
                        dmap.insert(k.clone(), pv.clone());
                    }
                }
            }
            other => {
                dmap.insert(k.clone(), other.clone());
            }
        }
    }
}

/// Leaf field paths of an applied configuration (maps recurse; scalars and lists are leaves).
fn leaf_paths(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>, root: bool) {
    if let Value::Object(m) = v
        && !m.is_empty()
    {
        for (k, c) in m {
            if root && (k == "apiVersion" || k == "kind") {
                continue;
            }
            if prefix.len() == 1
                && prefix[0] == "metadata"
                && matches!(
                    k.as_str(),
                    "name" | "namespace" | "resourceVersion" | "managedFields" | "uid"
                )
            {
                continue;
            }
            prefix.push(k.clone());
            leaf_paths(c, prefix, out, false);
            prefix.pop();
        }
    } else if !prefix.is_empty() {
        out.insert(prefix.clone());
    }
}

fn to_fields_v1(paths: &BTreeSet<Vec<String>>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            let e = cur.entry(format!("f:{seg}")).or_insert_with(|| json!({}));
            cur = match e {
                Value::Object(m) => m,
                _ => break,
            };
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, c) in m {
                if let Some(seg) = k.strip_prefix("f:") {
                    prefix.push(seg.to_string());
                    from_fields_v1(c, prefix, out);
                    prefix.pop();
                }
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

fn get_path<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    p.iter().try_fold(v, |cur, seg| cur.get(seg))
}

fn set_path(v: &mut Value, p: &[String], val: Value) {
    let mut cur = v;
    for seg in &p[..p.len().saturating_sub(1)] {
        if !cur.get(seg).is_some_and(|x| x.is_object()) {
            cur[seg.as_str()] = json!({});
        }
        cur = &mut cur[seg.as_str()];
    }
    if let Some(last) = p.last() {
        cur[last.as_str()] = val;
    }
}

fn remove_path(v: &mut Value, p: &[String]) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        match cur.get_mut(seg) {
            Some(x) => cur = x,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// Server-side apply of `applied` by `manager` onto `current` (None when creating).
/// Field ownership is tracked per manager in `metadata.managedFields` (lists are atomic).
#[allow(clippy::too_many_arguments)]
pub fn server_side_apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    group: &str,
    plural: &str,
    name: &str,
) -> Result<Value, ApiError> {
    if !applied.is_object() {
        return Err(ApiError::bad_request("apply patch must be an object"));
    }
    let mut mine = BTreeSet::new();
    leaf_paths(applied, &mut vec![], &mut mine, true);
    let mut doc = current.cloned().unwrap_or_else(|| {
        let mut d = applied.clone();
        if let Some(m) = d.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.remove("managedFields");
        }
        d
    });
    let mut entries: Vec<Value> = doc
        .pointer("/metadata/managedFields")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let mut previously_mine = BTreeSet::new();
    let mut others: Vec<(String, BTreeSet<Vec<String>>)> = vec![];
    for e in &entries {
        let m = e
            .get("manager")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string();
        let mut set = BTreeSet::new();
        if let Some(f) = e.get("fieldsV1") {
            from_fields_v1(f, &mut vec![], &mut set);
        }
        if m == manager {
            previously_mine.extend(set);
        } else {
            others.push((m, set));
        }
    }
    if current.is_some() {
        let mut conflicts = vec![];
        for p in &mine {
            let new_val = get_path(applied, p);
            if get_path(&doc, p) == new_val {
                continue;
            }
            for (m, set) in &others {
                if set.iter().any(|o| o.starts_with(p) || p.starts_with(o)) {
                    conflicts.push((m.clone(), format!(".{}", p.join("."))));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": f}))
                .collect();
            let list: Vec<String> = conflicts
                .iter()
                .map(|(m, f)| format!("conflict with \"{m}\": {f}"))
                .collect();
            let mut err = ApiError::conflict(group, plural, name, "");
            err.message = format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                list.join("\n")
            );
            err.details = Some(json!({"name": name, "group": group, "kind": plural, "causes": causes}));
            return Err(err);
        }
        // Forced: the others lose what we now own.
        for (_, set) in others.iter_mut() {
            set.retain(|o| !mine.iter().any(|p| o.starts_with(p) || p.starts_with(o)));
        }
        // Fields we owned and dropped (and nobody else owns) go away.
        for p in previously_mine.difference(&mine) {
            if !others.iter().any(|(_, s)| s.contains(p)) {
                remove_path(&mut doc, p);
            }
        }
        for p in &mine {
            if let Some(v) = get_path(applied, p) {
                set_path(&mut doc, p, v.clone());
            }
        }
    }
    entries.clear();
    for (m, set) in &others {
        if !set.is_empty() {
            entries.push(json!({"manager": m, "operation": "Apply", "apiVersion": api_version,
                "time": crate::store::now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(set)}));
        }
    }
    entries.push(
        json!({"manager": manager, "operation": "Apply", "apiVersion": api_version,
        "time": crate::store::now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&mine)}),
    );
    crate::store::meta_mut(&mut doc).insert("managedFields".into(), Value::Array(entries));
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merges_by_name_and_finalizers() {
        let mut doc = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "x", "image": "1"}, {"name": "y"}]}});
        let patch =
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "x", "image": "2"}]}});
        apply_patch(PatchKind::Strategic, &mut doc, &patch).unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"containers": [{"name": "x", "image": "2"}, {"name": "y"}]}})
        );
    }

    #[test]
    fn apply_conflicts_and_force() {
        let a =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "1"}});
        let created = server_side_apply(None, &a, "one", false, "v1", "", "configmaps", "c").unwrap();
        let b =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "2"}});
        let err =
            server_side_apply(Some(&created), &b, "two", false, "v1", "", "configmaps", "c").unwrap_err();
        assert_eq!(err.code, 409);
        let forced = server_side_apply(Some(&created), &b, "two", true, "v1", "", "configmaps", "c").unwrap();
        assert_eq!(forced["data"]["k"], "2");
        // Same value from another manager: shared ownership, no conflict.
        let same = server_side_apply(Some(&forced), &b, "three", false, "v1", "", "configmaps", "c").unwrap();
        assert_eq!(same["data"]["k"], "2");
        // Dropping a field we own removes it.
        let c = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"other": "x"}});
        let d = server_side_apply(Some(&created), &c, "one", false, "v1", "", "configmaps", "c").unwrap();
        assert_eq!(d["data"], json!({"other": "x"}));
    }
}
