//! API semantics: create/update/patch/delete/get/list with kube's strategies (status subresource
//! rules, generation, finalizers, preconditions), admission calls, pagination.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::admission::{AdmissionDecision, AdmissionHook, AdmissionRequest, Operation};
use crate::error::ApiError;
use crate::faults::{CounterStore, Faults};
use crate::patch::{PatchKind, apply_patch, server_side_apply};
use crate::resources::ResourceDef;
use crate::schema::default_and_prune;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Change, DeleteOpts, State, generation_tracked, meta_mut, valid_label, valid_subdomain};

/// Server configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub bookmark_interval: Duration,
    pub max_body_bytes: usize,
}

/// Everything the HTTP layer and the handle share.
pub(crate) struct Shared {
    pub state: Arc<Mutex<State>>,
    pub tx: broadcast::Sender<Arc<Change>>,
    pub rv_published: Arc<AtomicU64>,
    pub cfg: Config,
    pub faults: Arc<Faults>,
    pub counters: CounterStore,
    pub hooks: RwLock<Vec<Arc<dyn AdmissionHook>>>,
    /// Bearer tokens of users subject to RBAC.
    pub tokens: crate::rbac::Tokens,
    pub close_rx: tokio::sync::watch::Receiver<u64>,
    pub shutdown: CancellationToken,
}

/// Per-request options of writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReqCtx {
    /// The requesting user.
    pub user: String,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown (pruned) fields are an error.
    pub strict: bool,
}

impl ReqCtx {
    pub(crate) fn internal() -> Self {
        Self {
            user: crate::KUBECONFIG_USER.into(),
            ..Self::default()
        }
    }
}

/// A list result: items as stored JSON, the list resourceVersion and the continue token.
pub(crate) struct ListResult {
    pub items: Vec<Bytes>,
    pub rv: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// List parameters.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListOpts {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

fn strip_meta(v: &Value, also_status: bool) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        if also_status {
            m.remove("status");
        }
    }
    c
}

fn check_identity(def: &ResourceDef, version: &str, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    };
    let want = def.api_version(version);
    match map.get("kind").and_then(|k| k.as_str()) {
        Some(k) if k != def.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind of the provided object ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
        None if def.custom => {
            return Err(ApiError::bad_request(format!(
                "Object 'Kind' is missing in '{}'",
                Value::Object(map.clone())
            )));
        }
        _ => {}
    }
    match map.get("apiVersion").and_then(|k| k.as_str()) {
        Some(av) if av != want => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want})"
            )));
        }
        _ => {}
    }
    map.insert("kind".into(), Value::String(def.kind.clone()));
    map.insert(
        "apiVersion".into(),
        Value::String(def.api_version(&def.storage_version)),
    );
    if map.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

fn apply_schema(def: &ResourceDef, version: &str, obj: &mut Value, strict: bool) -> Result<(), ApiError> {
    let mut pruned = vec![];
    if let Some(schema) = def
        .schemas
        .get(version)
        .or_else(|| def.schemas.get(&def.storage_version))
    {
        default_and_prune(obj, schema, true, "", &mut pruned);
        crate::schema::drop_non_nullable_nulls(obj, schema);
    }
    if strict && !pruned.is_empty() {
        let fields: Vec<String> = pruned.iter().map(|p| format!("unknown field \"{p}\"")).collect();
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
            fields.join(", "),
            kind = def.kind,
            v = version
        )));
    }
    // Then the schema's types, enums and required fields: 422 Invalid, as kube-apiserver.
    if let Some(schema) = def
        .schemas
        .get(version)
        .or_else(|| def.schemas.get(&def.storage_version))
    {
        let mut causes = vec![];
        crate::schema::validate(obj, schema, true, "", &mut causes);
        if !causes.is_empty() {
            let name = obj
                .pointer("/metadata/name")
                .or_else(|| obj.pointer("/metadata/generateName"))
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_string();
            let causes: Vec<(&str, &str, String)> = causes
                .iter()
                .map(|(r, f, m)| (*r, f.as_str(), m.clone()))
                .collect();
            return Err(ApiError::invalid(&def.group, &def.kind, &name, &causes));
        }
    }
    Ok(())
}

