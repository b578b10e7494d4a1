//! Operator-level activities: startup, cleanup, login and probe handlers.
//!
//! As in Kopf (`kopf/_core/engines/activities.py`), an activity runs all its handlers
//! "all at once" in rounds, in memory (nothing is persisted): a handler that fails
//! temporarily is retried after its delay (or backoff), one that fails permanently (or
//! runs out of `retries`/`timeout`) fails the activity once every other handler is done.
//! A failed startup stops the operator; a failed cleanup is logged.
//!
//! Startup handlers get the operator settings (`Invocation.settings`, Kopf's JSON shape)
//! and may return adjusted settings in `Outcome.extra["settings"]` (the SDK's
//! `ctx.settings_mut()`); the next startup handler and the operator see them.
//!
//! Login handlers return Kopf's `ConnectionInfo` as their result; the one with the
//! highest `priority` becomes the operator's connection ([`login`]).
//!
//! Probe handlers run once per liveness request (see [`crate::engines::probing`]); their
//! errors are reported in the JSON, never retried.

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine as _;
use kopf_abi::protocol::{HandlerKind, Invocation, Outcome};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    actions::{
        execution::{Attempt, Decision, conclude, handler_name, log_decision, precheck},
        invocation::{Call, invoke},
    },
    clients::auth::Fresh,
    contexts::OperatorContext,
    observability::metrics::Metrics,
    plugin::{HandlerRef, PluginSet},
    settings::{OperatorSettings, seconds},
    structs::pyjson::py_repr_str,
};

/// Why an activity did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    /// Handlers failed permanently (after their retries, if any).
    #[error("{activity} failed: {}", failures.iter().map(|(id, m)| format!("{} failed permanently: {m}", handler_name(HandlerKind::Startup, id))).collect::<Vec<_>>().join("; "))]
    Failed {
        /// The activity (`startup`, `cleanup`, `authentication`).
        activity: &'static str,
        /// Handler id and message of each failure.
        failures: Vec<(String, String)>,
    },
    /// The operator was asked to stop while the activity was still retrying.
    #[error("{activity} was interrupted by the operator's stop")]
    Interrupted {
        /// The activity.
        activity: &'static str,
    },
    /// A startup handler returned settings that do not fit Kopf's settings.
    #[error("startup handler {handler:?} returned invalid settings: {message}")]
    BadSettings {
        /// The handler id.
        handler: String,
        /// What is wrong.
        message: String,
    },
    /// Login handlers exist, but none returned usable credentials.
    #[error("login failed: {0}")]
    Login(String),
}

/// The name Kopf gives each activity kind (the `activity` kwarg).
fn activity_name(kind: HandlerKind) -> &'static str {
    match kind {
        HandlerKind::Startup => "startup",
        HandlerKind::Cleanup => "cleanup",
        HandlerKind::Login => "authentication",
        HandlerKind::Probe => "probe",
        _ => "activity",
    }
}

fn handlers_of(plugins: &PluginSet, kind: HandlerKind) -> Vec<HandlerRef> {
    plugins
        .handlers()
        .iter()
        .filter(|h| h.kind() == kind)
        .cloned()
        .collect()
}

fn to_json(settings: &OperatorSettings) -> Value {
    serde_json::to_value(settings).unwrap_or(Value::Null)
}

struct HandlerState {
    handler: HandlerRef,
    retries: u32,
    started: Instant,
    started_at: String,
    /// When the next attempt is due (`None`: now).
    delayed: Option<Instant>,
    done: bool,
}

