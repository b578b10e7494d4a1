//! RFC 6902 JSON patch with kube-apiserver's semantics (it applies patches with
//! `gopkg.in/evanphx/json-patch.v4`), which are laxer than the RFC in places:
//!
//! - `test` of a missing key (or a key holding `null`) against `null` (or with no `value`)
//!   succeeds; `kube::runtime::finalizer` relies on it for the first finalizer;
//! - `replace` of a missing key in an object adds it (array indices must exist);
//! - `add`/`copy` without a `value` or from a missing key put `null`;
//! - array indices may be negative (counted from the end) and have leading zeros;
//! - every operation fails if a parent of its path is missing, `null` or a scalar.
//!
//! Any failing operation rejects the whole patch with the same bare 422 the real server sends
//! (it does not say which operation failed); decoding failures are 400s.

use serde_json::Value;

/// Why a JSON patch could not be decoded (the real server answers 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The patch is not an array of operations.
    #[error("error decoding patch: cannot unmarshal {0} into a list of operations")]
    List(&'static str),
    /// An operation is not an object.
    #[error("error decoding patch: cannot unmarshal {0} into an operation")]
    Operation(&'static str),
    /// `op`, `path` or `from` is not a string.
    #[error("error decoding patch: cannot unmarshal {kind} into the field {field} of type string")]
    FieldType { field: &'static str, kind: &'static str },
}

/// Why an operation failed (the real server answers a bare 422 for all of these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpError {
    /// `op` is missing or names no operation.
    #[error("unexpected operation {0:?}")]
    UnknownOp(String),
    /// `path` (or `from` for move and copy) is missing.
    #[error("{0} operation: missing {1} field")]
    MissingField(&'static str, &'static str),
    /// A parent of the path is missing, `null`, or not an object or array.
    #[error("{0} operation does not apply: doc is missing path {1:?}")]
    MissingPath(&'static str, String),
    /// `remove`/`move` of a key that is not there.
    #[error("{0} operation: unable to remove nonexistent key {1:?}")]
    MissingKey(&'static str, String),
    /// An array index that is not a number or is out of range.
    #[error("{0} operation: invalid array index {1:?}")]
    BadIndex(&'static str, String),
    /// `replace` of the whole document with something that is not an object or array.
    #[error("replace operation value must be object or array")]
    BadRoot,
    /// The value at the path is not the expected one.
    #[error("value at path {0:?} did not match")]
    TestFailed(String),
}

/// A failed operation: its index in the patch and why (the emulator's addition to the real
/// server's bare message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation '/{index}' failed: {error}")]
pub(crate) struct Failed {
    /// The operation's index in the patch.
    pub(crate) index: usize,
    /// Why it failed.
    pub(crate) error: OpError,
}

/// One decoded operation; `value` is `None` when absent (treated like `null`).
#[derive(Debug)]
struct Op<'a> {
    op: Option<&'a str>,
    path: Option<&'a str>,
    from: Option<&'a str>,
    value: Option<&'a Value>,
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn string_field<'a>(
    m: &'a serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, DecodeError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(DecodeError::FieldType {
            field,
            kind: kind_name(other),
        }),
    }
}

fn decode(patch: &Value) -> Result<Vec<Op<'_>>, DecodeError> {
    let items = match patch {
        // `null` decodes to no operations at all.
        Value::Null => return Ok(vec![]),
        Value::Array(items) => items,
        other => return Err(DecodeError::List(kind_name(other))),
    };
    items
        .iter()
        .map(|item| match item {
            Value::Null => Ok(Op {
                op: None,
                path: None,
                from: None,
                value: None,
            }),
            Value::Object(m) => Ok(Op {
                op: string_field(m, "op")?,
                path: string_field(m, "path")?,
                from: string_field(m, "from")?,
                value: m.get("value"),
            }),
            other => Err(DecodeError::Operation(kind_name(other))),
        })
        .collect()
}

/// Decode and apply `patch` to `doc` operation by operation; on an error `doc` may be partly
/// patched (callers patch a copy).
pub(crate) fn apply(doc: &mut Value, patch: &Value) -> Result<Result<(), Failed>, DecodeError> {
    let ops = decode(patch)?;
    Ok(ops
        .iter()
        .enumerate()
        .try_for_each(|(index, op)| apply_one(doc, op).map_err(|error| Failed { index, error })))
}

