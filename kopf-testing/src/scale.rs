//! The `/scale` subresource (autoscaling/v1 Scale) for deployments, replicasets and CRDs
//! declaring it.

use serde_json::{Value, json};

use crate::api::{ReqCtx, Shared};
use crate::error::ApiError;
use crate::patch::{PatchKind, apply_patch};
use crate::render::json_path;
use crate::resources::ResourceDef;

fn path_segments(p: &str) -> Vec<String> {
    p.trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The Scale view of an object.
pub fn to_scale(def: &ResourceDef, obj: &Value) -> Value {
    let Some(sc) = &def.scale else { return Value::Null };
    let spec = json_path(obj, &sc.spec_replicas_path)
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let status = json_path(obj, &sc.status_replicas_path)
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let mut st = json!({"replicas": status});
    if let Some(sel) = sc.label_selector_path.as_deref().and_then(|p| json_path(obj, p)) {
        st["selector"] = sel.clone();
    }
    let m = obj.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"),
                     "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp")},
        "spec": {"replicas": spec},
        "status": st,
    })
}

/// PUT (patch = None) or PATCH of `/scale`. Returns the new Scale.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn update_scale(
    shared: &Shared,
    def: &ResourceDef,
    version: &str,
    ns: &str,
    name: &str,
    patch: Option<PatchKind>,
    body: Value,
    ctx: &ReqCtx,
) -> Result<Value, ApiError> {
    let Some(sc) = def.scale.clone() else {
        return Err(ApiError::unknown_path());
    };
    let v = shared
        .update_loop(def, version, ns, name, None, ctx, false, |old| {
            let mut scale = to_scale(def, old);
            match patch {
                Some(PatchKind::Apply) => {
                    return Err(ApiError::unsupported_media("apply is not supported on scale"));
                }
                Some(k) => apply_patch(k, &mut scale, &body)?,
                None => scale = body.clone(),
            }
            let want_rv = scale
                .pointer("/metadata/resourceVersion")
                .and_then(|r| r.as_str())
                .unwrap_or_default();
            let old_rv = old
                .pointer("/metadata/resourceVersion")
                .and_then(|r| r.as_str())
                .unwrap_or_default();
            if !want_rv.is_empty() && want_rv != old_rv {
                return Err(ApiError::stale(&def.group, &def.plural, name));
            }
            let Some(replicas) = scale.pointer("/spec/replicas").and_then(|r| r.as_i64()) else {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    &[("FieldValueRequired", "spec.replicas", "Required value".into())],
                ));
            };
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    &[(
                        "FieldValueInvalid",
                        "spec.replicas",
                        format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                    )],
                ));
            }
            let mut new = old.clone();
            let segs = path_segments(&sc.spec_replicas_path);
            let mut cur = &mut new;
            for s in &segs[..segs.len().saturating_sub(1)] {
                if !cur.get(s).is_some_and(|x| x.is_object()) {
                    cur[s.as_str()] = json!({});
                }
                cur = &mut cur[s.as_str()];
            }
            if let Some(last) = segs.last() {
                cur[last.as_str()] = json!(replicas);
            }
            Ok(new)
        })
        .await?;
    Ok(to_scale(def, &v))
}