/// Runs every handler of `kind` until all are done; returns their results by id, or the
/// permanent failures. `settings` is handed to each handler and, for startup handlers,
/// updated with what they return.
async fn run_activity(
    metrics: &Metrics,
    plugins: &PluginSet,
    kind: HandlerKind,
    settings: &mut OperatorSettings,
    stop: &CancellationToken,
) -> Result<BTreeMap<String, Option<Value>>, ActivityError> {
    let activity = activity_name(kind);
    let now = jiff::Timestamp::now().to_string();
    let mut states: Vec<HandlerState> = handlers_of(plugins, kind)
        .into_iter()
        .map(|handler| HandlerState {
            handler,
            retries: 0,
            started: Instant::now(),
            started_at: now.clone(),
            delayed: None,
            done: false,
        })
        .collect();
    let mut results = BTreeMap::new();
    let mut failures = Vec::new();
    while states.iter().any(|s| !s.done) {
        let now = Instant::now();
        for state in states.iter_mut().filter(|s| !s.done) {
            if state.delayed.is_some_and(|at| at > now) {
                continue;
            }
            let spec = state.handler.spec();
            let attempt = Attempt {
                retries: state.retries,
                runtime: state.started.elapsed().as_secs_f64(),
            };
            let decision = match precheck(spec, attempt) {
                Some(decision) => decision,
                None => {
                    let invocation = Invocation {
                        activity: Some(activity.to_owned()),
                        settings: Some(to_json(settings)),
                        retry: state.retries,
                        started: Some(state.started_at.clone()),
                        runtime: attempt.runtime,
                        param: spec.options.param.clone(),
                        ..Invocation::default()
                    };
                    let timeout = spec.options.timeout.map(|t| seconds(t - attempt.runtime));
                    let call = Call::new(&state.handler, &invocation).with_timeout(timeout);
                    let outcome = invoke(metrics, plugins, call).await;
                    let decision = conclude(
                        metrics,
                        spec,
                        attempt,
                        &outcome,
                        settings.execution.default_backoff,
                    );
                    if decision == Decision::Success
                        && kind == HandlerKind::Startup
                        && let Some(adjusted) = outcome.extra.get("settings")
                    {
                        *settings = parse_settings(spec.id.as_str(), adjusted)?;
                        tracing::info!(target: "kopf.activities", "{} adjusted the operator settings.", handler_name(kind, &spec.id));
                    }
                    if decision == Decision::Success {
                        results.insert(spec.id.clone(), outcome.result.clone());
                    }
                    decision
                }
            };
            state.retries += 1;
            log_decision(kind, &spec.id, &decision);
            match decision {
                Decision::Success => state.done = true,
                Decision::Retry { delay, .. } => state.delayed = Some(Instant::now() + seconds(delay)),
                Decision::Failure { message } => {
                    failures.push((spec.id.clone(), message));
                    state.done = true;
                }
            }
        }
        let next = states.iter().filter(|s| !s.done).filter_map(|s| s.delayed).min();
        if let Some(next) = next {
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                () = stop.cancelled() => return Err(ActivityError::Interrupted { activity }),
            }
        }
    }
    if failures.is_empty() {
        Ok(results)
    } else {
        Err(ActivityError::Failed { activity, failures })
    }
}

/// Reads a startup handler's adjusted settings: Kopf's shape, missing keys keep their
/// defaults, unknown keys are reported and ignored.
fn parse_settings(handler: &str, adjusted: &Value) -> Result<OperatorSettings, ActivityError> {
    let parsed: OperatorSettings =
        serde_json::from_value(adjusted.clone()).map_err(|e| ActivityError::BadSettings {
            handler: handler.to_owned(),
            message: e.to_string(),
        })?;
    let mut unknown = Vec::new();
    unknown_keys(adjusted, &to_json(&parsed), "", &mut unknown);
    if !unknown.is_empty() {
        tracing::warn!(
            target: "kopf.activities",
            "{} set unknown settings, which are ignored: {}",
            handler_name(HandlerKind::Startup, handler),
            unknown.join(", ")
        );
    }
    Ok(parsed)
}

fn unknown_keys(given: &Value, known: &Value, prefix: &str, out: &mut Vec<String>) {
    let (Value::Object(given), Value::Object(known)) = (given, known) else {
        return;
    };
    for (key, value) in given {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match known.get(key) {
            None => out.push(path),
            Some(known) => unknown_keys(value, known, &path, out),
        }
    }
}