/// `~1` is `/` and `~0` is `~`, in that order (as the Go library does).
fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// An existing index of an array of `len` elements (negative ones count from the end).
fn existing_index(len: usize, key: &str, op: &'static str) -> Result<usize, OpError> {
    let bad = || OpError::BadIndex(op, key.to_string());
    let idx: i64 = key.parse().map_err(|_| bad())?;
    let len = i64::try_from(len).map_err(|_| bad())?;
    let idx = if idx < 0 { idx + len } else { idx };
    if idx < 0 || idx >= len {
        return Err(bad());
    }
    usize::try_from(idx).map_err(|_| bad())
}

/// The value at `key` of an object or array; `None` for a missing key or a `null`.
fn get<'a>(container: &'a Value, key: &str, op: &'static str) -> Result<Option<&'a Value>, OpError> {
    let found = match container {
        Value::Object(m) => m.get(key),
        Value::Array(a) => a.get(existing_index(a.len(), key, op)?),
        _ => None,
    };
    Ok(found.filter(|v| !v.is_null()))
}

/// The object or array holding the last token of `path`, and that token; `None` if the path
/// has no tokens or a parent is missing, `null` or a scalar. Like the Go library, the part
/// before the first `/` is ignored.
fn container<'a>(doc: &'a mut Value, path: &str) -> Option<(&'a mut Value, String)> {
    let mut tokens = path.split('/').skip(1).map(unescape).collect::<Vec<_>>();
    let key = tokens.pop()?;
    let mut cur = doc;
    for token in tokens {
        let next = match cur {
            Value::Object(m) => m.get_mut(&token),
            Value::Array(a) => {
                let i = existing_index(a.len(), &token, "").ok()?;
                a.get_mut(i)
            }
            _ => None,
        }?;
        if !(next.is_object() || next.is_array()) {
            return None;
        }
        cur = next;
    }
    Some((cur, key))
}

fn add(container: &mut Value, key: String, value: Value, op: &'static str) -> Result<(), OpError> {
    match container {
        Value::Object(m) => {
            m.insert(key, value);
            Ok(())
        }
        Value::Array(a) if key == "-" => {
            a.push(value);
            Ok(())
        }
        Value::Array(a) => {
            // Up to one past the end; negative indices count from the new end.
            let bad = || OpError::BadIndex(op, key.clone());
            let idx: i64 = key.parse().map_err(|_| bad())?;
            let size = i64::try_from(a.len() + 1).map_err(|_| bad())?;
            let idx = if idx < 0 { idx + size } else { idx };
            if idx < 0 || idx >= size {
                return Err(bad());
            }
            a.insert(usize::try_from(idx).map_err(|_| bad())?, value);
            Ok(())
        }
        _ => Err(OpError::MissingPath(op, key)),
    }
}

fn remove(container: &mut Value, key: &str, op: &'static str) -> Result<Value, OpError> {
    match container {
        Value::Object(m) => m
            .remove(key)
            .ok_or_else(|| OpError::MissingKey(op, key.to_string())),
        Value::Array(a) => Ok(a.remove(existing_index(a.len(), key, op)?)),
        _ => Err(OpError::MissingKey(op, key.to_string())),
    }
}

