//! Managed webhook configurations: one `ValidatingWebhookConfiguration` and one
//! `MutatingWebhookConfiguration`, each with one webhook per handler (Kopf's
//! `build_webhooks` and `configuration_manager`).
//!
//! Several replicas may manage the same configurations: each keeps an annotation
//! `replica.kopf.dev/<replica>` on them with the time its claim expires (renewed on every
//! reconciliation). A replica that exits removes the webhooks only when no other replica's
//! claim is still live; else it only withdraws its own claim.

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
    /// A namespace the webhooks never apply to (the operator's own: its own objects stay
    /// writable when its webhooks fail).
    pub exclude_namespace: Option<String>,
}

/// How long the API server waits for a webhook: short, so that a stuck webhook fails
/// its request long before the API server's own request timeout.
pub const TIMEOUT_SECONDS: u64 = 10;

/// The prefix of the replicas' claims on the configurations.
pub const CLAIM_PREFIX: &str = "replica.kopf.dev/";

/// The annotation key of a replica's claim: its identity made a valid name part (the
/// tail, where generated identities differ, is kept).
pub fn claim_key(identity: &str) -> String {
    let cleaned: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let tail: String = cleaned
        .chars()
        .rev()
        .take(63)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let trimmed = tail.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    format!(
        "{CLAIM_PREFIX}{}",
        if trimmed.is_empty() { "replica" } else { trimmed }
    )
}

/// Whether another replica's claim on a configuration is live at `now`.
pub fn others_alive(config: &Value, own_key: &str, now: jiff::Timestamp) -> usize {
    config
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(CLAIM_PREFIX) && k.as_str() != own_key)
        .filter_map(|(_, v)| v.as_str()?.parse::<jiff::Timestamp>().ok())
        .filter(|expires| *expires > now)
        .count()
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
    let namespace_selector = match &client.exclude_namespace {
        Some(ns) => json!({"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [ns]},
        ]}),
        None => json!({}),
    };
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
                "namespaceSelector": namespace_selector,
                "clientConfig": {
                    "url": format!("{}/{}", client.url.trim_end_matches('/'), handler_path(h.id())),
                    "caBundle": ca,
                },
                "timeoutSeconds": TIMEOUT_SECONDS,
                "admissionReviewVersions": ["v1"],
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

/// Wraps the API's errors about one configuration.
fn api_error(kind: &'static str, name: &str) -> impl Fn(kube::Error) -> ConfigError + use<> {
    let name = name.to_owned();
    move |source| ConfigError::Api {
        kind,
        name: name.clone(),
        source,
    }
}

/// Creates the configuration if absent, else overwrites its `webhooks`; `annotations`
/// (a JSON object, `null` values removing keys) are merged into its metadata.
pub async fn apply(
    client: &Client,
    kind: HandlerKind,
    name: &str,
    webhooks: Vec<Value>,
    annotations: Value,
) -> Result<(), ConfigError> {
    let (ar, kind_name) = api_resource(kind);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let fail = api_error(kind_name, name);
    let patch = json!({"metadata": {"annotations": annotations}, "webhooks": webhooks});
    match api.get_opt(name).await.map_err(&fail)? {
        Some(_) => {
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(&fail)?;
        }
        None => {
            let mut annotations = annotations.clone();
            if let Some(map) = annotations.as_object_mut() {
                map.retain(|_, v| !v.is_null());
            }
            let body = json!({
                "apiVersion": ar.api_version,
                "kind": kind_name,
                "metadata": {"name": name, "annotations": annotations},
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
                        .map_err(&fail)?;
                }
                Err(error) => return Err(fail(error)),
            }
        }
    }
    Ok(())
}

/// What an exiting replica did to a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// Other live replicas serve it: only this replica's claim was withdrawn.
    ToOthers(usize),
    /// No other live replica: the webhooks were replaced by `remaining` (the persistent ones).
    Removed,
    /// The configuration does not exist.
    Absent,
}

/// On exit: withdraws this replica's claim, and replaces the webhooks by `remaining`
/// only when no other replica's claim is live.
pub async fn leave(
    client: &Client,
    kind: HandlerKind,
    name: &str,
    own_key: &str,
    remaining: Vec<Value>,
) -> Result<Left, ConfigError> {
    let (ar, kind_name) = api_resource(kind);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let fail = api_error(kind_name, name);
    let Some(current) = api.get_opt(name).await.map_err(&fail)? else {
        return Ok(Left::Absent);
    };
    let current = serde_json::to_value(&current).map_err(|source| ConfigError::Build {
        kind: kind_name,
        name: name.to_owned(),
        source,
    })?;
    let others = others_alive(&current, own_key, jiff::Timestamp::now());
    let withdraw = json!({own_key: null});
    let (patch, left) = if others > 0 {
        (
            json!({"metadata": {"annotations": withdraw}}),
            Left::ToOthers(others),
        )
    } else {
        (
            json!({"metadata": {"annotations": withdraw}, "webhooks": remaining}),
            Left::Removed,
        )
    };
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(&fail)?;
    Ok(left)
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
    fn claims_are_valid_annotation_keys_and_expire() {
        let key = claim_key("user@host.example/20261205073230/xyz");
        assert_eq!(key, "replica.kopf.dev/user-host.example-20261205073230-xyz");
        let long = claim_key(&format!("{}/tail9", "a".repeat(100)));
        let name = long.strip_prefix(CLAIM_PREFIX).unwrap();
        assert!(name.len() <= 63 && name.ends_with("tail9"), "{long}");
        assert_eq!(claim_key("@@@"), "replica.kopf.dev/replica");
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let config = json!({"metadata": {"annotations": {
            "replica.kopf.dev/me": "2026-01-01T00:01:00Z",
            "replica.kopf.dev/live": "2026-01-01T00:01:00Z",
            "replica.kopf.dev/dead": "2025-12-31T23:59:00Z",
            "replica.kopf.dev/garbage": "soon",
            "other": "2026-01-01T00:01:00Z",
        }}});
        assert_eq!(others_alive(&config, "replica.kopf.dev/me", now), 1);
        assert_eq!(others_alive(&json!({}), "replica.kopf.dev/me", now), 0);
    }

    #[test]
    fn paths_are_escaped() {
        assert_eq!(handler_path("validate_spec"), "validate_spec");
        assert_eq!(handler_path("a b"), "a%20b");
    }
}
