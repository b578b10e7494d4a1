//! Diffs between essences, as Kopf's `diffs.py`: `diff(old, new)` yields `DiffItem`s of
//! `add`/`change`/`remove` per field; objects are compared recursively, lists as whole values;
//! `null` and absence are the same thing (Python's `None`).

use std::fmt;

use serde_json::{Map, Value};

use super::dicts;
use super::pyjson::py_eq;

/// The kind of change of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiffOperation {
    /// The field appeared (its old value is `null`/absent).
    Add,
    /// The field changed from one non-null value to another.
    Change,
    /// The field disappeared (its new value is `null`/absent).
    Remove,
}

impl DiffOperation {
    /// The operation as Kopf writes it: `add`, `change`, `remove`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Change => "change",
            Self::Remove => "remove",
        }
    }

    /// Parse Kopf's operation name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "add" => Some(Self::Add),
            "change" => Some(Self::Change),
            "remove" => Some(Self::Remove),
            _ => None,
        }
    }
}

impl fmt::Display for DiffOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One changed field: Kopf's `DiffItem(operation, field, old, new)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffItem {
    /// What happened to the field.
    pub operation: DiffOperation,
    /// The field's path from the diffed root (empty for the root itself).
    pub field: Vec<String>,
    /// The old value (`null` for additions).
    pub old: Value,
    /// The new value (`null` for removals).
    pub new: Value,
}

impl DiffItem {
    /// Kopf's tuple form as JSON: `["add", ["spec", "x"], null, 1]`.
    pub fn to_json(&self) -> Value {
        Value::Array(vec![
            Value::String(self.operation.as_str().to_owned()),
            Value::Array(self.field.iter().cloned().map(Value::String).collect()),
            self.old.clone(),
            self.new.clone(),
        ])
    }

    /// Parse Kopf's tuple form; `None` if malformed.
    pub fn from_json(value: &Value) -> Option<Self> {
        let [op, field, old, new] = value.as_array()?.as_slice() else {
            return None;
        };
        let field = field
            .as_array()?
            .iter()
            .map(|k| k.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            operation: DiffOperation::parse(op.as_str()?)?,
            field,
            old: old.clone(),
            new: new.clone(),
        })
    }
}

/// A whole diff: the sequence of changed fields.
pub type Diff = Vec<DiffItem>;

/// The diff as Kopf's JSON list of tuples (the `diff` kwarg in the ABI).
pub fn diff_to_json(diff: &[DiffItem]) -> Value {
    Value::Array(diff.iter().map(DiffItem::to_json).collect())
}

/// Which side's fields a diff considers (Kopf's `DiffScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiffScope {
    /// Fields of both sides (the default).
    #[default]
    Full,
    /// Only fields present in the left side (the source); extra fields on the right are ignored.
    Left,
    /// Only fields present in the right side (the target).
    Right,
}

impl DiffScope {
    fn left(self) -> bool {
        matches!(self, Self::Full | Self::Left)
    }

    fn right(self) -> bool {
        matches!(self, Self::Full | Self::Right)
    }
}

/// Like [`diff`], limited to one side's fields.
pub fn diff_scoped(a: Option<&Value>, b: Option<&Value>, scope: DiffScope) -> Diff {
    let mut out = Vec::new();
    let mut path = Vec::new();
    diff_into(
        &mut out,
        &mut path,
        a.unwrap_or(&Value::Null),
        b.unwrap_or(&Value::Null),
        scope,
    );
    out
}

/// Calculate the diff between two values (`None` = absent = `null`).
///
/// Within an object, the order is: added keys (in `b`'s order), removed keys (in `a`'s
/// order), then common keys (in `a`'s order). Kopf iterates Python frozensets there, so
/// its order is arbitrary; compare diffs as multisets when checking against Kopf.
pub fn diff(a: Option<&Value>, b: Option<&Value>) -> Diff {
    diff_scoped(a, b, DiffScope::Full)
}

/// Whether two values differ in Kopf's sense (equivalent to a non-empty [`diff`], cheaper).
pub fn differs(a: Option<&Value>, b: Option<&Value>) -> bool {
    !py_eq(a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null))
}

fn diff_into(out: &mut Diff, path: &mut Vec<String>, a: &Value, b: &Value, scope: DiffScope) {
    if py_eq(a, b) {
        return;
    }
    match (a, b) {
        (Value::Null, _) => out.push(item(DiffOperation::Add, path, a, b)),
        (_, Value::Null) => out.push(item(DiffOperation::Remove, path, a, b)),
        (Value::Object(am), Value::Object(bm)) => diff_maps(out, path, am, bm, scope),
        _ => out.push(item(DiffOperation::Change, path, a, b)),
    }
}

fn diff_maps(
    out: &mut Diff,
    path: &mut Vec<String>,
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    scope: DiffScope,
) {
    if scope.right() {
        for (key, bv) in b {
            if !a.contains_key(key) {
                path.push(key.clone());
                diff_into(out, path, &Value::Null, bv, scope);
                path.pop();
            }
        }
    }
    if scope.left() {
        for (key, av) in a {
            if !b.contains_key(key) {
                path.push(key.clone());
                diff_into(out, path, av, &Value::Null, scope);
                path.pop();
            }
        }
    }
    for (key, av) in a {
        if let Some(bv) = b.get(key) {
            path.push(key.clone());
            diff_into(out, path, av, bv, scope);
            path.pop();
        }
    }
}

fn item(operation: DiffOperation, path: &[String], a: &Value, b: &Value) -> DiffItem {
    DiffItem {
        operation,
        field: path.to_vec(),
        old: a.clone(),
        new: b.clone(),
    }
}

/// Reduce a diff to a field (Kopf's `reduce`): items under the field are re-rooted at it;
/// items of its parents (e.g. the whole `spec` added) are re-diffed for the field's values.
pub fn reduce<S: AsRef<str>>(diff: &[DiffItem], path: &[S]) -> Diff {
    let mut out = Vec::new();
    for d in diff {
        if path.is_empty() {
            out.push(d.clone());
        } else if d.field.len() >= path.len() && d.field.iter().zip(path).all(|(f, p)| f == p.as_ref()) {
            out.push(DiffItem {
                operation: d.operation,
                field: d.field[path.len()..].to_vec(),
                old: d.old.clone(),
                new: d.new.clone(),
            });
        } else if d.field.len() < path.len() && d.field.iter().zip(path).all(|(f, p)| f == p.as_ref()) {
            let tail = &path[d.field.len()..];
            let old_tail = dicts::resolve(&d.old, tail).unwrap_or(&Value::Null);
            let new_tail = dicts::resolve(&d.new, tail).unwrap_or(&Value::Null);
            let mut sub = Vec::new();
            diff_into(&mut out, &mut sub, old_tail, new_tail, DiffScope::Full);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn simple_diffs() {
        let a = json!({"spec": {"x": 1, "l": [1]}});
        let b = json!({"spec": {"x": 2, "l": [1, 2], "y": 3}});
        let d = diff(Some(&a), Some(&b));
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].to_json(), json!(["add", ["spec", "y"], null, 3]));
        assert!(diff(Some(&a), Some(&a)).is_empty());
        assert_eq!(diff(None, Some(&a))[0].to_json(), json!(["add", [], null, a]));
        assert_eq!(DiffItem::from_json(&d[1].to_json()).as_ref(), Some(&d[1]));
    }

    #[test]
    fn reduce_to_field() {
        let d = diff(None, Some(&json!({"spec": {"x": {"y": 1}}})));
        let r = reduce(&d, &["spec", "x"]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].to_json(), json!(["add", [], null, {"y": 1}]));
    }
}
