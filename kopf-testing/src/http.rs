//! The HTTP layer: connection handling (including dropped-connection faults), routing of
//! Kubernetes API paths, discovery, admin endpoints and counters.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::api::{ListOpts, ReqCtx, Shared};
use crate::error::ApiError;
use crate::faults::{FaultKind, FaultMatch, RequestInfo};
use crate::patch::{PatchKind, parse_body};
use crate::render::{self, OutputMode};
use crate::resources::{self, ResourceDef};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::DeleteOpts;
use crate::{openapi, watch};

/// Marker extension: the connection must be dropped without a response.
#[derive(Clone, Copy)]
struct DropConnection;

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// Accept connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((stream, _peer)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        conns.spawn(async move {
            let shutdown = shared.shutdown.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    let resp = handle(shared, req).await;
                    if resp.extensions().get::<DropConnection>().is_some() {
                        Err(Dropped)
                    } else {
                        Ok::<_, Dropped>(resp)
                    }
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
        // Reap finished connections.
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

pub(crate) fn json_response(code: u16, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A response with exactly these bytes (the raw-body fault).
fn raw_response(code: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn value_response(code: u16, v: &Value) -> Response<Body> {
    json_response(code, Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = value_response(e.code, &e.to_status());
    if let Some(secs) = e
        .details
        .as_ref()
        .and_then(|d| d.get("retryAfterSeconds"))
        .and_then(|s| s.as_u64())
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Does the client ask for aggregated discovery v2 (before any plain-JSON alternative)?
fn wants_aggregated(accept: &Option<String>) -> bool {
    let Some(a) = accept else { return false };
    for alt in a.split(',') {
        if alt.contains("as=APIGroupDiscoveryList") {
            return alt.contains("v=v2") && !alt.contains("v=v2beta1");
        }
        if alt.trim().starts_with("application/json") {
            return false;
        }
    }
    false
}

fn aggregated_response(v: &Value) -> Response<Body> {
    let mut r = value_response(200, v);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
    );
    r
}

/// A parsed resource path.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub sub: Option<String>,
    pub watch_path: bool,
}

enum Route {
    Version,
    ApiVersions,
    GroupList,
    Group(String),
    ResourceList(String, String),
    OpenApiV3Index,
    OpenApiV3(String, String),
    Health,
    Resource(ResourcePath),
    Unknown,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["healthz" | "livez" | "readyz", ..] => return Route::Health,
        ["api"] => return Route::ApiVersions,
        ["apis"] => return Route::GroupList,
        ["apis", g] => return Route::Group(g.to_string()),
        ["api", v] => return Route::ResourceList(String::new(), v.to_string()),
        ["apis", g, v] => return Route::ResourceList(g.to_string(), v.to_string()),
        ["openapi", "v3"] => return Route::OpenApiV3Index,
        ["openapi", "v3", "api", v] => return Route::OpenApiV3(String::new(), v.to_string()),
        ["openapi", "v3", "apis", g, v] => return Route::OpenApiV3(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return Route::Unknown,
    };
    let (watch_path, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let mut p = ResourcePath {
        group,
        version,
        watch_path,
        ..Default::default()
    };
    let tail = match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] if group_is_core(&p) => {
            p.plural = "namespaces".into();
            p.name = Some(ns.to_string());
            p.sub = Some(sub.to_string());
            return Route::Resource(p);
        }
        ["namespaces", ns, plural, tail @ ..] => {
            p.namespace = Some(ns.to_string());
            p.plural = plural.to_string();
            tail
        }
        [plural, tail @ ..] => {
            p.plural = plural.to_string();
            tail
        }
        [] => return Route::Unknown,
    };
    match tail {
        [] => {}
        [name] => p.name = Some(name.to_string()),
        [name, sub] => {
            p.name = Some(name.to_string());
            p.sub = Some(sub.to_string());
        }
        _ => return Route::Unknown,
    }
    Route::Resource(p)
}

fn group_is_core(p: &ResourcePath) -> bool {
    p.group.is_empty()
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn is_true(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(|s| s.as_str()), Some("1" | "true" | "True"))
}

fn user_of(req: &Request<Incoming>) -> String {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(t) = auth.strip_prefix("Bearer ") {
        return t.trim().to_string();
    }
    if let Some(b) = auth.strip_prefix("Basic ") {
        use base64::Engine;
        if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim())
            && let Ok(s) = String::from_utf8(raw)
        {
            return s.split(':').next().unwrap_or_default().to_string();
        }
    }
    "anonymous".into()
}