/// Runs the startup handlers (retried until success) and returns the settings they
/// leave; fails when one fails permanently or the operator is stopped meanwhile.
pub async fn run_startup(context: &OperatorContext) -> anyhow::Result<OperatorSettings> {
    let mut settings = context.settings.clone();
    if handlers_of(&context.plugins, HandlerKind::Startup).is_empty() {
        return Ok(settings);
    }
    run_activity(
        &context.metrics,
        &context.plugins,
        HandlerKind::Startup,
        &mut settings,
        &context.stop,
    )
    .await?;
    Ok(settings)
}

/// Runs the cleanup handlers when the operator exits; failures are logged, not raised.
pub async fn run_cleanup(context: &OperatorContext) {
    if handlers_of(&context.plugins, HandlerKind::Cleanup).is_empty() {
        return;
    }
    let mut settings = context.settings.clone();
    // The operator's own stop token is already cancelled: cleanup gets its own.
    let never = CancellationToken::new();
    if let Err(error) = run_activity(
        &context.metrics,
        &context.plugins,
        HandlerKind::Cleanup,
        &mut settings,
        &never,
    )
    .await
    {
        tracing::error!(target: "kopf.activities", "Cleanup {error}");
    }
}

/// Runs every probe handler once and returns `{handler_id: result}`; a failing probe
/// yields `{"error": "message"}` under its id. The second value is true when any failed.
pub async fn run_probes(
    metrics: &Metrics,
    plugins: &PluginSet,
    settings: &OperatorSettings,
) -> (BTreeMap<String, Value>, bool) {
    let mut results = BTreeMap::new();
    let mut failed = false;
    let started = jiff::Timestamp::now().to_string();
    for handler in handlers_of(plugins, HandlerKind::Probe) {
        let invocation = Invocation {
            activity: Some("probe".to_owned()),
            settings: Some(to_json(settings)),
            started: Some(started.clone()),
            param: handler.spec().options.param.clone(),
            ..Invocation::default()
        };
        let timeout = handler.spec().options.timeout.map(seconds);
        let value = match invoke(
            metrics,
            plugins,
            Call::new(&handler, &invocation).with_timeout(timeout),
        )
        .await
        {
            Outcome {
                error: None, result, ..
            } => result.unwrap_or(Value::Null),
            Outcome {
                error: Some(error), ..
            } => {
                failed = true;
                tracing::warn!(target: "kopf.activities", "Probe {:?} failed: {}", handler.id(), error.message);
                json!({ "error": error.message })
            }
        };
        results.insert(handler.id().to_owned(), value);
    }
    (results, failed)
}

/// Kopf's `ConnectionInfo`, as login handlers return it (the SDK's
/// `kopf::ConnectionInfo`). Certificates and keys are file paths or PEM text.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ConnectionInfo {
    /// The API server URL.
    pub server: String,
    /// A CA bundle file.
    pub ca_path: Option<String>,
    /// A CA bundle, PEM text.
    pub ca_data: Option<String>,
    /// Skip TLS verification.
    pub insecure: bool,
    /// Basic auth user.
    pub username: Option<String>,
    /// Basic auth password.
    pub password: Option<String>,
    /// The token's scheme; only `Bearer` is supported.
    pub scheme: Option<String>,
    /// A bearer token.
    pub token: Option<String>,
    /// A client certificate file.
    pub certificate_path: Option<String>,
    /// A client certificate, PEM text.
    pub certificate_data: Option<String>,
    /// A client key file.
    pub private_key_path: Option<String>,
    /// A client key, PEM text.
    pub private_key_data: Option<String>,
    /// The default namespace.
    pub default_namespace: Option<String>,
    /// An HTTP proxy URL.
    pub proxy_url: Option<String>,
    /// The highest priority wins among several results.
    pub priority: i64,
    /// RFC 3339 expiry of the credentials.
    pub expiration: Option<String>,
}