fn apply_one(doc: &mut Value, op: &Op<'_>) -> Result<(), OpError> {
    let value = || op.value.cloned().unwrap_or(Value::Null);
    match op.op.unwrap_or_default() {
        "add" => {
            let path = op.path.ok_or(OpError::MissingField("add", "path"))?;
            let (c, key) = container(doc, path).ok_or_else(|| OpError::MissingPath("add", path.into()))?;
            add(c, key, value(), "add")
        }
        "remove" => {
            let path = op.path.ok_or(OpError::MissingField("remove", "path"))?;
            let (c, key) = container(doc, path).ok_or_else(|| OpError::MissingPath("remove", path.into()))?;
            remove(c, &key, "remove").map(drop)
        }
        "replace" => {
            let path = op.path.ok_or(OpError::MissingField("replace", "path"))?;
            if path.is_empty() {
                return match op.value {
                    Some(v @ (Value::Object(_) | Value::Array(_))) => {
                        *doc = v.clone();
                        Ok(())
                    }
                    _ => Err(OpError::BadRoot),
                };
            }
            let (c, key) =
                container(doc, path).ok_or_else(|| OpError::MissingPath("replace", path.into()))?;
            match c {
                // A missing key is added.
                Value::Object(m) => {
                    m.insert(key, value());
                }
                Value::Array(a) => {
                    let i = existing_index(a.len(), &key, "replace")?;
                    a[i] = value();
                }
                _ => return Err(OpError::MissingPath("replace", path.into())),
            }
            Ok(())
        }
        "move" => {
            let from = op.from.ok_or(OpError::MissingField("move", "from"))?;
            let (c, key) = container(doc, from).ok_or_else(|| OpError::MissingPath("move", from.into()))?;
            let moved = remove(c, &key, "move")?;
            let path = op.path.ok_or(OpError::MissingField("move", "path"))?;
            let (c, key) = container(doc, path).ok_or_else(|| OpError::MissingPath("move", path.into()))?;
            add(c, key, moved, "move")
        }
        "copy" => {
            let from = op.from.ok_or(OpError::MissingField("copy", "from"))?;
            let (c, key) = container(doc, from).ok_or_else(|| OpError::MissingPath("copy", from.into()))?;
            // A missing key copies as null.
            let copied = get(c, &key, "copy")?.cloned().unwrap_or(Value::Null);
            let path = op.path.ok_or(OpError::MissingField("copy", "path"))?;
            let (c, key) = container(doc, path).ok_or_else(|| OpError::MissingPath("copy", path.into()))?;
            add(c, key, copied, "copy")
        }
        "test" => {
            let path = op.path.ok_or(OpError::MissingField("test", "path"))?;
            let expected = op.value.filter(|v| !v.is_null());
            let actual = if path.is_empty() {
                Some(&*doc)
            } else {
                let (c, key) =
                    container(doc, path).ok_or_else(|| OpError::MissingPath("test", path.into()))?;
                get(c, &key, "test")?
            };
            // Missing (or null) equals null or an absent value; nothing else.
            match (actual, expected) {
                (None, None) => Ok(()),
                (Some(a), Some(e)) if a == e => Ok(()),
                _ => Err(OpError::TestFailed(path.to_string())),
            }
        }
        other => Err(OpError::UnknownOp(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(doc: &Value, patch: Value) -> Result<Value, OpError> {
        let mut d = doc.clone();
        apply(&mut d, &patch)
            .expect("decodes")
            .map(|()| d)
            .map_err(|f| f.error)
    }

    fn doc() -> Value {
        json!({"metadata": {"name": "x", "labels": {"a": "1", "a/b": "2"}, "finalizers": ["f/a", "f/b"]},
               "spec": {"n": 1, "nul": null}})
    }

    #[test]
    fn test_of_missing_or_null_against_null_passes() {
        let d = doc();
        let ok = |p: Value| assert!(run(&d, p.clone()).is_ok(), "{p}");
        let fails = |p: Value| assert!(run(&d, p.clone()).is_err(), "{p}");
        // kube::runtime::finalizer's first patch.
        let r = run(
            &d,
            json!([{"op": "test", "path": "/metadata/annotations", "value": null},
                   {"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}]),
        );
        assert_eq!(r.unwrap()["metadata"]["annotations"], json!({"k": "v"}));
        ok(json!([{"op": "test", "path": "/metadata/annotations"}]));
        ok(json!([{"op": "test", "path": "/spec/nul", "value": null}]));
        ok(json!([{"op": "test", "path": "/metadata/labels/a~1b", "value": "2"}]));
        ok(json!([{"op": "test", "path": "/metadata/finalizers/-1", "value": "f/b"}]));
        ok(json!([{"op": "test", "path": "/metadata/finalizers/01", "value": "f/b"}]));
        ok(json!([{"op": "test", "path": "/spec", "value": {"n": 1, "nul": null}}]));
        fails(json!([{"op": "test", "path": "/spec", "value": {"n": 1}}]));
        fails(json!([{"op": "test", "path": "/spec/n", "value": 1.0}]));
        fails(json!([{"op": "test", "path": "/metadata/annotations", "value": []}]));
        fails(json!([{"op": "test", "path": "/metadata/annotations/x", "value": null}]));
        fails(json!([{"op": "test", "path": "/spec/nul/x", "value": null}]));
        fails(json!([{"op": "test", "path": "/metadata/labels/a", "value": null}]));
        fails(json!([{"op": "test", "path": "/metadata/labels/a", "value": "2"}]));
        fails(json!([{"op": "test", "path": "/metadata/finalizers/2", "value": null}]));
        fails(json!([{"op": "test", "path": "/metadata/finalizers/-", "value": null}]));
        fails(json!([{"op": "test", "path": "metadata/labels/a", "value": "1"}]));
        fails(json!([{"op": "test", "value": null}]));
    }

    #[test]
    fn add_remove_replace_move_copy() {
        let d = doc();
        let get = |p: Value, ptr: &str| run(&d, p).map(|v| v.pointer(ptr).cloned());
        // Missing parents fail for every operation.
        for op in ["add", "replace", "remove", "test"] {
            let r = run(
                &d,
                json!([{"op": op, "path": "/metadata/annotations/x", "value": "1"}]),
            );
            assert!(matches!(r, Err(OpError::MissingPath(..))), "{op}: {r:?}");
        }
        assert!(run(&d, json!([{"op": "remove", "path": "/metadata/annotations"}])).is_err());
        assert!(run(&d, json!([{"op": "remove", "path": "/metadata/labels/zz"}])).is_err());
        assert!(run(&d, json!([{"op": "remove", "path": "/metadata/finalizers/2"}])).is_err());
        assert_eq!(
            get(
                json!([{"op": "remove", "path": "/metadata/finalizers/-1"}]),
                "/metadata/finalizers"
            ),
            Ok(Some(json!(["f/a"])))
        );
        assert_eq!(
            get(json!([{"op": "remove", "path": "/spec/nul"}]), "/spec"),
            Ok(Some(json!({"n": 1})))
        );
        // Replace of a missing key adds it; of a missing index fails.
        assert_eq!(
            get(
                json!([{"op": "replace", "path": "/metadata/annotations", "value": {"x": "1"}}]),
                "/metadata/annotations"
            ),
            Ok(Some(json!({"x": "1"})))
        );
        assert!(
            run(
                &d,
                json!([{"op": "replace", "path": "/metadata/finalizers/2", "value": "z"}])
            )
            .is_err()
        );
        // Array additions: up to one past the end, "-" appends, negative counts from the new end.
        let fin = |p: Value| get(p, "/metadata/finalizers");
        assert_eq!(
            fin(json!([{"op": "add", "path": "/metadata/finalizers/2", "value": "z"}])),
            Ok(Some(json!(["f/a", "f/b", "z"])))
        );
        assert_eq!(
            fin(json!([{"op": "add", "path": "/metadata/finalizers/-1", "value": "z"}])),
            Ok(Some(json!(["f/a", "f/b", "z"])))
        );
        assert_eq!(
            fin(json!([{"op": "add", "path": "/metadata/finalizers/0", "value": "z"}])),
            Ok(Some(json!(["z", "f/a", "f/b"])))
        );
        assert!(fin(json!([{"op": "add", "path": "/metadata/finalizers/3", "value": "z"}])).is_err());
        // No value, or a copy from a missing key: null.
        assert_eq!(
            get(json!([{"op": "add", "path": "/spec/m"}]), "/spec/m"),
            Ok(Some(Value::Null))
        );
        assert_eq!(
            get(
                json!([{"op": "copy", "from": "/spec/zz", "path": "/spec/m"}]),
                "/spec/m"
            ),
            Ok(Some(Value::Null))
        );
        // Move of a missing key fails; move into its own child fails.
        assert!(run(&d, json!([{"op": "move", "from": "/spec/zz", "path": "/spec/m"}])).is_err());
        assert!(
            run(
                &d,
                json!([{"op": "move", "from": "/spec", "path": "/spec/inner"}])
            )
            .is_err()
        );
        assert_eq!(
            get(
                json!([{"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/c"}]),
                "/metadata/labels"
            ),
            Ok(Some(json!({"a/b": "2", "c": "1"})))
        );
        assert!(matches!(
            run(&d, json!([{"op": "frob", "path": "/a"}])),
            Err(OpError::UnknownOp(_))
        ));
        assert!(run(&d, json!([null])).is_err());
        assert_eq!(run(&d, json!([])), Ok(d.clone()));
        assert_eq!(run(&d, Value::Null), Ok(d.clone()));
    }

    #[test]
    fn decoding_errors() {
        let mut d = doc();
        assert!(matches!(
            apply(&mut d, &json!({"op": "add"})),
            Err(DecodeError::List("object"))
        ));
        assert!(matches!(
            apply(&mut d, &json!([1])),
            Err(DecodeError::Operation("number"))
        ));
        assert!(matches!(
            apply(&mut d, &json!([{"op": 1, "path": "/a"}])),
            Err(DecodeError::FieldType { field: "op", .. })
        ));
    }
}
