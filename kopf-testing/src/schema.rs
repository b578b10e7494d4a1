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
}