impl ConnectionInfo {
    /// The equivalent kubeconfig (one cluster, one user, one context).
    pub fn to_kubeconfig(&self) -> Result<kube::config::Kubeconfig, ActivityError> {
        if self.server.is_empty() {
            return Err(ActivityError::Login("the connection info has no server".into()));
        }
        if let Some(scheme) = self.scheme.as_deref()
            && !scheme.eq_ignore_ascii_case("bearer")
        {
            return Err(ActivityError::Login(format!(
                "unsupported token scheme {scheme:?} (only Bearer)"
            )));
        }
        let b64 = |pem: &Option<String>| {
            pem.as_ref()
                .map(|p| base64::engine::general_purpose::STANDARD.encode(p.as_bytes()))
        };
        let mut cluster = json!({ "server": self.server });
        let mut user = json!({});
        let put = |obj: &mut Value, key: &str, value: Option<String>| {
            if let Some(v) = value {
                obj[key] = Value::String(v);
            }
        };
        put(&mut cluster, "certificate-authority", self.ca_path.clone());
        put(&mut cluster, "certificate-authority-data", b64(&self.ca_data));
        put(&mut cluster, "proxy-url", self.proxy_url.clone());
        if self.insecure {
            cluster["insecure-skip-tls-verify"] = Value::Bool(true);
        }
        put(&mut user, "token", self.token.clone());
        put(&mut user, "username", self.username.clone());
        put(&mut user, "password", self.password.clone());
        put(&mut user, "client-certificate", self.certificate_path.clone());
        put(&mut user, "client-certificate-data", b64(&self.certificate_data));
        put(&mut user, "client-key", self.private_key_path.clone());
        put(&mut user, "client-key-data", b64(&self.private_key_data));
        let mut context = json!({ "cluster": "login", "user": "login" });
        put(&mut context, "namespace", self.default_namespace.clone());
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "login", "cluster": cluster }],
            "users": [{ "name": "login", "user": user }],
            "contexts": [{ "name": "login", "context": context }],
            "current-context": "login",
        });
        serde_json::from_value(doc).map_err(|e| ActivityError::Login(format!("invalid connection info: {e}")))
    }
}

/// Runs the login handlers, if any, and returns the connection configuration built from
/// the highest-priority `ConnectionInfo` they returned; without login handlers returns
/// `config` unchanged. Call it before building the API client.
pub async fn login(metrics: &Metrics, plugins: &PluginSet, config: kube::Config) -> anyhow::Result<Fresh> {
    if handlers_of(plugins, HandlerKind::Login).is_empty() {
        return Ok(config.into());
    }
    let mut settings = OperatorSettings::default();
    let results = run_activity(
        metrics,
        plugins,
        HandlerKind::Login,
        &mut settings,
        &CancellationToken::new(),
    )
    .await?;
    let mut best: Option<(String, ConnectionInfo)> = None;
    for (id, result) in results {
        let Some(value) = result else { continue };
        match serde_json::from_value::<ConnectionInfo>(value) {
            Ok(info) if !info.server.is_empty() => {
                if best.as_ref().is_none_or(|(_, b)| info.priority > b.priority) {
                    best = Some((id, info));
                }
            }
            Ok(_) => {
                tracing::warn!(target: "kopf.activities", "{} returned no server; ignored.", handler_name(HandlerKind::Login, &id))
            }
            Err(e) => tracing::warn!(
                target: "kopf.activities",
                "{} returned something that is not a ConnectionInfo ({e}); ignored.",
                handler_name(HandlerKind::Login, &id)
            ),
        }
    }
    let Some((id, info)) = best else {
        return Err(ActivityError::Login(
            "no login handler returned connection info (return a kopf::ConnectionInfo)".into(),
        )
        .into());
    };
    let kubeconfig = info.to_kubeconfig()?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| ActivityError::Login(format!("handler {}: {e}", py_repr_str(&id))))?;
    tracing::info!(target: "kopf.activities", "Logged in with handler {} to {}.", py_repr_str(&id), info.server);
    let expires = match info.expiration.as_deref().map(parse_expiration) {
        Some(Ok(at)) => Some(at),
        Some(Err(error)) => {
            tracing::warn!(target: "kopf.activities", "Login handler {}: the expiration is not a time ({error}); renewing on 401s only.", py_repr_str(&id));
            None
        }
        None => None,
    };
    Ok(Fresh { config, expires })
}

