//! Field paths and nested-field access in JSON objects, as Kopf's `dicts.py`.
//!
//! A field path is a sequence of keys: `spec.field` ↔ `["spec", "field"]`. Resolution is
//! "safe": absent keys and non-object intermediates resolve to nothing, never to an error,
//! because bodies can be corrupted externally (Kopf ignores such data the same way).

use serde_json::{Map, Value};

/// A parsed field path: the keys from the root down.
pub type FieldPath = Vec<String>;

/// Errors of nested-field manipulation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DictsError {
    /// The empty path addresses the root, which cannot be set or removed.
    #[error("the root of a dict cannot be set or removed; provide a specific field")]
    RootPath,
    /// An intermediate value on the path exists but is not an object.
    #[error("the structure is not a dict at field {0:?}")]
    NotADict(String),
}

/// Parse a dotted field (`"spec.field"`) into a path. The empty string is a one-key path
/// `[""]`, exactly as Python's `"".split(".")`.
pub fn parse_field(field: &str) -> FieldPath {
    field.split('.').map(str::to_owned).collect()
}

/// Join a path back into its dotted form.
pub fn format_field<S: AsRef<str>>(path: &[S]) -> String {
    let mut out = String::new();
    for (i, key) in path.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(key.as_ref());
    }
    out
}

/// Resolve a nested field; `None` if absent or if any intermediate value is not an object.
/// The empty path resolves to the value itself.
pub fn resolve<'a, S: AsRef<str>>(value: &'a Value, path: &[S]) -> Option<&'a Value> {
    let mut current = value;
    for key in path {
        current = current.as_object()?.get(key.as_ref())?;
    }
    Some(current)
}

/// Like [`resolve`], but starting from an optional value (e.g. an absent essence).
pub fn resolve_opt<'a, S: AsRef<str>>(value: Option<&'a Value>, path: &[S]) -> Option<&'a Value> {
    value.and_then(|v| resolve(v, path))
}

/// Force-set a nested field, creating missing intermediate objects (Kopf's `ensure`).
/// A `null` or non-object intermediate is an error, as in Kopf.
pub fn ensure<S: AsRef<str>>(root: &mut Value, path: &[S], value: Value) -> Result<(), DictsError> {
    let Some((last, parents)) = path.split_last() else {
        return Err(DictsError::RootPath);
    };
    let mut current = root;
    for key in parents {
        let map = current
            .as_object_mut()
            .ok_or_else(|| DictsError::NotADict(key.as_ref().to_owned()))?;
        current = map
            .entry(key.as_ref().to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let map = current
        .as_object_mut()
        .ok_or_else(|| DictsError::NotADict(last.as_ref().to_owned()))?;
    map.insert(last.as_ref().to_owned(), value);
    Ok(())
}

/// Remove a nested field and every parent object that became empty because of it (Kopf's
/// `remove`). Absent fields are fine. Walking into a non-object is an error (Kopf raises a
/// `TypeError` there, which most of its callers swallow).
pub fn remove<S: AsRef<str>>(root: &mut Value, path: &[S]) -> Result<(), DictsError> {
    if path.is_empty() {
        return Err(DictsError::RootPath);
    }
    remove_in(root, path)
}

/// Kopf prunes a parent that is an empty object after the attempt, even if the target key
/// was absent from the start (`{"a": {}}` minus `a.b.c` is `{}`).
fn remove_in<S: AsRef<str>>(current: &mut Value, path: &[S]) -> Result<(), DictsError> {
    let key = path[0].as_ref();
    let map = current
        .as_object_mut()
        .ok_or_else(|| DictsError::NotADict(key.to_owned()))?;
    if path.len() == 1 {
        shift_remove(map, key);
        return Ok(());
    }
    let Some(child) = map.get_mut(key) else {
        return Ok(());
    };
    remove_in(child, &path[1..])?;
    if child.as_object().is_some_and(Map::is_empty) {
        shift_remove(map, key);
    }
    Ok(())
}

/// Remove a key keeping the order of the others (as Python's `del d[k]`), whether or not
/// `serde_json`'s `preserve_order` feature is on (its `remove` would swap the last key in).
/// Returns whether the key was present.
pub fn shift_remove(map: &mut Map<String, Value>, key: &str) -> bool {
    if !map.contains_key(key) {
        return false;
    }
    map.retain(|k, _| k != key);
    true
}

/// Copy the listed fields from `src` into `dst` (Kopf's `cherrypick`); absent fields are
/// skipped. A non-object intermediate in `src` is an error (Kopf raises `TypeError`).
pub fn cherrypick<S: AsRef<str>>(src: &Value, dst: &mut Value, fields: &[Vec<S>]) -> Result<(), DictsError> {
    for field in fields {
        match resolve_strict(src, field)? {
            Some(value) => ensure(dst, field, value.clone())?,
            None => continue,
        }
    }
    Ok(())
}

/// Resolve distinguishing "absent" (`Ok(None)`) from "walked into a non-object" (`Err`),
/// as Kopf's `resolve` without a default.
pub fn resolve_strict<'a, S: AsRef<str>>(
    value: &'a Value,
    path: &[S],
) -> Result<Option<&'a Value>, DictsError> {
    let mut current = value;
    for key in path {
        let map = current
            .as_object()
            .ok_or_else(|| DictsError::NotADict(key.as_ref().to_owned()))?;
        match map.get(key.as_ref()) {
            Some(v) => current = v,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_and_format() {
        assert_eq!(parse_field("spec.field"), vec!["spec", "field"]);
        assert_eq!(format_field(&parse_field("a.b.c")), "a.b.c");
        assert_eq!(parse_field(""), vec![""]);
    }

    #[test]
    fn resolve_safely() {
        let v = json!({"spec": {"a": 1, "s": "str"}});
        assert_eq!(resolve(&v, &["spec", "a"]), Some(&json!(1)));
        assert_eq!(resolve(&v, &["spec", "s", "x"]), None);
        assert_eq!(resolve(&v, &["nope"]), None);
        assert!(resolve_strict(&v, &["spec", "s", "x"]).is_err());
        assert_eq!(resolve_strict(&v, &["spec", "b"]), Ok(None));
    }

    #[test]
    fn ensure_and_remove_with_pruning() {
        let mut v = json!({});
        ensure(&mut v, &["a", "b", "c"], json!(1)).unwrap();
        ensure(&mut v, &["a", "x"], json!(2)).unwrap();
        assert_eq!(v, json!({"a": {"b": {"c": 1}, "x": 2}}));
        remove(&mut v, &["a", "b", "c"]).unwrap();
        assert_eq!(v, json!({"a": {"x": 2}}));
        remove(&mut v, &["a", "x"]).unwrap();
        assert_eq!(v, json!({}));
        remove(&mut v, &["absent", "deep"]).unwrap();
        let mut e = json!({"a": {}, "b": 1});
        remove(&mut e, &["a", "b", "c"]).unwrap();
        assert_eq!(e, json!({"b": 1}));
        assert_eq!(remove(&mut v, &[] as &[&str]), Err(DictsError::RootPath));
        let mut w = json!({"a": 1});
        assert!(ensure(&mut w, &["a", "b"], json!(1)).is_err());
    }
}
