//! Calling admission webhooks as kube-apiserver does: for create/update/delete requests
//! that match the rules of stored `MutatingWebhookConfiguration`s and
//! `ValidatingWebhookConfiguration`s, an `AdmissionReview` (v1) is POSTed over HTTPS
//! (verifying the server against the webhook's `caBundle`); mutations (JSONPatch) are
//! applied, denials are returned with the webhook's message and code, and `failurePolicy`
//! and `timeoutSeconds` are honoured. Mutating webhooks run first (in order), then the
//! validating ones.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

use crate::admission::{AdmissionDecision, AdmissionHook, AdmissionRequest, Operation};
use crate::resources::GroupResource;
use crate::store::{State, labels_of};

/// The largest webhook response read.
const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// The admission hook that calls the stored webhook configurations.
pub(crate) struct WebhookCaller {
    state: Arc<Mutex<State>>,
}

impl WebhookCaller {
    /// A caller reading the configurations from this store.
    pub(crate) fn new(state: Arc<Mutex<State>>) -> Self {
        Self { state }
    }

    /// The stored webhooks of one configuration kind, in name order.
    fn webhooks(&self, plural: &str) -> Vec<Value> {
        let gr = GroupResource {
            group: "admissionregistration.k8s.io".into(),
            resource: plural.into(),
        };
        let st = self.state.lock();
        let Some(coll) = st.collections.get(&gr) else {
            return Vec::new();
        };
        coll.objects
            .values()
            .map(|s| s.value())
            .flat_map(|c| {
                c.get("webhooks")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    fn kind_of(&self, group: &str, version: &str, plural: &str) -> String {
        self.state
            .lock()
            .registry
            .lookup(group, version, plural)
            .map(|d| d.kind.clone())
            .unwrap_or_default()
    }

    async fn admit_all(&self, request: AdmissionRequest) -> AdmissionDecision {
        if request.group == "admissionregistration.k8s.io" {
            // kube-apiserver never calls webhooks about webhook configurations.
            return AdmissionDecision::Allow;
        }
        let mutating = self.webhooks("mutatingwebhookconfigurations");
        let validating = self.webhooks("validatingwebhookconfigurations");
        if mutating.is_empty() && validating.is_empty() {
            return AdmissionDecision::Allow;
        }
        let kind = self.kind_of(&request.group, &request.version, &request.resource);
        let mut object = request.object.clone();
        let mut mutated = false;
        for (webhooks, is_mutating) in [(mutating, true), (validating, false)] {
            for webhook in webhooks {
                let current = AdmissionRequest {
                    object: object.clone(),
                    ..request.clone()
                };
                if !matches(&webhook, &current) {
                    continue;
                }
                match call(&webhook, &current, &kind).await {
                    Verdict::Allowed(Some(patch)) if is_mutating => {
                        if let Some(obj) = object.as_mut() {
                            if let Err(error) = json_patch::patch(obj, &patch) {
                                return AdmissionDecision::Deny {
                                    code: 500,
                                    message: format!(
                                        "Internal error occurred: admission webhook {:?} returned an inapplicable patch: {error}",
                                        name(&webhook)
                                    ),
                                };
                            }
                            mutated = true;
                        }
                    }
                    Verdict::Allowed(_) => {}
                    Verdict::Denied { code, message } => {
                        return AdmissionDecision::Deny { code, message };
                    }
                    Verdict::Failed(reason) => {
                        if webhook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore") {
                            tracing::debug!("ignoring the failure of webhook {:?}: {reason}", name(&webhook));
                            continue;
                        }
                        return AdmissionDecision::Deny {
                            code: 500,
                            message: format!(
                                "Internal error occurred: failed calling webhook {:?}: {reason}",
                                name(&webhook)
                            ),
                        };
                    }
                }
            }
        }
        match object {
            Some(obj) if mutated => AdmissionDecision::Mutate(obj),
            _ => AdmissionDecision::Allow,
        }
    }
}

impl AdmissionHook for WebhookCaller {
    fn admit(&self, request: AdmissionRequest) -> BoxFuture<'_, AdmissionDecision> {
        Box::pin(self.admit_all(request))
    }
}

fn name(webhook: &Value) -> &str {
    webhook.get("name").and_then(Value::as_str).unwrap_or_default()
}

fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
    }
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether a rule list accepts the request (operations, groups, versions, resources
/// with `*` and `plural/subresource` forms, scope).
fn rules_match(webhook: &Value, request: &AdmissionRequest) -> bool {
    let op = operation_name(request.operation);
    let resource = match &request.subresource {
        Some(sub) => format!("{}/{sub}", request.resource),
        None => request.resource.clone(),
    };
    let Some(rules) = webhook.get("rules").and_then(Value::as_array) else {
        return false;
    };
    rules.iter().any(|rule| {
        let any = |key: &str, want: &str| strings(rule.get(key)).iter().any(|v| *v == "*" || *v == want);
        let resource_ok = strings(rule.get("resources")).iter().any(|r| {
            *r == "*/*"
                || *r == resource
                || (request.subresource.is_none() && *r == "*")
                || r.strip_prefix("*/")
                    .is_some_and(|sub| request.subresource.as_deref() == Some(sub))
                || r.strip_suffix("/*")
                    .is_some_and(|plural| plural == request.resource && request.subresource.is_some())
        });
        let scope_ok = match rule.get("scope").and_then(Value::as_str) {
            Some("Namespaced") => !request.namespace.is_empty(),
            Some("Cluster") => request.namespace.is_empty(),
            _ => true,
        };
        any("operations", op)
            && any("apiGroups", &request.group)
            && any("apiVersions", &request.version)
            && resource_ok
            && scope_ok
    })
}

/// Whether a label selector (`matchLabels`, `matchExpressions`) selects these labels.
fn selector_matches(selector: Option<&Value>, object: Option<&Value>) -> bool {
    let Some(selector) = selector.filter(|s| s.as_object().is_some_and(|o| !o.is_empty())) else {
        return true;
    };
    let labels = object.map(labels_of).unwrap_or_default();
    let get = |k: &str| labels.get(k).map(String::as_str);
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if get(k) != v.as_str() {
                return false;
            }
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values = strings(e.get("values"));
            let have = get(key);
            let ok = match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// kube-apiserver's matching: rules, then the objectSelector against the new or the old
/// object (either suffices).
fn matches(webhook: &Value, request: &AdmissionRequest) -> bool {
    if !rules_match(webhook, request) {
        return false;
    }
    let selector = webhook.get("objectSelector");
    selector_matches(selector, request.object.as_ref())
        || selector_matches(selector, request.old_object.as_ref())
}

enum Verdict {
    Allowed(Option<json_patch::Patch>),
    Denied { code: u16, message: String },
    Failed(String),
}

fn review(request: &AdmissionRequest, kind: &str) -> Value {
    let uid = format!("{:032x}", rand::random::<u128>());
    let gvk = json!({"group": request.group, "version": request.version, "kind": kind});
    let gvr = json!({"group": request.group, "version": request.version, "resource": request.resource});
    let mut r = json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": request.name,
        "operation": operation_name(request.operation),
        "userInfo": {"username": request.user, "groups": ["system:authenticated"]},
        "object": request.object.clone().unwrap_or(Value::Null),
        "oldObject": request.old_object.clone().unwrap_or(Value::Null),
        "dryRun": request.dry_run,
        "options": Value::Null,
    });
    if !request.namespace.is_empty() {
        r["namespace"] = json!(request.namespace);
    }
    if let Some(sub) = &request.subresource {
        r["subResource"] = json!(sub);
        r["requestSubResource"] = json!(sub);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r})
}

