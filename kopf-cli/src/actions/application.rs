//! Persisting what handlers returned, as Kopf's `actions/application.py`.
//!
//! [`collect`] puts an outcome's patch and result into the object's [`Patch`]; [`apply`]
//! sends a patch: merge patches first (**status before body**, so that a crash between
//! them re-runs a handler whose result is stored rather than marking a handler done whose
//! result was lost), then the JSON-patch operations computed on the freshest body: the
//! finalizer's, then the difference the handlers' functions (Kopf's `patch.fns`, applied
//! by their plugins) make. A JSON patch refused because the object changed is answered
//! with the re-read object; the caller carries the functions to the next cycle.
//! Resource handlers, event handlers, daemons and timers all persist this way.

use kopf_abi::protocol::Outcome;
use kube::Client;
use serde_json::Value;

use crate::{
    clients::{ApiError, patching},
    plugin::PluginSet,
    structs::{
        bodies::Body,
        patches::{Patch, PatchFn},
        references::Resource,
    },
};

/// What sending a patch (or re-reading) produced.
#[derive(Debug)]
pub enum Applied {
    /// The object as the API server returned it after the last request.
    Fresh(Value),
    /// A JSON patch was refused because the object changed (its `test` of the
    /// resourceVersion failed): the object as re-read. What that patch would have done is
    /// not done (merge patches before it are), so another cycle must decide on this body.
    Conflicted(Value),
    /// Nothing needed sending: the body is as it was.
    Unchanged,
    /// The object is gone.
    Gone,
}

/// A request that failed: what was asked, for the log (a 403 names the verb and the
/// resource the operator's role lacks), and the error.
#[derive(Debug)]
pub struct Failed {
    /// `get` or `patch`.
    pub verb: &'static str,
    /// `status` for the status subresource.
    pub subresource: Option<&'static str>,
    /// What the API answered.
    pub error: ApiError,
}

impl Failed {
    /// A failed GET of the object.
    pub fn get(error: ApiError) -> Self {
        Self {
            verb: "get",
            subresource: None,
            error,
        }
    }

    /// A failed PATCH of the object (or its `subresource`).
    pub fn patch(subresource: Option<&'static str>, error: ApiError) -> Self {
        Self {
            verb: "patch",
            subresource,
            error,
        }
    }

    /// The log's account of the failure, a sentence without the final period.
    pub fn describe(&self, resource: &Resource) -> String {
        if self.error.is_permission() {
            let text = self
                .error
                .describe(self.verb, &resource.rbac_text(self.subresource));
            let mut chars = text.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect())
                .unwrap_or(text)
        } else if self.verb == "get" {
            format!("Re-reading the object failed ({})", self.error)
        } else {
            format!("Patching failed ({})", self.error)
        }
    }
}

/// Puts what a handler returned into `patch`: its own patch always (Kopf applies a
/// handler's patch whatever its outcome), its result only when `deliver` (the handler
/// succeeded) and the result is not null.
pub fn collect(patch: &mut Patch, handler_id: &str, outcome: &Outcome, deliver: bool) {
    if let Some(own) = &outcome.patch {
        patch.merge_from(own);
    }
    if deliver && let Some(result) = outcome.result.as_ref().filter(|r| !r.is_null()) {
        patch.deliver_result(handler_id, result);
    }
}

/// Puts the body transformations a handler of plugin `plugin` asked for (Kopf's
/// `patch.fns`, its sub-handlers' included) into `patch`, after those already there.
pub fn collect_fns(patch: &mut Patch, plugin: usize, outcome: &Outcome) {
    for token in &outcome.patch_fns {
        patch.push_fn(PatchFn::Plugin {
            plugin,
            token: *token,
        });
    }
}

/// The JSON-patch operations of the plugins' functions in `patch`, on `base` with the
/// finalizer's operations done. A function that fails is logged and its change not
/// sent: the handler that asked for it has finished, and nothing would retry it.
fn plugin_ops(plugins: &PluginSet, patch: &Patch, base: &Value) -> Vec<Value> {
    let fns = patch.plugin_fns();
    if fns.is_empty() {
        return Vec::new();
    }
    let before = patch.with_finalizer_fns(base);
    match plugins.apply_patch_fns(&fns, before.clone()) {
        Ok(after) => match serde_json::to_value(json_patch::diff(&before, &after)) {
            Ok(Value::Array(ops)) => ops,
            _ => Vec::new(),
        },
        Err(error) => {
            tracing::error!(target: "kopf.objects", "The patch functions could not be applied; their changes are not sent: {error}");
            Vec::new()
        }
    }
}

