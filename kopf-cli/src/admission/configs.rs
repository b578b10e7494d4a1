//! Managed webhook configurations: one `ValidatingWebhookConfiguration` and one
//! `MutatingWebhookConfiguration`, each with one webhook per handler (Kopf's
//! `build_webhooks` and `configuration_manager`).

use base64::Engine as _;
use kopf_abi::protocol::{FilterValue, HandlerKind};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::plugin::HandlerRef;
use crate::structs::references::{self, Resource};

/// Errors of applying the configurations.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The API refused a request.
    #[error("cannot apply {kind} {name:?}: {source}")]
    Api {
        /// The configuration's kind.
        kind: &'static str,
        /// The configuration's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// The built configuration is not a valid object.
    #[error("cannot build {kind} {name:?}: {source}")]
    Build {
        /// The configuration's kind.
        kind: &'static str,
        /// The configuration's name.
        name: String,
        /// The serde error.
        source: serde_json::Error,
    },
}

/// Where and how the API server reaches the webhooks.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The base URL, e.g. `https://localhost:9443/path` (the handler id is appended).
    pub url: String,
    /// PEM of the CA that signs the server certificate.
    pub ca_pem: String,
}

/// Kopf's webhook name: the handler id with `/`→`.`, `_`→`-`, other characters outside
/// `[a-z0-9.-]` hex-escaped, plus `.<configuration name>`.
pub fn webhook_name(id: &str, managed: &str) -> String {
    let mut out = String::new();
    for c in id.chars() {
        match c {
            '/' => out.push('.'),
            '_' => out.push('-'),
            c if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("x{b:02x}"));
                }
            }
        }
    }
    format!("{out}.{managed}")
}

/// The URL path segment of a handler (its id, percent-encoded where needed).
pub fn handler_path(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The objectSelector from the handler's non-callback label filters.
fn object_selector(handler: &HandlerRef) -> Value {
    let mut expressions = Vec::new();
    for (key, filter) in &handler.spec().filters.labels {
        let expression = match filter {
            FilterValue::Present => json!({"key": key, "operator": "Exists"}),
            FilterValue::Absent => json!({"key": key, "operator": "DoesNotExist"}),
            FilterValue::Equals(Value::String(v)) => json!({"key": key, "operator": "In", "values": [v]}),
            FilterValue::Equals(v) => json!({"key": key, "operator": "In", "values": [v.to_string()]}),
            FilterValue::Callback => continue,
        };
        expressions.push(expression);
    }
    if expressions.is_empty() {
        json!({})
    } else {
        json!({"matchExpressions": expressions})
    }
}

/// The rules of a handler: one per resource its selector resolves to.
fn rules(handler: &HandlerRef, discovered: &[Resource]) -> Vec<Value> {
    let spec = handler.spec();
    let Some(selector) = spec.selector.as_ref() else {
        return Vec::new();
    };
    let resolved = match references::resolve(selector, discovered.iter()) {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(target: "kopf.admission", "Webhook {:?}: {error}", spec.id);
            Vec::new()
        }
    };
    let operations = match &spec.options.operations {
        Some(ops) if !ops.is_empty() => json!(ops),
        _ => json!(["*"]),
    };
    resolved
        .into_iter()
        .map(|r| {
            let plural = match spec.options.subresource.as_deref() {
                Some(sub) => format!("{}/{sub}", r.plural),
                None => r.plural.clone(),
            };
            json!({
                "apiGroups": [r.group],
                "apiVersions": [r.version],
                "resources": [plural],
                "operations": operations,
                "scope": "*",
            })
        })
        .collect()
}

/// The webhooks of one kind (validate or mutate), one per handler.
pub fn build_webhooks(
    handlers: &[HandlerRef],
    kind: HandlerKind,
    discovered: &[Resource],
    client: &ClientConfig,
    managed: &str,
    persistent_only: bool,
) -> Vec<Value> {
    let ca = base64::engine::general_purpose::STANDARD.encode(&client.ca_pem);
    handlers
        .iter()
        .filter(|h| h.kind() == kind)
        .filter(|h| !persistent_only || h.spec().options.persistent == Some(true))
        .map(|h| {
            let options = &h.spec().options;
            json!({
                "name": webhook_name(h.id(), managed),
                "sideEffects": if options.side_effects == Some(true) { "NoneOnDryRun" } else { "None" },
                "failurePolicy": if options.ignore_failures == Some(true) { "Ignore" } else { "Fail" },
                "matchPolicy": "Equivalent",
                "rules": rules(h, discovered),
                "objectSelector": object_selector(h),
                "clientConfig": {
                    "url": format!("{}/{}", client.url.trim_end_matches('/'), handler_path(h.id())),
                    "caBundle": ca,
                },
                "timeoutSeconds": 30,
                "admissionReviewVersions": ["v1", "v1beta1"],
            })
        })
        .collect()
}

fn api_resource(kind: HandlerKind) -> (ApiResource, &'static str) {
    let (kind_name, plural) = match kind {
        HandlerKind::Mutate => ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations"),
        _ => (
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
        ),
    };
    (
        ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind: kind_name.into(),
            plural: plural.into(),
        },
        kind_name,
    )
}

/// Creates the configuration if absent, else overwrites its `webhooks`.
pub async fn apply(
    client: &Client,
    kind: HandlerKind,
    name: &str,
    webhooks: Vec<Value>,
) -> Result<(), ConfigError> {
    let (ar, kind_name) = api_resource(kind);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let fail = |source| ConfigError::Api {
        kind: kind_name,
        name: name.to_owned(),
        source,
    };
    let patch = json!({"webhooks": webhooks});
    match api.get_opt(name).await.map_err(fail)? {
        Some(_) => {
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(fail)?;
        }
        None => {
            let body = json!({
                "apiVersion": ar.api_version,
                "kind": kind_name,
                "metadata": {"name": name},
                "webhooks": webhooks,
            });
            let object: DynamicObject =
                serde_json::from_value(body).map_err(|source| ConfigError::Build {
                    kind: kind_name,
                    name: name.to_owned(),
                    source,
                })?;
            match api.create(&PostParams::default(), &object).await {
                Ok(_) => {}
                // Created meanwhile (another replica): overwrite.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(fail)?;
                }
                Err(error) => return Err(fail(error)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kopf() {
        assert_eq!(
            webhook_name("validate_spec", "auto.kopf.dev"),
            "validate-spec.auto.kopf.dev"
        );
        assert_eq!(webhook_name("a/b", "x"), "a.b.x");
        assert_eq!(webhook_name("Aé", "x"), "x41xc3xa9.x");
    }

    #[test]
    fn paths_are_escaped() {
        assert_eq!(handler_path("validate_spec"), "validate_spec");
        assert_eq!(handler_path("a b"), "a%20b");
    }
}