/// Calls one webhook; every failure is a [`Verdict::Failed`] (subject to failurePolicy).
async fn call(webhook: &Value, request: &AdmissionRequest, kind: &str) -> Verdict {
    if request.dry_run {
        let side_effects = webhook
            .get("sideEffects")
            .and_then(Value::as_str)
            .unwrap_or("Unknown");
        if !matches!(side_effects, "None" | "NoneOnDryRun") {
            return Verdict::Denied {
                code: 400,
                message: format!("admission webhook {:?} does not support dry run", name(webhook)),
            };
        }
    }
    let timeout = webhook
        .get("timeoutSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(10)
        .clamp(1, 30);
    let body = review(request, kind);
    let answer = match tokio::time::timeout(Duration::from_secs(timeout), post(webhook, &body)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(reason)) => return Verdict::Failed(reason),
        Err(_) => {
            return Verdict::Failed(format!(
                "failed to call webhook: context deadline exceeded (timeout {timeout}s)"
            ));
        }
    };
    let Some(response) = answer.get("response").filter(|r| r.is_object()) else {
        return Verdict::Failed("the webhook response has no response".into());
    };
    if response.get("uid") != body.pointer("/request/uid") {
        return Verdict::Failed("the webhook response uid does not match the request uid".into());
    }
    if response.get("allowed").and_then(Value::as_bool) != Some(true) {
        let status = response.get("status");
        let code = status
            .and_then(|s| s.get("code"))
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| *c >= 400)
            .unwrap_or(400);
        let text = status
            .and_then(|s| s.get("message").or_else(|| s.get("reason")))
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty());
        let message = match text {
            Some(text) => format!("admission webhook {:?} denied the request: {text}", name(webhook)),
            None => format!(
                "admission webhook {:?} denied the request without explanation",
                name(webhook)
            ),
        };
        return Verdict::Denied { code, message };
    }
    let Some(patch) = response.get("patch").and_then(Value::as_str) else {
        return Verdict::Allowed(None);
    };
    if response.get("patchType").and_then(Value::as_str) != Some("JSONPatch") {
        return Verdict::Failed("the webhook returned a patch without patchType JSONPatch".into());
    }
    let decoded = match base64::engine::general_purpose::STANDARD.decode(patch) {
        Ok(decoded) => decoded,
        Err(error) => return Verdict::Failed(format!("the webhook patch is not base64: {error}")),
    };
    match serde_json::from_slice::<json_patch::Patch>(&decoded) {
        Ok(patch) => Verdict::Allowed(Some(patch)),
        Err(error) => Verdict::Failed(format!("the webhook patch is not a JSONPatch: {error}")),
    }
}

