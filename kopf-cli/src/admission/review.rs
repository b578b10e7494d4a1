//! AdmissionReview processing: parse a review, run the matching validate/mutate handlers,
//! and build the response (Kopf's `kopf/_core/engines/admission.py`).

use std::collections::BTreeMap;

use base64::Engine as _;
use kopf_abi::protocol::{AdmissionInfo, HandlerErrorKind, HandlerKind, Invocation, Outcome, ResourceInfo};
use serde_json::{Value, json};

use crate::actions::invocation::{self, Call};
use crate::intents::filters::{self, FilterMatch, FilterSubject};
use crate::observability::metrics::Metrics;
use crate::plugin::{HandlerRef, PluginSet};
use crate::structs::diffs;
use crate::structs::references::{self, Resource};

/// How long a webhook handler may take unless its `timeout` says: below the API server's
/// default webhook timeout (10 s), so that the server gets our answer, not its own
/// time-out (which with `failurePolicy: Fail` denies, and with `Ignore` admits unchecked).
const HANDLER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

/// Why a review cannot be processed (answered with HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON.
    #[error("the body is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not an AdmissionReview with a request.
    #[error("malformed AdmissionReview: {0}")]
    Malformed(&'static str),
}

/// The parts of an AdmissionReview request that the handlers get.
#[derive(Debug, Clone)]
pub struct ReviewRequest {
    /// The review's apiVersion (echoed in the response).
    pub api_version: String,
    /// The request uid (echoed in the response).
    pub uid: String,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT`.
    pub operation: String,
    /// The requested resource (group, version, plural).
    pub group: String,
    /// The requested version.
    pub version: String,
    /// The requested plural.
    pub plural: String,
    /// The requested kind (may be empty).
    pub kind: String,
    /// The subresource, if any.
    pub subresource: Option<String>,
    /// The new object (create/update).
    pub object: Option<Value>,
    /// The old object (update/delete).
    pub old_object: Option<Value>,
    /// Dry run.
    pub dryrun: bool,
    /// The requesting user.
    pub userinfo: Value,
}

impl ReviewRequest {
    /// Parses an AdmissionReview (v1 or v1beta1) body.
    pub fn parse(body: &[u8]) -> Result<Self, ReviewError> {
        let review: Value = serde_json::from_slice(body)?;
        let review = review
            .as_object()
            .ok_or(ReviewError::Malformed("not an object"))?;
        if review.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
            return Err(ReviewError::Malformed("kind is not AdmissionReview"));
        }
        let api_version = review
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or(ReviewError::Malformed("no apiVersion"))?
            .to_owned();
        let request = review
            .get("request")
            .and_then(Value::as_object)
            .ok_or(ReviewError::Malformed("no request"))?;
        let text = |key: &str| request.get(key).and_then(Value::as_str);
        let uid = text("uid")
            .ok_or(ReviewError::Malformed("no request.uid"))?
            .to_owned();
        let operation = text("operation")
            .ok_or(ReviewError::Malformed("no request.operation"))?
            .to_owned();
        let resource = request
            .get("resource")
            .and_then(Value::as_object)
            .ok_or(ReviewError::Malformed("no request.resource"))?;
        let field = |key: &str| {
            resource
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let plural = field("resource");
        if plural.is_empty() {
            return Err(ReviewError::Malformed("no request.resource.resource"));
        }
        let object = |key: &str| request.get(key).filter(|v| v.is_object()).cloned();
        Ok(Self {
            api_version,
            uid,
            operation,
            group: field("group"),
            version: field("version"),
            plural,
            kind: request
                .get("kind")
                .and_then(|k| k.get("kind"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            subresource: text("subResource").filter(|s| !s.is_empty()).map(str::to_owned),
            object: object("object"),
            old_object: object("oldObject"),
            dryrun: request.get("dryRun").and_then(Value::as_bool).unwrap_or(false),
            userinfo: request.get("userInfo").cloned().unwrap_or(json!({})),
        })
    }

    /// The body the handlers see: the new object, or the old one on deletion.
    pub fn body(&self) -> Value {
        self.object
            .clone()
            .or_else(|| self.old_object.clone())
            .unwrap_or_else(|| json!({}))
    }
}

/// Whether a webhook handler serves the requested resource: its selector matches a
/// discovered resource with the same group and plural, or (undiscovered) matches the
/// request's names directly.
pub fn serves_resource(handler: &HandlerRef, request: &ReviewRequest, discovered: &[Resource]) -> bool {
    let Some(selector) = handler.spec().selector.as_ref() else {
        return false;
    };
    let same = |r: &Resource| r.group == request.group && r.plural == request.plural;
    if references::select(selector, discovered.iter())
        .into_iter()
        .any(same)
    {
        return true;
    }
    // The request itself describes the resource: match on what it tells.
    let guess = Resource {
        group: request.group.clone(),
        version: request.version.clone(),
        plural: request.plural.clone(),
        kind: request.kind.clone(),
        singular: request.kind.to_lowercase(),
        preferred: true,
        ..Resource::default()
    };
    let mut relaxed = selector.clone();
    relaxed.version = None;
    if selector.category.is_some() || selector.shortcut.is_some() {
        return false;
    }
    references::check(&relaxed, &guess)
}

/// Whether a handler's operations and subresource options accept the request. As in
/// Kopf, mutating handlers skip deletions unless their operations are exactly `DELETE`
/// (there is nothing to mutate in an object being deleted).
pub fn accepts(handler: &HandlerRef, request: &ReviewRequest) -> bool {
    let options = &handler.spec().options;
    let operations = options.operations.as_deref().unwrap_or_default();
    if handler.kind() == HandlerKind::Mutate && request.operation == "DELETE" && operations != ["DELETE"] {
        return false;
    }
    let operation_ok =
        operations.is_empty() || operations.iter().any(|o| o == "*" || *o == request.operation);
    let subresource_ok = match (options.subresource.as_deref(), request.subresource.as_deref()) {
        (Some("*"), _) => true,
        (None, None) => true,
        (Some(want), Some(have)) => want == have,
        _ => false,
    };
    operation_ok && subresource_ok
}

/// Request details besides the review itself.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// HTTP headers of the webhook request.
    pub headers: BTreeMap<String, String>,
    /// The client certificate's fields (empty: no client certificate).
    pub sslpeer: Value,
}

/// One handler's failure, ranked for the response.
#[derive(Debug, Clone)]
struct Failure {
    kind: HandlerErrorKind,
    message: String,
    code: Option<u16>,
}

fn rank(kind: HandlerErrorKind) -> u8 {
    match kind {
        HandlerErrorKind::Admission => 3,
        HandlerErrorKind::Permanent => 2,
        HandlerErrorKind::Temporary => 1,
        HandlerErrorKind::Arbitrary => 0,
    }
}

/// Merges a JSON merge patch into another (RFC 7396 semantics on objects).
fn merge_into(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge_into(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Converts a merge patch into a JSONPatch against `body`: the difference between the
/// body and the body with the merge patch applied.
fn to_json_patch(body: &Value, merge: &Value) -> json_patch::Patch {
    let mut patched = body.clone();
    json_patch::merge(&mut patched, merge);
    json_patch::diff(body, &patched)
}

/// The mutating handlers' changes as one JSONPatch against `body`: their merge patches,
/// then their functions (Kopf's `patch.fns`, run by their plugins) on the merged body. A
/// function that fails is logged and its change left out, as when the operator writes.
fn mutations(plugins: &PluginSet, body: &Value, merge: &Value, fns: &[(usize, u64)]) -> json_patch::Patch {
    if fns.is_empty() {
        return to_json_patch(body, merge);
    }
    let mut merged = body.clone();
    json_patch::merge(&mut merged, merge);
    match plugins.apply_patch_fns(fns, merged.clone()) {
        Ok(after) => json_patch::diff(body, &after),
        Err(error) => {
            tracing::error!(target: "kopf.admission", "The patch functions could not be applied; their changes are not sent: {error}");
            json_patch::diff(body, &merged)
        }
    }
}

/// Runs the handlers (already selected for the URL) that match the request, and builds the
/// AdmissionReview response document.
pub async fn review(
    metrics: &Metrics,
    plugins: &PluginSet,
    handlers: &[HandlerRef],
    request: &ReviewRequest,
    transport: &Transport,
    discovered: &[Resource],
) -> Value {
    let body = request.body();
    let base = base_invocation(request, transport, discovered, &body);
    let mut verdicts = Verdicts::default();
    for handler in handlers {
        if !accepts(handler, request) || !serves_resource(handler, request, discovered) {
            continue;
        }
        let mut inv = base.clone();
        inv.param = handler.spec().options.param.clone();
        if let Some(outcome) = call_if_selected(metrics, plugins, handler, request, &body, &inv).await {
            verdicts.record(handler, request, outcome);
        }
    }
    let response = verdicts.response(plugins, request, &body);
    // The plugins keep the functions until told: each request's go, applied or not.
    plugins.release_patch_fns(&verdicts.fns);
    plugins.release_patch_fns(&verdicts.unused_fns);
    response
}

/// What every handler of the request gets: the body, resource, diff, old/new and the
/// admission details.
fn base_invocation(
    request: &ReviewRequest,
    transport: &Transport,
    discovered: &[Resource],
    body: &Value,
) -> Invocation {
    let resource = discovered
        .iter()
        .find(|r| r.group == request.group && r.version == request.version && r.plural == request.plural)
        .map(Resource::info)
        .unwrap_or_else(|| ResourceInfo {
            group: request.group.clone(),
            version: request.version.clone(),
            plural: request.plural.clone(),
            kind: request.kind.clone(),
            namespaced: body.pointer("/metadata/namespace").is_some(),
        });
    let old = request.old_object.clone();
    let new = request.object.clone();
    let diff = diffs::diff_to_json(&diffs::diff(old.as_ref(), new.as_ref()));
    Invocation {
        body: Some(body.clone()),
        resource: Some(resource),
        diff: Some(diff),
        old,
        new,
        admission: Some(AdmissionInfo {
            operation: request.operation.clone(),
            subresource: request.subresource.clone(),
            dryrun: request.dryrun,
            userinfo: request.userinfo.clone(),
            headers: transport.headers.clone(),
            sslpeer: transport.sslpeer.clone(),
            applies_patch_fns: true,
        }),
        ..Invocation::default()
    }
}

/// Calls `handler` if its filters select the request; `None` when they do not.
async fn call_if_selected(
    metrics: &Metrics,
    plugins: &PluginSet,
    handler: &HandlerRef,
    request: &ReviewRequest,
    body: &Value,
    inv: &Invocation,
) -> Option<Outcome> {
    let subject = FilterSubject {
        body,
        essences: Some((request.old_object.as_ref(), request.object.as_ref())),
    };
    let selected = match filters::matches(&handler.spec().filters, &subject, false) {
        FilterMatch::Match => Ok(true),
        FilterMatch::NoMatch => Ok(false),
        FilterMatch::NeedsCallback => invocation::check_filters(plugins, handler, inv).await,
    };
    match selected {
        Ok(false) => None,
        Ok(true) => {
            let timeout = handler
                .spec()
                .options
                .timeout
                .map_or(HANDLER_DEADLINE, std::time::Duration::from_secs_f64);
            Some(
                invocation::invoke(
                    metrics,
                    plugins,
                    Call::new(handler, inv).with_timeout(Some(timeout)),
                )
                .await,
            )
        }
        // A webhook whose filters cannot decide does not admit on a guess: the request
        // is denied as if the handler had failed (unless its failures are ignored).
        Err(error) => {
            tracing::error!(target: "kopf.admission", "{error}");
            Some(invocation::failed(HandlerErrorKind::Arbitrary, error.to_string()))
        }
    }
}

/// What the handlers of one request said so far.
struct Verdicts {
    /// The mutating handlers' patches, merged.
    merge: Value,
    /// The successful mutating handlers' body functions (plugin, token), in order.
    fns: Vec<(usize, u64)>,
    /// The other handlers' functions: never applied, only released.
    unused_fns: Vec<(usize, u64)>,
    mutated: bool,
    warnings: Vec<String>,
    failures: Vec<Failure>,
}

impl Default for Verdicts {
    fn default() -> Self {
        Self {
            merge: json!({}),
            fns: Vec::new(),
            unused_fns: Vec::new(),
            mutated: false,
            warnings: Vec::new(),
            failures: Vec::new(),
        }
    }
}

impl Verdicts {
    /// Takes one handler's outcome: its warnings, its failure or its patch.
    fn record(&mut self, handler: &HandlerRef, request: &ReviewRequest, outcome: Outcome) {
        self.warnings.extend(outcome.warnings.iter().cloned());
        let plugin = handler.plugin().index();
        let fns = outcome.patch_fns.iter().map(|token| (plugin, *token));
        if outcome.error.is_none() && handler.kind() == HandlerKind::Mutate {
            self.mutated |= !outcome.patch_fns.is_empty();
            self.fns.extend(fns);
        } else {
            self.unused_fns.extend(fns);
        }
        // `ignore_failures` is the configuration's `failurePolicy: Ignore` (the API server
        // admits when the webhook cannot be called), as in Kopf: a handler's own failure
        // still denies.
        if let Some(error) = outcome.error {
            tracing::info!(target: "kopf.admission", "Webhook {:?} denied the {} of {}: {}", handler.id(), request.operation, request.plural, error.message);
            self.failures.push(Failure {
                kind: error.kind,
                message: error.message,
                code: error.code,
            });
            return;
        }
        if handler.kind() == HandlerKind::Mutate
            && let Some(patch) = outcome
                .patch
                .filter(|p| p.as_object().is_some_and(|o| !o.is_empty()))
        {
            merge_into(&mut self.merge, &patch);
            self.mutated = true;
        }
    }

    /// The AdmissionReview response document.
    fn response(&self, plugins: &PluginSet, request: &ReviewRequest, body: &Value) -> Value {
        let mut response = serde_json::Map::new();
        response.insert("uid".into(), json!(request.uid));
        // The first failure of the highest priority decides.
        let decisive = self
            .failures
            .iter()
            .enumerate()
            .max_by_key(|(i, f)| (rank(f.kind), std::cmp::Reverse(*i)))
            .map(|(_, f)| f);
        match decisive {
            Some(failure) => {
                let code = match failure.kind {
                    HandlerErrorKind::Admission => failure.code.unwrap_or(500),
                    _ => 500,
                };
                response.insert("allowed".into(), json!(false));
                response.insert("status".into(), json!({"message": failure.message, "code": code}));
            }
            None => {
                response.insert("allowed".into(), json!(true));
            }
        }
        if !self.warnings.is_empty() {
            response.insert("warnings".into(), json!(self.warnings));
        }
        if self.mutated {
            let patch = mutations(plugins, body, &self.merge, &self.fns);
            if !patch.0.is_empty() {
                let text = serde_json::to_vec(&patch).unwrap_or_default();
                response.insert(
                    "patch".into(),
                    json!(base64::engine::general_purpose::STANDARD.encode(text)),
                );
                response.insert("patchType".into(), json!("JSONPatch"));
            }
        }
        json!({
            "apiVersion": request.api_version,
            "kind": "AdmissionReview",
            "response": Value::Object(response),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review_body() -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "kopf.dev", "version": "v1", "kind": "KopfExample"},
                "resource": {"group": "kopf.dev", "version": "v1", "resource": "kopfexamples"},
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": {"metadata": {"name": "x"}, "spec": {"a": 1}},
                "dryRun": true
            }
        })
    }

    #[test]
    fn parses_a_v1_review() {
        let body = serde_json::to_vec(&review_body()).unwrap();
        let r = ReviewRequest::parse(&body).unwrap();
        assert_eq!(r.uid, "u-1");
        assert_eq!(r.operation, "CREATE");
        assert_eq!(r.plural, "kopfexamples");
        assert_eq!(r.kind, "KopfExample");
        assert!(r.dryrun);
        assert_eq!(r.userinfo["username"], "alice");
        assert_eq!(r.body()["spec"]["a"], 1);
        assert_eq!(r.subresource, None);
    }

    #[test]
    fn malformed_reviews_are_errors() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}"#,
            br#"{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": "x"}}"#,
            br#"{"kind": "Pod", "apiVersion": "v1", "request": {}}"#,
        ] {
            assert!(
                ReviewRequest::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn merge_patches_become_json_patches() {
        let body = json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"keep": 1, "drop": 2}});
        let merge = json!({"metadata": {"labels": {"b": "2"}}, "spec": {"drop": null, "new": {"x": true}}});
        let patch = to_json_patch(&body, &merge);
        let mut applied = body.clone();
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(
            applied,
            json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "spec": {"keep": 1, "new": {"x": true}}})
        );
        assert!(to_json_patch(&body, &json!({"spec": {"keep": 1}})).0.is_empty());
    }

    #[test]
    fn merging_merge_patches_keeps_both() {
        let mut merge = json!({});
        merge_into(&mut merge, &json!({"spec": {"a": 1}}));
        merge_into(
            &mut merge,
            &json!({"spec": {"b": 2}, "metadata": {"labels": {"x": "y"}}}),
        );
        assert_eq!(
            merge,
            json!({"spec": {"a": 1, "b": 2}, "metadata": {"labels": {"x": "y"}}})
        );
    }

    #[test]
    fn priorities_follow_kopf() {
        assert!(rank(HandlerErrorKind::Admission) > rank(HandlerErrorKind::Permanent));
        assert!(rank(HandlerErrorKind::Permanent) > rank(HandlerErrorKind::Temporary));
        assert!(rank(HandlerErrorKind::Temporary) > rank(HandlerErrorKind::Arbitrary));
    }
}