async fn read_body(shared: &Shared, body: Incoming, headers: &http::HeaderMap) -> Result<Bytes, ApiError> {
    let max = shared.cfg.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > max
    {
        return Err(ApiError::too_large(max));
    }
    let limited = http_body_util::Limited::new(body, max);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(ApiError::too_large(max))
            } else {
                Err(ApiError::bad_request(format!(
                    "error reading the request body: {e}"
                )))
            }
        }
    }
}

fn parse_json_body(b: &[u8]) -> Result<Value, ApiError> {
    if b.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    serde_json::from_slice::<Value>(b)
        .or_else(|_| serde_yaml::from_slice::<Value>(b).map_err(|e| e.to_string()))
        .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))
        .and_then(|v| {
            if v.is_object() {
                Ok(v)
            } else {
                Err(ApiError::bad_request(
                    "couldn't get version/kind; json parse error: expected an object",
                ))
            }
        })
}

/// Serve one request.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(admin) = path.strip_prefix("/_emulator/") {
        let admin = admin.to_string();
        return handle_admin(&shared, &admin, req).await;
    }
    let query = query_map(req.uri().query());
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_string();
    let user = user_of(&req);
    let r = route(&path);
    let method = req.method().clone();
    let info = RequestInfo {
        user: Some(user.clone()),
        ..classify(&r, &method, &query)
    };
    let arrived = std::time::Instant::now();
    let latency = shared.faults.request_delay();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let resp = match shared.faults.take(&info) {
        Some(FaultKind::DropConnection) => {
            shared.counters.record(&info, &user_agent, &user, 0);
            shared.faults.log_request(&info, arrived, &user_agent, 0, None);
            let mut r = Response::new(Body::empty());
            r.extensions_mut().insert(DropConnection);
            return r;
        }
        Some(FaultKind::BlackHole) => {
            shared.counters.record(&info, &user_agent, &user, 0);
            shared.faults.log_request(&info, arrived, &user_agent, 0, None);
            // Dropped with the connection when the client gives up; else held until the
            // emulator stops, and then the connection is closed without an answer.
            shared.shutdown.cancelled().await;
            let mut r = Response::new(Body::empty());
            r.extensions_mut().insert(DropConnection);
            return r;
        }
        Some(FaultKind::Status { code }) => error_response(&ApiError::with_code(code)),
        Some(FaultKind::TooManyRequests { retry_after_secs }) => {
            error_response(&ApiError::too_many_requests(retry_after_secs))
        }
        Some(FaultKind::RawBody {
            code,
            content_type,
            body,
        }) => raw_response(code, &content_type, body),
        None => match authorize(&shared, &user, &r, &info) {
            Err(e) => error_response(&e),
            Ok(()) => match dispatch(&shared, r, &method, &query, req, &user).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            },
        },
    };
    shared
        .counters
        .record(&info, &user_agent, &user, resp.status().as_u16());
    let resp = count_sent(&shared, resp, &user, &info);
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    shared
        .faults
        .log_request(&info, arrived, &user_agent, resp.status().as_u16(), retry_after);
    tracing::debug!(%method, %path, status = resp.status().as_u16(), verb = %info.verb, "request");
    resp
}

/// Counts a response's body bytes per user and resource as they are sent (a watch's as
/// its events stream).
fn count_sent(shared: &Arc<Shared>, resp: Response<Body>, user: &str, info: &RequestInfo) -> Response<Body> {
    if info.resource.is_empty() {
        return resp;
    }
    let shared = shared.clone();
    let resource = match &info.subresource {
        Some(sub) => format!("{}/{sub}", info.resource),
        None => info.resource.clone(),
    };
    let key = format!("{user} {} {resource}", info.verb);
    resp.map(|body| {
        Body::new(body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                shared.counters.bytes_sent(&key, data.len());
            }
            frame
        }))
    })
}

/// RBAC for ServiceAccount tokens (see `rbac.rs`); other requests pass.
fn authorize(shared: &Shared, token: &str, r: &Route, info: &RequestInfo) -> Result<(), ApiError> {
    let Route::Resource(p) = r else { return Ok(()) };
    let attributes = crate::rbac::Attributes {
        verb: &info.verb,
        group: &p.group,
        resource: &p.plural,
        subresource: p.sub.as_deref(),
        namespace: p.namespace.as_deref(),
        name: info.name.as_deref(),
    };
    crate::rbac::authorize(&shared.tokens, &shared.state.lock(), token, &attributes)
}