fn validate_meta(def: &ResourceDef, obj: &Value, creating: bool) -> Result<(), ApiError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    let gen_name = obj
        .pointer("/metadata/generateName")
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    let mut causes: Vec<(&str, &str, String)> = vec![];
    if name.is_empty() && (!creating || gen_name.is_empty()) {
        causes.push((
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required".into(),
        ));
    } else if !name.is_empty() {
        let ok = if def.group.is_empty() && def.plural == "namespaces" {
            valid_label(name)
        } else {
            valid_subdomain(name)
        };
        if !ok {
            causes.push((
                "FieldValueInvalid",
                "metadata.name",
                format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                     characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            ));
        }
    }
    if let Some(labels) = obj.pointer("/metadata/labels") {
        match labels.as_object() {
            Some(m) if m.values().all(|v| v.is_string()) => {}
            _ if labels.is_null() => {}
            _ => causes.push((
                "FieldValueInvalid",
                "metadata.labels",
                "Invalid value: labels must be strings".into(),
            )),
        }
    }
    if let Some(m) = obj.pointer("/metadata/labels").and_then(|l| l.as_object()) {
        for (k, v) in m {
            if let Some(msg) = qualified_name_error(k) {
                causes.push(("FieldValueInvalid", "metadata.labels", msg));
            }
            if let Some(v) = v.as_str()
                && !valid_label_value(v)
            {
                causes.push((
                    "FieldValueInvalid",
                    "metadata.labels",
                    format!(
                        "Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric \
                         characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
                         'MyValue',  or 'my_value',  or '12345', regex used for validation is \
                         '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                    ),
                ));
            }
        }
    }
    if let Some(m) = obj.pointer("/metadata/annotations").and_then(|l| l.as_object()) {
        for k in m.keys() {
            if let Some(msg) = qualified_name_error(k) {
                causes.push(("FieldValueInvalid", "metadata.annotations", msg));
            }
        }
    }
    if let Some(ann) = obj.pointer("/metadata/annotations") {
        match ann.as_object() {
            Some(m) if m.values().all(|v| v.is_string()) => {}
            _ if ann.is_null() => {}
            _ => causes.push((
                "FieldValueInvalid",
                "metadata.annotations",
                "Invalid value: annotations must be strings".into(),
            )),
        }
    }
    if let Some(f) = obj.pointer("/metadata/finalizers")
        && !f.as_array().is_some_and(|a| a.iter().all(|x| x.is_string()))
        && !f.is_null()
    {
        causes.push((
            "FieldValueInvalid",
            "metadata.finalizers",
            "Invalid value: finalizers must be strings".into(),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        let shown = if name.is_empty() { gen_name } else { name };
        Err(ApiError::invalid(&def.group, &def.kind, shown, &causes))
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters (label values may be empty).
fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// kube's message for a label or annotation key that is not a qualified name (`prefix/name`).
fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !valid_subdomain(p)
    {
        return Some(format!(
            "Invalid value: \"{key}\": prefix part a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ));
    }
    if name.is_empty() {
        return Some(format!("Invalid value: \"{key}\": name part must be non-empty"));
    }
    if name.len() > 63 {
        return Some(format!(
            "Invalid value: \"{key}\": name part must be no more than 63 characters"
        ));
    }
    if !valid_label_value(name) {
        return Some(format!(
            "Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and \
             must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex \
             used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        ));
    }
    None
}

fn finalizer_list(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(|f| f.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// A resourceVersion string to a number (0 when absent or unparsable).
pub(crate) fn parse_rv(s: &str) -> Option<u64> {
    s.parse::<u64>().ok()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

impl Shared {
    /// Look up a served resource.
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Result<Arc<ResourceDef>, ApiError> {
        self.state
            .lock()
            .registry
            .lookup(group, version, plural)
            .ok_or_else(ApiError::unknown_path)
    }

    #[allow(clippy::too_many_arguments)]
    async fn admit(
        &self,
        op: Operation,
        def: &ResourceDef,
        version: &str,
        sub: Option<&str>,
        ns: &str,
        name: &str,
        object: Option<Value>,
        old: Option<&Value>,
        user: &str,
        dry_run: bool,
    ) -> Result<Option<Value>, ApiError> {
        let hooks: Vec<Arc<dyn AdmissionHook>> = self.hooks.read().clone();
        if hooks.is_empty() {
            return Ok(object);
        }
        let mut object = object;
        for h in hooks {
            let req = AdmissionRequest {
                operation: op,
                group: def.group.clone(),
                version: version.to_string(),
                resource: def.plural.clone(),
                subresource: sub.map(String::from),
                namespace: ns.to_string(),
                name: name.to_string(),
                object: object.clone(),
                old_object: old.cloned(),
                user: user.to_string(),
                dry_run,
            };
            match h.admit(req).await {
                AdmissionDecision::Allow => {}
                AdmissionDecision::Mutate(v) => object = Some(v),
                AdmissionDecision::Deny { code, message } => {
                    let mut e = ApiError::with_code(code);
                    // Stored webhook configurations word their denials as kube-apiserver.
                    e.message = if message.starts_with("admission webhook ")
                        || message.starts_with("Internal error")
                    {
                        message
                    } else {
                        format!("admission webhook denied the request: {message}")
                    };
                    return Err(e);
                }
            }
        }
        Ok(object)
    }

    /// POST.
    pub async fn create(
        &self,
        def: &ResourceDef,
        version: &str,
        ns: &str,
        mut obj: Value,
        ctx: &ReqCtx,
    ) -> Result<Value, ApiError> {
        check_identity(def, version, &mut obj)?;
        if def.namespaced {
            let body_ns = obj
                .pointer("/metadata/namespace")
                .and_then(|n| n.as_str())
                .unwrap_or_default();
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        validate_meta(def, &obj, true)?;
        crate::defaults::on_create(def, &mut obj);
        if def.status_subresource
            && let Some(m) = obj.as_object_mut()
            && def.custom
        {
            m.remove("status");
        }
        if def.custom {
            apply_schema(def, version, &mut obj, ctx.strict)?;
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        let obj = self
            .admit(
                Operation::Create,
                def,
                version,
                None,
                ns,
                &name,
                Some(obj),
                None,
                &ctx.user,
                ctx.dry_run,
            )
            .await?
            .unwrap_or(Value::Null);
        self.state.lock().create(def, ns, obj, ctx.dry_run)
    }

    /// Shared loop of PUT / PATCH: read, compute, admit, commit-if-unchanged (retrying when stale).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn update_loop<F>(
        &self,
        def: &ResourceDef,
        version: &str,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        ctx: &ReqCtx,
        is_put: bool,
        compute: F,
    ) -> Result<Value, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        let gr = def.group_resource();
        for _ in 0..16 {
            let (old, old_rv) = {
                let st = self.state.lock();
                let s = st
                    .get(&gr, ns, name)
                    .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
                (s.value(), s.rv)
            };
            let new = compute(&old)?;
            let new = self.prepare_update(def, version, sub, &old, old_rv, new, is_put, ctx.strict)?;
            let new = self
                .admit(
                    Operation::Update,
                    def,
                    version,
                    sub,
                    ns,
                    name,
                    Some(new),
                    Some(&old),
                    &ctx.user,
                    ctx.dry_run,
                )
                .await?
                .unwrap_or(Value::Null);
            if let Some(v) = self
                .state
                .lock()
                .commit_update(def, ns, name, old_rv, &old, new, ctx.dry_run)?
            {
                return Ok(v);
            }
        }
        Err(ApiError::stale(&def.group, &def.plural, name))
    }

    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_lines)] // split under issue 19
    fn prepare_update(
        &self,
        def: &ResourceDef,
        version: &str,
        sub: Option<&str>,
        old: &Value,
        old_rv: u64,
        mut new: Value,
        is_put: bool,
        strict: bool,
    ) -> Result<Value, ApiError> {
        check_identity(def, version, &mut new)?;
        let old_name = old
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        let new_name = new
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        if !new_name.is_empty() && new_name != old_name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({new_name}) does not match the name on the URL ({old_name})"
            )));
        }
        let old_ns = old
            .pointer("/metadata/namespace")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        let new_ns = new
            .pointer("/metadata/namespace")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        if def.namespaced && !new_ns.is_empty() && new_ns != old_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let new_rv = new
            .pointer("/metadata/resourceVersion")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        if new_rv.is_empty() {
            if is_put && !def.unconditional_update {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    old_name,
                    &[(
                        "FieldValueInvalid",
                        "metadata.resourceVersion",
                        "Invalid value: 0: must be specified for an update".into(),
                    )],
                ));
            }
        } else if parse_rv(new_rv) != Some(old_rv) {
            return Err(ApiError::stale(&def.group, &def.plural, old_name));
        }
        validate_meta(def, &new, false)?;
        let mut result = if sub == Some("status") {
            let mut r = old.clone();
            match new.get("status") {
                Some(s) => r["status"] = s.clone(),
                None => {
                    if let Some(m) = r.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(mf) = new.pointer("/metadata/managedFields") {
                meta_mut(&mut r).insert("managedFields".into(), mf.clone());
            }
            // Status writes are pruned and validated by the schema too.
            if def.custom {
                apply_schema(def, version, &mut r, strict)?;
            }
            if !def.custom {
                for key in ["labels", "annotations"] {
                    match new.pointer(&format!("/metadata/{key}")) {
                        Some(v) => {
                            meta_mut(&mut r).insert(key.into(), v.clone());
                        }
                        None => {
                            meta_mut(&mut r).remove(key);
                        }
                    }
                }
            }
            r
        } else {
            if def.status_subresource {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            if def.custom {
                apply_schema(def, version, &mut new, strict)?;
            }
            crate::defaults::on_write(def, &mut new);
            let om = old.get("metadata").cloned().unwrap_or(json!({}));
            let m = meta_mut(&mut new);
            for k in [
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "name",
                "namespace",
            ] {
                match om.get(k) {
                    Some(v) => {
                        m.insert(k.into(), v.clone());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
            m.remove("selfLink");
            if generation_tracked(def) && strip_meta(&new, !def.custom) != strip_meta(old, !def.custom) {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(|g| g.as_i64())
                    .unwrap_or(0);
                meta_mut(&mut new).insert("generation".into(), json!(g + 1));
            }
            // Namespaces keep their spec.finalizers unless using /finalize; keep status too.
            if def.group.is_empty() && def.plural == "namespaces" {
                if let Some(s) = old.get("spec") {
                    new["spec"] = s.clone();
                }
                if let Some(s) = old.get("status") {
                    new["status"] = s.clone();
                }
            }
            new
        };
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            let before = finalizer_list(old);
            let added: Vec<String> = finalizer_list(&result)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                let quoted: Vec<String> = added.iter().map(|f| format!("\"{f}\"")).collect();
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    old_name,
                    &[(
                        "FieldValueForbidden",
                        "metadata.finalizers",
                        format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            quoted.join(", ")
                        ),
                    )],
                ));
            }
        }
        meta_mut(&mut result).insert("resourceVersion".into(), Value::String(old_rv.to_string()));
        if meta_mut(&mut result)
            .get("finalizers")
            .is_some_and(|f| f.as_array().is_some_and(|a| a.is_empty()) || f.is_null())
        {
            meta_mut(&mut result).remove("finalizers");
        }
        for k in ["labels", "annotations", "ownerReferences"] {
            if meta_mut(&mut result).get(k).is_some_and(|v| v.is_null()) {
                meta_mut(&mut result).remove(k);
            }
        }
        Ok(result)
    }

    /// PUT.
    #[allow(clippy::too_many_arguments)]
    pub async fn replace(
        &self,
        def: &ResourceDef,
        version: &str,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        body: Value,
        ctx: &ReqCtx,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        self.update_loop(def, version, ns, name, sub, ctx, true, |_old| Ok(body.clone()))
            .await
    }

    /// PATCH (merge, JSON, strategic or apply). Returns the object and whether it was created.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        def: &ResourceDef,
        version: &str,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        kind: PatchKind,
        patch: Value,
        manager: Option<&str>,
        force: bool,
        ctx: &ReqCtx,
    ) -> Result<(Value, bool), ApiError> {
        let api_version = def.api_version(version);
        if kind == PatchKind::Apply {
            let Some(manager) = manager.filter(|m| !m.is_empty()) else {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "PatchOptions",
                    "",
                    &[(
                        "FieldValueRequired",
                        "fieldManager",
                        "Required value: is required for apply patch".into(),
                    )],
                ));
            };
            // An apply patch must name its apiVersion and kind (kube: 400 "invalid object type").
            let av = patch
                .get("apiVersion")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let pk = patch.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
            if av.is_empty() || pk.is_empty() {
                let (g, v) = av.rsplit_once('/').unwrap_or(("", av));
                return Err(ApiError::bad_request(format!(
                    "invalid object type: {g}/{v}, Kind={pk}"
                )));
            }
            let exists = self.state.lock().get(&def.group_resource(), ns, name).is_some();
            if !exists && sub.is_none() {
                let mut obj = server_side_apply(
                    None,
                    &patch,
                    manager,
                    force,
                    &api_version,
                    &def.group,
                    &def.plural,
                    name,
                )?;
                let m = meta_mut(&mut obj);
                m.entry("name").or_insert_with(|| Value::String(name.to_string()));
                match self.create(def, version, ns, obj, ctx).await {
                    Ok(v) => return Ok((v, true)),
                    Err(e) if e.code == 409 && e.reason == "AlreadyExists" => {}
                    Err(e) => return Err(e),
                }
            }
            let v = self
                .update_loop(def, version, ns, name, sub, ctx, false, |old| {
                    let mut applied = server_side_apply(
                        Some(old),
                        &patch,
                        manager,
                        force,
                        &api_version,
                        &def.group,
                        &def.plural,
                        name,
                    )?;
                    meta_mut(&mut applied).insert(
                        "resourceVersion".into(),
                        old.pointer("/metadata/resourceVersion")
                            .cloned()
                            .unwrap_or(Value::Null),
                    );
                    Ok(applied)
                })
                .await?;
            return Ok((v, false));
        }
        let v = self
            .update_loop(def, version, ns, name, sub, ctx, false, |old| {
                let mut doc = old.clone();
                // Patches see the object in the requested version.
                doc["apiVersion"] = Value::String(api_version.clone());
                apply_patch(kind, &mut doc, &patch)?;
                Ok(doc)
            })
            .await?;
        Ok((v, false))
    }

    /// DELETE of one object.
    pub async fn delete(
        &self,
        def: &ResourceDef,
        version: &str,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
        ctx: &ReqCtx,
    ) -> Result<(Value, bool), ApiError> {
        if !self.hooks.read().is_empty() {
            let old = self.get(def, ns, name)?;
            self.admit(
                Operation::Delete,
                def,
                version,
                None,
                ns,
                name,
                None,
                Some(&old),
                &ctx.user,
                ctx.dry_run || opts.dry_run,
            )
            .await?;
        }
        self.state.lock().delete(def, ns, name, opts)
    }

    /// GET of one object (storage version).
    pub fn get(&self, def: &ResourceDef, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.get_bytes(def, ns, name)
            .map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    /// GET of one object as stored bytes.
    pub fn get_bytes(&self, def: &ResourceDef, ns: &str, name: &str) -> Result<Bytes, ApiError> {
        let st = self.state.lock();
        st.get(&def.group_resource(), ns, name)
            .map(|s| s.json.clone())
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))
    }

    /// LIST with selectors and pagination. `ns` None lists all namespaces.
    #[allow(clippy::too_many_lines)] // split under issue 19
    pub fn list(&self, def: &ResourceDef, ns: Option<&str>, opts: &ListOpts) -> Result<ListResult, ApiError> {
        let token = match &opts.continue_token {
            Some(t) if !t.is_empty() => {
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
                Some(
                    serde_json::from_slice::<ContinueToken>(&raw)
                        .map_err(|_| ApiError::bad_request("continue key is not valid"))?,
                )
            }
            _ => None,
        };
        let gr = def.group_resource();
        let mut st = self.state.lock();
        let coll = st.collections.get(&gr);
        // Continued pages come from the snapshot taken when the list began.
        let snapshot = match (&token, coll) {
            (Some(t), Some(c)) => c.snapshots.get(&t.rv).cloned(),
            _ => None,
        };
        if let (Some(t), Some(c)) = (&token, coll)
            && (t.rv < c.compacted_rv || snapshot.is_none())
        {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new \
                 list without the continue parameter, or use the continue token in this response to retrieve the \
                 remainder of the results. Continuing with the provided token results in an inconsistent list - \
                 objects that were created, modified, or deleted between the time the first chunk was returned and \
                 now may show up in the list.",
            ));
        }
        let list_rv = token.as_ref().map(|t| t.rv).unwrap_or(st.rv);
        let mut items = vec![];
        let mut next = None;
        let mut remaining = 0u64;
        if let Some(objects) = snapshot.as_deref().or(coll.map(|c| &c.objects)) {
            let start = match &token {
                Some(t) => std::ops::Bound::Excluded((t.ns.clone(), t.name.clone())),
                None => match ns {
                    Some(n) => std::ops::Bound::Included((n.to_string(), String::new())),
                    None => std::ops::Bound::Unbounded,
                },
            };
            for ((ons, oname), s) in objects.range((start, std::ops::Bound::Unbounded)) {
                if let Some(n) = ns
                    && ons != n
                {
                    break;
                }
                if !opts.labels.matches(&s.labels) {
                    continue;
                }
                if !opts.fields.is_empty() {
                    let ok = if opts.fields.only_identity() {
                        opts.fields.matches_identity(ons, oname)
                    } else {
                        opts.fields.matches(&s.value())
                    };
                    if !ok {
                        continue;
                    }
                }
                if let Some(limit) = opts.limit
                    && limit > 0
                    && items.len() >= limit
                {
                    if next.is_none() {
                        next = Some(ContinueToken {
                            rv: list_rv,
                            ns: String::new(),
                            name: String::new(),
                        });
                    }
                    remaining += 1;
                    continue;
                }
                items.push((ons.clone(), oname.clone(), s.json.clone()));
            }
        }
        // The first page of a paginated list: keep the objects as they are now.
        if token.is_none()
            && next.is_some()
            && let Some(c) = st.collections.get_mut(&gr)
            && !c.snapshots.contains_key(&list_rv)
        {
            let objects = Arc::new(c.objects.clone());
            let compacted = c.compacted_rv;
            c.snapshots.retain(|rv, _| *rv >= compacted);
            c.snapshots.insert(list_rv, objects);
            while c.snapshots.len() > crate::store::LIST_SNAPSHOTS_KEPT {
                c.snapshots.pop_first();
            }
        }
        let continue_token = next.map(|mut t| {
            if let Some((n, name, _)) = items.last() {
                t.ns = n.clone();
                t.name = name.clone();
            }
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&t).unwrap_or_default())
        });
        Ok(ListResult {
            items: items.into_iter().map(|(_, _, b)| b).collect(),
            rv: list_rv,
            // kube-apiserver counts the remaining items only for lists without selectors.
            remaining: continue_token
                .as_ref()
                .filter(|_| opts.labels.is_empty() && opts.fields.is_empty())
                .map(|_| remaining),
            continue_token,
        })
    }
}
