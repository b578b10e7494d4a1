//! Built-in defaulting that kube-apiserver does on decode/create and that clients observe:
//! namespace name labels, Secret `stringData` folding and `type`, Pod `Pending` status,
//! Service cluster IPs.

use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine;
use serde_json::{Value, json};

use crate::resources::ResourceDef;

static NEXT_IP: AtomicU32 = AtomicU32::new(10);

/// Defaults applied to every write (create and update) of a built-in object.
pub fn on_write(def: &ResourceDef, obj: &mut Value) {
    if def.custom || !def.group.is_empty() {
        return;
    }
    match def.plural.as_str() {
        "namespaces" => {
            if let Some(name) = obj
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .map(String::from)
            {
                let m = crate::store::meta_mut(obj);
                let labels = m.entry("labels").or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), Value::String(name));
                }
            }
        }
        "secrets" => {
            if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                if !obj.get("data").is_some_and(|d| d.is_object()) {
                    obj["data"] = json!({});
                }
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or_default();
                    obj["data"][k.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(s));
                }
            }
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
        }
        _ => {}
    }
}

/// Defaults applied only on create.
pub fn on_create(def: &ResourceDef, obj: &mut Value) {
    on_write(def, obj);
    if def.custom || !def.group.is_empty() {
        return;
    }
    match def.plural.as_str() {
        "pods" => {
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            if let Some(spec) = obj.get_mut("spec").and_then(|s| s.as_object_mut()) {
                spec.entry("restartPolicy").or_insert(json!("Always"));
                spec.entry("terminationGracePeriodSeconds").or_insert(json!(30));
                spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
                spec.entry("schedulerName").or_insert(json!("default-scheduler"));
                spec.entry("serviceAccountName").or_insert(json!("default"));
            }
        }
        "services" => {
            if let Some(spec) = obj.get_mut("spec").and_then(|s| s.as_object_mut()) {
                let external = spec.get("type").and_then(|t| t.as_str()) == Some("ExternalName");
                spec.entry("type").or_insert(json!("ClusterIP"));
                if !external && !spec.contains_key("clusterIP") {
                    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
                    let ip = format!("10.96.{}.{}", (n / 254) % 256, n % 254 + 1);
                    spec.insert("clusterIP".into(), json!(ip));
                    spec.insert("clusterIPs".into(), json!([ip]));
                }
            }
        }
        _ => {}
    }
}