fn classify(r: &Route, method: &Method, q: &HashMap<String, String>) -> RequestInfo {
    match r {
        Route::Resource(p) => {
            let verb = match (method.as_str(), p.name.is_some()) {
                ("GET", true) if p.watch_path => "watch",
                ("GET", true) => "get",
                ("GET", false) if p.watch_path || is_true(q, "watch") => "watch",
                ("GET", false) => "list",
                ("POST", _) => "create",
                ("PUT", _) => "update",
                ("PATCH", _) => "patch",
                ("DELETE", true) => "delete",
                ("DELETE", false) => "deletecollection",
                (m, _) => {
                    return RequestInfo {
                        verb: m.to_ascii_lowercase(),
                        resource: p.plural.clone(),
                        ..Default::default()
                    };
                }
            };
            // As kube-apiserver: a list or watch of one name (fieldSelector
            // `metadata.name=NAME`) is authorised as a request for that name.
            let selected = (p.name.is_none() && matches!(verb, "list" | "watch"))
                .then(|| q.get("fieldSelector"))
                .flatten()
                .and_then(|s| {
                    let mut terms = s.split(',');
                    let only = terms.next()?;
                    terms.next().is_none().then_some(only)?;
                    let (key, value) = only.split_once('=')?;
                    let value = value.strip_prefix('=').unwrap_or(value);
                    (key.trim() == "metadata.name" && !value.is_empty()).then(|| value.to_owned())
                });
            RequestInfo {
                verb: verb.into(),
                resource: p.plural.clone(),
                subresource: p.sub.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone().or(selected),
                user: None,
            }
        }
        _ => RequestInfo {
            verb: method.as_str().to_ascii_lowercase(),
            resource: String::new(),
            ..Default::default()
        },
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    r: Route,
    method: &Method,
    q: &HashMap<String, String>,
    req: Request<Incoming>,
    user: &str,
) -> Result<Response<Body>, ApiError> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let get_only = |m: &Method| {
        if m == Method::GET {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed())
        }
    };
    match r {
        Route::Version => {
            get_only(method)?;
            Ok(value_response(
                200,
                &json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-kopf-emulator", "gitCommit": "emulator",
                    "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23",
                    "compiler": "gc", "platform": "linux/amd64"}),
            ))
        }
        Route::Health => Ok(Response::new(Body::from("ok"))),
        Route::ApiVersions if wants_aggregated(&accept) => {
            get_only(method)?;
            Ok(aggregated_response(&resources::aggregated(
                &shared.state.lock().registry,
                true,
            )))
        }
        Route::GroupList if wants_aggregated(&accept) => {
            get_only(method)?;
            Ok(aggregated_response(&resources::aggregated(
                &shared.state.lock().registry,
                false,
            )))
        }
        Route::ApiVersions => {
            get_only(method)?;
            Ok(value_response(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            ))
        }
        Route::GroupList => {
            get_only(method)?;
            Ok(value_response(
                200,
                &resources::api_group_list(&shared.state.lock().registry),
            ))
        }
        Route::Group(g) => {
            get_only(method)?;
            let v =
                resources::api_group(&shared.state.lock().registry, &g).ok_or_else(ApiError::unknown_path)?;
            Ok(value_response(200, &v))
        }
        Route::ResourceList(g, v) => {
            get_only(method)?;
            let doc = resources::api_resource_list(&shared.state.lock().registry, &g, &v)
                .ok_or_else(ApiError::unknown_path)?;
            Ok(value_response(200, &doc))
        }
        Route::OpenApiV3Index => Ok(value_response(
            200,
            &openapi::v3_index(&shared.state.lock().registry),
        )),
        Route::OpenApiV3(g, v) => {
            let doc =
                openapi::gv_doc(&shared.state.lock().registry, &g, &v).ok_or_else(ApiError::unknown_path)?;
            Ok(value_response(200, &doc))
        }
        Route::Unknown => Err(ApiError::unknown_path()),
        Route::Resource(p) => resource(shared, p, method, q, req, user).await,
    }
}