/// An RFC 3339 time; one without an offset is UTC (Kopf treats naive times as UTC).
fn parse_expiration(text: &str) -> Result<jiff::Timestamp, jiff::Error> {
    text.parse::<jiff::Timestamp>().or_else(|error| {
        text.parse::<jiff::civil::DateTime>()
            .and_then(|naive| naive.to_zoned(jiff::tz::TimeZone::UTC))
            .map(|zoned| zoned.timestamp())
            .map_err(|_| error)
    })
}

/// How the engine gets fresh credentials after a 401 (see [`crate::clients::auth`]): the
/// login handlers again if there are any (with `base` as the fallback configuration);
/// else a re-read of the kubeconfig / in-cluster token, unless the configuration was
/// `fixed` (given by an embedding application or an embedded cluster), which is reused.
pub fn relogin(
    metrics: &Metrics,
    plugins: &PluginSet,
    base: &kube::Config,
    fixed: bool,
) -> crate::clients::auth::Relogin {
    use crate::clients::auth::{AuthError, static_relogin};
    if !handlers_of(plugins, HandlerKind::Login).is_empty() {
        let plugins = plugins.clone();
        let base = base.clone();
        let metrics = metrics.clone();
        return std::sync::Arc::new(move || {
            let (plugins, base, metrics) = (plugins.clone(), base.clone(), metrics.clone());
            Box::pin(async move {
                login(&metrics, &plugins, base)
                    .await
                    .map_err(|e| AuthError::Login(format!("{e:#}")))
            })
        });
    }
    if fixed {
        return static_relogin(base.clone());
    }
    std::sync::Arc::new(|| {
        Box::pin(async {
            let config = crate::clients::connection::load_config(None)
                .await
                .map_err(|e| AuthError::Login(e.to_string()))?;
            tracing::info!(target: "kopf.activities", "Re-read the cluster credentials (no login handlers).");
            Ok(config.into())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expirations_with_and_without_an_offset() {
        let utc: jiff::Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
        assert_eq!(parse_expiration("2026-12-05T10:00:00Z").unwrap(), utc);
        assert_eq!(parse_expiration("2026-12-05T12:00:00+02:00").unwrap(), utc);
        assert_eq!(parse_expiration("2026-12-05T10:00:00").unwrap(), utc);
        assert!(parse_expiration("tomorrow").is_err());
    }

    #[test]
    fn unknown_settings_are_found() {
        let known = to_json(&OperatorSettings::default());
        let mut out = Vec::new();
        unknown_keys(
            &json!({"posting": {"enabeld": false, "enabled": true}, "nonsense": 1}),
            &known,
            "",
            &mut out,
        );
        assert_eq!(out, vec!["nonsense", "posting.enabeld"]);
    }

    #[test]
    fn adjusted_settings_parse_or_fail_clearly() {
        let s = parse_settings("h", &json!({"posting": {"enabled": false}})).unwrap();
        assert!(!s.posting.enabled);
        assert_eq!(s.queueing.idle_timeout, 5.0);
        let e = parse_settings("h", &json!({"posting": {"enabled": "no"}})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("startup handler \"h\" returned invalid settings"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn connection_info_becomes_a_config() {
        let info: ConnectionInfo = serde_json::from_value(json!({
            "server": "https://127.0.0.1:6443", "token": "t0k", "insecure": true,
            "default_namespace": "ns1", "priority": 5
        }))
        .unwrap();
        let config = kube::Config::from_custom_kubeconfig(info.to_kubeconfig().unwrap(), &Default::default())
            .await
            .unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(config.default_namespace, "ns1");
        assert!(config.accept_invalid_certs);
        let bad = ConnectionInfo {
            server: "https://x".into(),
            scheme: Some("Digest".into()),
            ..Default::default()
        };
        assert!(bad.to_kubeconfig().is_err());
        assert!(ConnectionInfo::default().to_kubeconfig().is_err());
    }
}