/// POSTs the review over HTTPS, verifying the server against the caBundle.
async fn post(webhook: &Value, body: &Value) -> Result<Value, String> {
    let config = webhook
        .get("clientConfig")
        .ok_or("the webhook has no clientConfig")?;
    let url = config
        .get("url")
        .and_then(Value::as_str)
        .ok_or("the emulator can only call webhooks by clientConfig.url (no services)")?;
    let url = url::Url::parse(url).map_err(|e| format!("bad webhook URL {url:?}: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!("webhook URL {url} is not https"));
    }
    let host = url.host_str().ok_or("the webhook URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port().unwrap_or(443);

    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = config.get("caBundle").and_then(Value::as_str) {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .map_err(|e| format!("the caBundle is not base64: {e}"))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("bad caBundle PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("unusable caBundle certificate: {e}"))?;
        }
    }
    if roots.is_empty() {
        return Err("the webhook has no caBundle (system roots are not used by the emulator)".into());
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(host.clone()).map_err(|e| format!("bad host {host:?}: {e}"))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("failed to call webhook: Post {url:?}: dial tcp {host}:{port}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("failed to call webhook: Post {url:?}: tls: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("failed to call webhook: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let request = http::Request::post(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("failed to call webhook: {e}"))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| format!("failed to read the webhook response: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "the server responded with {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("the webhook response is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: Operation, sub: Option<&str>, labels: Value) -> AdmissionRequest {
        AdmissionRequest {
            operation: op,
            group: "kopf.dev".into(),
            version: "v1".into(),
            resource: "kopfexamples".into(),
            subresource: sub.map(String::from),
            namespace: "default".into(),
            name: "x".into(),
            object: Some(json!({"metadata": {"name": "x", "labels": labels}})),
            old_object: None,
            user: "u".into(),
            dry_run: false,
        }
    }

    #[test]
    fn rules_and_selectors() {
        let webhook = json!({
            "rules": [{"apiGroups": ["kopf.dev"], "apiVersions": ["v1"], "resources": ["kopfexamples"],
                       "operations": ["CREATE"], "scope": "*"}],
            "objectSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}
        });
        assert!(matches(
            &webhook,
            &request(Operation::Create, None, json!({"app": "a"}))
        ));
        assert!(!matches(
            &webhook,
            &request(Operation::Create, None, json!({"app": "b"}))
        ));
        assert!(!matches(
            &webhook,
            &request(Operation::Update, None, json!({"app": "a"}))
        ));
        assert!(!matches(
            &webhook,
            &request(Operation::Create, Some("status"), json!({"app": "a"}))
        ));
        let any = json!({"rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"], "operations": ["*"]}]});
        assert!(matches(
            &any,
            &request(Operation::Delete, Some("status"), json!({}))
        ));
        let none = json!({"rules": []});
        assert!(!matches(&none, &request(Operation::Create, None, json!({}))));
    }
}