/// Kopf's check after merge-patching: fields that did not come back as written (a CRD's
/// structural schema prunes unknown fields, so results and progress stored there are lost
/// silently, and handlers would run again) are worth a warning. Only the merge-patch is
/// checked: the JSON-patch operations are guarded by the resourceVersion test.
fn warn_inconsistencies(patch: &Patch, resulting_body: &Value) {
    let inconsistencies = patch.inconsistencies(resulting_body);
    if !inconsistencies.is_empty() {
        let items = Value::Array(inconsistencies.iter().map(|d| d.to_json()).collect());
        tracing::warn!(target: "kopf.objects", "Merge-patching finished with inconsistencies: {items}");
    }
}

/// Reads the object of `body` as the API server has it now; `None` when it is gone.
pub async fn reread(client: &Client, resource: &Resource, body: &Value) -> Result<Option<Value>, Failed> {
    let body = Body::new(body);
    let Some(name) = body.name() else {
        return Err(Failed::get(ApiError::Unexpected(
            "an object without a name".into(),
        )));
    };
    let url = resource.url(body.namespace(), Some(name), None);
    match patching::get(client, &url).await {
        Ok(fresh) => Ok(Some(fresh)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(Failed::get(e)),
    }
}

/// Sends `patch` for the object of `body` (see the module docs); returns the freshest
/// body, if any request was sent.
pub async fn apply(
    client: &Client,
    plugins: &PluginSet,
    resource: &Resource,
    body: &Value,
    patch: &Patch,
) -> Result<Applied, Failed> {
    let namespace = Body::new(body).namespace();
    let Some(name) = Body::new(body).name() else {
        return Err(Failed::patch(
            None,
            ApiError::Unexpected("an object without a name".into()),
        ));
    };
    let url = |sub: Option<&str>| resource.url(namespace, Some(name), sub);
    let status_sub = resource.has_status_subresource();
    let mut fresh: Option<Value> = None;

    // Merge patches that would change nothing are not sent.
    if patch.merge_changes(body) {
        let requests = patch.requests(status_sub);
        for (merge, sub) in [(requests.status, Some("status")), (requests.body, None)] {
            let Some(merge) = merge else { continue };
            match patching::patch(client, &url(sub), patching::PatchType::Merge, &merge).await {
                Ok(result) => fresh = Some(result),
                Err(e) if e.is_not_found() => return Ok(Applied::Gone),
                Err(e) => return Err(Failed::patch(sub, e)),
            }
        }
        if let Some(fresh) = &fresh {
            warn_inconsistencies(patch, fresh);
        }
    }
    let base = fresh.as_ref().unwrap_or(body);
    let extra = plugin_ops(plugins, patch, base);
    let (body_ops, status_ops) = patch.json_requests(base, status_sub, extra);
    for (ops, sub) in [(body_ops, None), (status_ops, Some("status"))] {
        let Some(mut ops) = ops else { continue };
        // After the body's JSON patch, the status's tests the version that one made (Kopf).
        if let (Some(test), Some(rv)) = (
            ops.first_mut(),
            fresh.as_ref().and_then(|f| Body::new(f).resource_version()),
        ) {
            test["value"] = Value::String(rv.to_owned());
        }
        match patching::patch(client, &url(sub), patching::PatchType::Json, &Value::Array(ops)).await {
            Ok(result) => fresh = Some(result),
            Err(e) if e.is_not_found() => return Ok(Applied::Gone),
            Err(e) if e.is_conflict() => {
                // The object changed under us: re-read it and let the next cycle decide.
                tracing::debug!(target: "kopf.objects", "The object changed while patching; re-reading it.");
                return Ok(match reread(client, resource, body).await? {
                    Some(current) => Applied::Conflicted(current),
                    None => Applied::Gone,
                });
            }
            Err(e) => return Err(Failed::patch(sub, e)),
        }
    }
    Ok(fresh.map_or(Applied::Unchanged, Applied::Fresh))
}
