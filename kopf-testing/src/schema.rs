//! Structural-schema defaulting and pruning for custom resources (a subset of kube's).

use serde_json::Value;

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// Apply `default`s and drop unknown fields, in place. `root` is true for the object itself
/// (apiVersion, kind and metadata are always kept there). Dropped field paths are appended to
/// `pruned` (dotted, e.g. `spec.junk`).
pub fn default_and_prune(
    value: &mut Value,
    schema: &Value,
    root: bool,
    path: &str,
    pruned: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(|p| p.as_object());
            let additional = schema.get("additionalProperties");
            if let Some(props) = props {
                for (k, sub) in props {
                    if !map.contains_key(k)
                        && let Some(d) = sub.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                }
            }
            let keep_unknown = preserves(schema)
                || schema
                    .get("x-kubernetes-embedded-resource")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false)
                    && props.is_none();
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if root && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&k)).or(match additional {
                    Some(Value::Object(_)) => additional,
                    _ => None,
                });
                let child_path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match sub {
                    Some(sub) => {
                        if let Some(child) = map.get_mut(&k) {
                            default_and_prune(child, sub, false, &child_path, pruned);
                        }
                    }
                    None => {
                        let allowed = keep_unknown || matches!(additional, Some(Value::Bool(true)));
                        if !allowed {
                            map.remove(&k);
                            pruned.push(child_path);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    default_and_prune(it, item_schema, false, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

/// The OpenAPI type name of a JSON value, as kube's validation errors print it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    }
}

/// One validation failure: `(reason, field, message)` as in a 422 Status's causes.
pub type Cause = (&'static str, String, String);

/// Validate a (pruned, defaulted) object against a structural schema: `type` (with `nullable` and
/// `x-kubernetes-int-or-string`), `enum` and `required`, the checks kube-apiserver answers with
/// 422 Invalid. `root` skips apiVersion, kind and metadata.
pub fn validate(value: &Value, schema: &Value, root: bool, path: &str, causes: &mut Vec<Cause>) {
    let field = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    let shown = if path.is_empty() { "<root>" } else { path };
    if value.is_null() && schema.get("nullable").and_then(|n| n.as_bool()) == Some(true) {
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if int_or_string {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            causes.push((
                "FieldValueTypeInvalid",
                shown.to_string(),
                format!(
                    "Invalid value: \"{t}\": {shown} in body must be of type integer,string: \"{t}\"",
                    t = type_name(value)
                ),
            ));
            return;
        }
    } else if let Some(want) = schema.get("type").and_then(|t| t.as_str())
        && !type_ok(want, value)
    {
        causes.push((
            "FieldValueTypeInvalid",
            shown.to_string(),
            format!(
                "Invalid value: \"{t}\": {shown} in body must be of type {want}: \"{t}\"",
                t = type_name(value)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(|e| e.as_array())
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        let got = match value {
            Value::String(s) => format!("\"{s}\""),
            v => v.to_string(),
        };
        causes.push((
            "FieldValueNotSupported",
            shown.to_string(),
            format!("Unsupported value: {got}: supported values: {}", list.join(", ")),
        ));
    }
    match value {
        Value::Object(map) => {
            for r in schema
                .get("required")
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(k) = r.as_str()
                    && !map.contains_key(k)
                {
                    causes.push(("FieldValueRequired", field(k), "Required value".into()));
                }
            }
            let props = schema.get("properties").and_then(|p| p.as_object());
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                if root && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    continue;
                }
                if let Some(sub) = props.and_then(|p| p.get(k)).or(additional) {
                    validate(v, sub, false, &field(k), causes);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, it) in items.iter().enumerate() {
                    validate(it, item_schema, false, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

/// Drop `null`s where the schema does not allow them (kube prunes such nulls rather than refusing).
pub fn drop_non_nullable_nulls(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(|p| p.as_object());
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            map.retain(|k, v| {
                let sub = props.and_then(|p| p.get(k)).or(additional);
                !(v.is_null()
                    && sub.is_some_and(|s| s.get("nullable").and_then(|n| n.as_bool()) != Some(true)))
            });
            for (k, v) in map.iter_mut() {
                if let Some(sub) = props.and_then(|p| p.get(k)).or(additional) {
                    drop_non_nullable_nulls(v, sub);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for it in items {
                    drop_non_nullable_nulls(it, item_schema);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prunes_and_defaults() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"a": {"type": "integer", "default": 5}, "b": {"type": "string"}}},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }});
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"b": "x", "junk": 1}, "status": {"anything": {"deep": 1}}, "extra": 1});
        let mut pruned = vec![];
        default_and_prune(&mut v, &schema, true, "", &mut pruned);
        assert_eq!(pruned, ["extra", "spec.junk"]);
        assert_eq!(
            v,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"a": 5, "b": "x"}, "status": {"anything": {"deep": 1}}})
        );
    }

    #[test]
    fn validates_types_enums_and_required() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["count"], "properties": {
                "count": {"type": "integer"},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "port": {"x-kubernetes-int-or-string": true},
                "ratio": {"type": "number"},
                "maybe": {"type": "string", "nullable": true},
                "tags": {"type": "array", "items": {"type": "string"}},
            }},
        }});
        let ok = json!({"metadata": {"name": 1}, "spec": {"count": 1, "mode": "a", "port": "http",
            "ratio": 2, "maybe": null, "tags": ["x"]}});
        let mut causes = vec![];
        validate(&ok, &schema, true, "", &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let bad = json!({"spec": {"mode": "c", "port": true, "tags": [1]}});
        validate(&bad, &schema, true, "", &mut causes);
        let fields: Vec<(&str, &str)> = causes.iter().map(|(r, f, _)| (*r, f.as_str())).collect();
        assert_eq!(
            fields,
            [
                ("FieldValueRequired", "spec.count"),
                ("FieldValueNotSupported", "spec.mode"),
                ("FieldValueTypeInvalid", "spec.port"),
                ("FieldValueTypeInvalid", "spec.tags[0]"),
            ]
        );
        assert_eq!(
            causes[1].2,
            "Unsupported value: \"c\": supported values: \"a\", \"b\""
        );
        assert_eq!(
            causes[3].2,
            "Invalid value: \"integer\": spec.tags[0] in body must be of type string: \"integer\""
        );
        let mut nulls = json!({"spec": {"count": null, "maybe": null}});
        drop_non_nullable_nulls(&mut nulls, &schema);
        assert_eq!(nulls, json!({"spec": {"maybe": null}}));
    }
}