fn list_opts(q: &HashMap<String, String>) -> Result<ListOpts, ApiError> {
    Ok(ListOpts {
        labels: LabelSelector::parse(q.get("labelSelector").map(|s| s.as_str()).unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        fields: FieldSelector::parse(q.get("fieldSelector").map(|s| s.as_str()).unwrap_or(""))
            .map_err(ApiError::bad_request)?,
        // A negative limit means no limit, as in kube-apiserver.
        limit: match q.get("limit") {
            Some(l) if !l.is_empty() => {
                let n = l
                    .parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?;
                usize::try_from(n).ok()
            }
            _ => None,
        },
        continue_token: q.get("continue").cloned(),
    })
}

/// kube-apiserver's checks of a list's `resourceVersion` and `resourceVersionMatch` against the
/// current resourceVersion; adjusts `opts` as kube does (a list "from the cache", rv=0, is not
/// paginated).
fn check_list_rv(q: &HashMap<String, String>, current: u64, opts: &mut ListOpts) -> Result<(), ApiError> {
    let rv = q.get("resourceVersion").map(|s| s.as_str()).unwrap_or("");
    let rvm = q.get("resourceVersionMatch").map(|s| s.as_str()).unwrap_or("");
    if !rvm.is_empty() && rv.is_empty() {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            &[(
                "FieldValueForbidden",
                "resourceVersionMatch",
                "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            )],
        ));
    }
    if !matches!(rvm, "" | "NotOlderThan" | "Exact") {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            &[(
                "FieldValueNotSupported",
                "resourceVersionMatch",
                format!("Unsupported value: \"{rvm}\": supported values: \"Exact\", \"NotOlderThan\", \"\""),
            )],
        ));
    }
    if rv.is_empty() {
        return Ok(());
    }
    let n = rv.parse::<u64>().map_err(|e| {
        ApiError::bad_request(format!(
            "invalid resource version: resourceVersion: Invalid value: \"{rv}\": strconv.ParseUint: parsing \"{rv}\": {}",
            if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
                "value out of range"
            } else {
                "invalid syntax"
            }
        ))
    })?;
    if n == 0 && rvm != "Exact" && opts.continue_token.as_deref().unwrap_or("").is_empty() {
        opts.limit = None;
    }
    if n > current {
        return Err(ApiError::resource_version_too_large(n, current));
    }
    Ok(())
}

fn delete_opts(q: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOpts, ApiError> {
    let mut o = DeleteOpts {
        propagation: q.get("propagationPolicy").cloned(),
        // `?dryRun=All` (kubectl delete --dry-run=server) as well as DeleteOptions.dryRun.
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        ..Default::default()
    };
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(p) = v.get("propagationPolicy").and_then(|p| p.as_str()) {
            o.propagation = Some(p.to_string());
        }
        if v.get("orphanDependents").and_then(|p| p.as_bool()) == Some(true) {
            o.propagation = Some("Orphan".into());
        }
        if v.get("dryRun")
            .and_then(|d| d.as_array())
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            o.dry_run = true;
        }
        o.uid = v
            .pointer("/preconditions/uid")
            .and_then(|p| p.as_str())
            .map(String::from);
        o.rv = v
            .pointer("/preconditions/resourceVersion")
            .and_then(|p| p.as_str())
            .map(String::from);
    }
    if let Some(p) = &o.propagation
        && !["Orphan", "Background", "Foreground"].contains(&p.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "unsupported propagationPolicy {p:?}"
        )));
    }
    Ok(o)
}

fn deleted_status(def: &ResourceDef, obj: &Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": obj.pointer("/metadata/name"), "group": def.group, "kind": def.plural,
                    "uid": obj.pointer("/metadata/uid")}})
}

