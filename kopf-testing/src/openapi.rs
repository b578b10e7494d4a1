//! A minimal OpenAPI v3 surface: enough for kubectl to detect server-side field validation
//! (PATCH operations tagged with `x-kubernetes-group-version-kind` and a `fieldValidation`
//! query parameter), so `kubectl create/apply` work without `--validate=false`.

use serde_json::{Map, Value, json};

use crate::resources::Registry;

/// `/openapi/v3`: the index of group-version documents.
pub fn v3_index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    let mut gvs = vec![("".to_string(), "v1".to_string())];
    for (g, vs) in reg.groups() {
        for v in vs {
            gvs.push((g.clone(), v));
        }
    }
    for (g, v) in gvs {
        let key = if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        };
        let hash = doc_hash(reg, &g, &v);
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

fn doc_hash(reg: &Registry, group: &str, version: &str) -> String {
    // Cheap, stable content hash (FNV-1a) so clients re-fetch after CRD changes.
    let text = gv_doc(reg, group, version)
        .map(|d| d.to_string())
        .unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

/// `/openapi/v3/apis/{group}/{version}` (or `/openapi/v3/api/v1`).
pub fn gv_doc(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs = reg.in_group_version(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for d in defs {
        // Operations carry a single GVK object; schemas carry a list of them.
        let gvk = json!({"group": d.group, "version": version, "kind": d.kind});
        let mut content = Map::new();
        for ct in [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ] {
            content.insert(ct.into(), json!({"schema": {"type": "object"}}));
        }
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "force", "in": "query", "schema": {"type": "boolean"}},
        ]);
        let item_ops = json!({
            "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk,
                    "responses": {"200": {"description": "OK"}}},
            "put": {"x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk,
                    "parameters": params, "responses": {"200": {"description": "OK"}}},
            "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
                      "parameters": params, "requestBody": {"content": content},
                      "responses": {"200": {"description": "OK"}}},
            "delete": {"x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk,
                       "responses": {"200": {"description": "OK"}}},
        });
        let coll_ops = json!({
            "get": {"x-kubernetes-action": "list", "x-kubernetes-group-version-kind": gvk,
                    "responses": {"200": {"description": "OK"}}},
            "post": {"x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk,
                     "parameters": params, "responses": {"201": {"description": "Created"}}},
        });
        let base = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", d.plural)
        } else {
            format!("{prefix}/{}", d.plural)
        };
        paths.insert(format!("{base}/{{name}}"), item_ops);
        paths.insert(base, coll_ops);
        let schema_name = format!(
            "{}.{}.{}",
            if d.group.is_empty() {
                "io.k8s.api.core".to_string()
            } else {
                d.group.split('.').rev().collect::<Vec<_>>().join(".")
            },
            version,
            d.kind
        );
        let mut schema = d
            .schemas
            .get(version)
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(schema_name, schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