#[allow(clippy::too_many_lines)] // split under issue 19
async fn resource(
    shared: &Arc<Shared>,
    p: ResourcePath,
    method: &Method,
    q: &HashMap<String, String>,
    req: Request<Incoming>,
    user: &str,
) -> Result<Response<Body>, ApiError> {
    let def = shared.resolve(&p.group, &p.version, &p.plural)?;
    if p.namespace.is_some() && !def.namespaced {
        return Err(ApiError::unknown_path());
    }
    if def.namespaced && p.namespace.is_none() && p.name.is_some() {
        return Err(ApiError::unknown_path());
    }
    if let Some(sub) = &p.sub {
        let ok = match sub.as_str() {
            "status" => def.status_subresource,
            "scale" => def.scale.is_some(),
            "finalize" => def.group.is_empty() && def.plural == "namespaces",
            _ => false,
        };
        if !ok {
            return Err(ApiError::unknown_path());
        }
    }
    let ns = p.namespace.clone().unwrap_or_default();
    let version = p.version.clone();
    let ctx = ReqCtx {
        user: user.to_string(),
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        strict: q.get("fieldValidation").is_some_and(|f| f == "Strict"),
    };
    let user = &ctx;
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let mode = OutputMode::from_accept(accept.as_deref());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let headers = req.headers().clone();
    let body_stream = req.into_body();
    let sub = p.sub.as_deref().filter(|s| *s != "finalize");
    let protobuf = content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("application/vnd.kubernetes.protobuf"));
    if matches!(method.as_str(), "POST" | "PUT")
        && !protobuf
        && content_type
            .as_deref()
            .is_some_and(|ct| !ct.contains("json") && !ct.contains("yaml"))
    {
        return Err(ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, \
             application/yaml, application/vnd.kubernetes.protobuf (got {})",
            content_type.as_deref().unwrap_or_default()
        )));
    }
    let decode_body = |b: &[u8]| -> Result<Value, ApiError> {
        if protobuf {
            crate::protobuf::decode(b).ok_or_else(|| {
                ApiError::unsupported_media(
                    "the emulator decodes protobuf only for v1 ConfigMap, Secret, Namespace and ServiceAccount; \
                     send application/json",
                )
            })
        } else {
            parse_json_body(b)
        }
    };
    if method == Method::GET || method == Method::DELETE && p.name.is_none() {
        let fields = FieldSelector::parse(q.get("fieldSelector").map(|s| s.as_str()).unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        crate::selectors::check_supported(&def, &fields).map_err(ApiError::bad_request)?;
    }
    match (method.as_str(), &p.name) {
        ("GET", None) if p.watch_path || is_true(q, "watch") => {
            let opts = list_opts(q)?;
            Ok(watch::watch(
                shared.clone(),
                def,
                version,
                p.namespace.clone(),
                opts,
                q,
                mode,
            ))
        }
        ("GET", Some(name)) if p.watch_path => {
            let mut opts = list_opts(q)?;
            opts.fields.0.push(crate::selectors::FieldReq {
                path: "metadata.name".into(),
                value: name.clone(),
                equal: true,
            });
            Ok(watch::watch(
                shared.clone(),
                def,
                version,
                p.namespace.clone(),
                opts,
                q,
                mode,
            ))
        }
        ("GET", None) => {
            let mut opts = list_opts(q)?;
            let current = shared.state.lock().rv;
            check_list_rv(q, current, &mut opts)?;
            let res = shared.list(&def, p.namespace.as_deref(), &opts)?;
            shared.counters.objects_sent(&def.plural, res.items.len());
            Ok(json_response(
                200,
                render::list(
                    &def,
                    &version,
                    &res.items,
                    res.rv,
                    res.continue_token.as_deref(),
                    res.remaining,
                    mode,
                ),
            ))
        }
        ("GET", Some(name)) => {
            let bytes = shared.get_bytes(&def, &ns, name)?;
            if sub == Some("scale") {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                return Ok(value_response(200, &crate::scale::to_scale(&def, &v)));
            }
            Ok(json_response(
                200,
                render::object(&def, &version, &bytes, mode, true),
            ))
        }
        ("POST", None) => {
            let body = read_body(shared, body_stream, &headers).await?;
            let obj = decode_body(&body)?;
            if obj
                .pointer("/metadata/resourceVersion")
                .and_then(|v| v.as_str())
                .is_some_and(|v| !v.is_empty())
            {
                // kube-apiserver's answer (a 500 without a reason) to creating an object that
                // still carries the resourceVersion it was read with.
                return Err(ApiError::internal_without_reason(
                    "resourceVersion should not be set on objects to be created",
                ));
            }
            let created = shared.create(&def, &version, &ns, obj, user).await?;
            let bytes = Bytes::from(serde_json::to_vec(&created).unwrap_or_default());
            Ok(json_response(
                201,
                render::object(&def, &version, &bytes, mode, true),
            ))
        }
        ("PUT", Some(name)) => {
            let body = read_body(shared, body_stream, &headers).await?;
            let obj = decode_body(&body)?;
            let v = if sub == Some("scale") {
                crate::scale::update_scale(shared, &def, &version, &ns, name, None, obj, user).await?
            } else {
                shared.replace(&def, &version, &ns, name, sub, obj, user).await?
            };
            let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
            Ok(json_response(
                200,
                render::object(&def, &version, &bytes, mode, true),
            ))
        }
        ("PATCH", Some(name)) => {
            let kind = PatchKind::from_content_type(content_type.as_deref(), def.custom)?;
            let body = read_body(shared, body_stream, &headers).await?;
            let patch = parse_body(kind, &body)?;
            if sub == Some("scale") {
                let v =
                    crate::scale::update_scale(shared, &def, &version, &ns, name, Some(kind), patch, user)
                        .await?;
                return Ok(value_response(200, &v));
            }
            let manager = q.get("fieldManager").map(|s| s.as_str());
            let (v, created) = shared
                .patch(
                    &def,
                    &version,
                    &ns,
                    name,
                    sub,
                    kind,
                    patch,
                    manager,
                    is_true(q, "force"),
                    user,
                )
                .await?;
            let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
            Ok(json_response(
                if created { 201 } else { 200 },
                render::object(&def, &version, &bytes, mode, true),
            ))
        }
        ("DELETE", Some(name)) => {
            let body = read_body(shared, body_stream, &headers).await?;
            let opts = delete_opts(q, &body)?;
            let (v, gone) = shared.delete(&def, &version, &ns, name, &opts, user).await?;
            if gone && !def.returns_deleted_object {
                return Ok(value_response(200, &deleted_status(&def, &v)));
            }
            let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
            Ok(json_response(
                200,
                render::object(&def, &version, &bytes, mode, true),
            ))
        }
        ("DELETE", None) => {
            let body = read_body(shared, body_stream, &headers).await?;
            let dopts = delete_opts(q, &body)?;
            let lopts = list_opts(q)?;
            let res = shared.list(
                &def,
                p.namespace.as_deref(),
                &ListOpts {
                    limit: None,
                    continue_token: None,
                    ..lopts
                },
            )?;
            let mut deleted = vec![];
            for item in res.items {
                let v: Value = serde_json::from_slice(&item).unwrap_or(Value::Null);
                let ons = v
                    .pointer("/metadata/namespace")
                    .and_then(|n| n.as_str())
                    .unwrap_or_default()
                    .to_string();
                let oname = v
                    .pointer("/metadata/name")
                    .and_then(|n| n.as_str())
                    .unwrap_or_default()
                    .to_string();
                match shared.delete(&def, &version, &ons, &oname, &dopts, user).await {
                    Ok((v, _)) => deleted.push(Bytes::from(serde_json::to_vec(&v).unwrap_or_default())),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let rv = shared.state.lock().rv;
            Ok(json_response(
                200,
                render::list(&def, &version, &deleted, rv, None, None, OutputMode::Full),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

async fn handle_admin(shared: &Arc<Shared>, what: &str, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = match read_body(shared, req.into_body(), &headers).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let ok = || value_response(200, &json!({"ok": true}));
    match (method.as_str(), what.trim_end_matches('/')) {
        ("GET", "counters") => value_response(
            200,
            &serde_json::to_value(shared.counters.snapshot()).unwrap_or_default(),
        ),
        ("POST", "reset-counters") => {
            shared.counters.reset();
            ok()
        }
        ("POST", "close-watches") => {
            shared.faults.close_watches();
            ok()
        }
        ("POST", "expire-history") => {
            shared.faults.expire_history();
            ok()
        }
        ("POST", "clear-faults") => {
            shared.faults.clear();
            ok()
        }
        ("POST", "latency") => {
            #[derive(serde::Deserialize)]
            struct L {
                millis: u64,
            }
            match serde_json::from_slice::<L>(&body) {
                Ok(l) => {
                    shared
                        .faults
                        .set_latency(std::time::Duration::from_millis(l.millis));
                    ok()
                }
                Err(e) => error_response(&ApiError::bad_request(format!("expected {{\"millis\": N}}: {e}"))),
            }
        }
        ("POST", "faults") => {
            #[derive(serde::Deserialize)]
            struct F {
                #[serde(default = "one")]
                count: usize,
                #[serde(default, rename = "match")]
                matcher: FaultMatch,
                fault: FaultKind,
            }
            fn one() -> usize {
                1
            }
            match serde_json::from_slice::<F>(&body) {
                Ok(f) => {
                    shared.faults.fail_next(f.count, f.matcher, f.fault);
                    ok()
                }
                Err(e) => error_response(&ApiError::bad_request(format!(
                    "expected {{\"count\": N, \"match\": {{\"verb\":..,\"resource\":..}}, \"fault\": {{\"kind\": \"status\", \"code\": 503}}}}: {e}"
                ))),
            }
        }
        _ => error_response(&ApiError::unknown_path()),
    }
}
