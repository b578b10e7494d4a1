//! The engine's host services: what plugins may ask the operator through
//! `HostTable::call` (posting events, stopping daemons, index lookups, the client's
//! connection settings).

use std::{sync::Arc, time::Duration};

use crate::engines::posting;
use kopf_abi::{Failure, FailureKind, protocol::host_methods};
use kube::Client;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    clients::{auth, events},
    observability::fields,
    plugin::{CallerInfo, HostServices},
    reactor::{indexing::Indices, stopping::StopRegistry},
    settings::OperatorSettings,
};

/// `settings.posting.level` as Python's level number (INFO if it is not a level).
pub(super) fn posting_level(settings: &OperatorSettings) -> u32 {
    fields::level_number(&settings.posting.level).unwrap_or_else(|| {
        tracing::warn!(target: "kopf.activities", "settings.posting.level {:?} is not a level; using INFO.", settings.posting.level);
        20
    })
}

/// The host services of the engine: what plugins may ask through `HostTable::call`.
pub(super) struct EngineServices {
    pub(super) events: Option<posting::EventQueue>,
    pub(super) reporter: events::Reporter,
    /// `settings.posting.level` as Python's level number.
    pub(super) posting_level: u32,
    pub(super) stops: Arc<StopRegistry>,
    pub(super) indices: Arc<Indices>,
    /// The source of `client.config`: the operator's current connection settings.
    pub(super) credentials: Arc<auth::Credentials>,
    /// The engine's runtime, for re-logins asked by plugins (host calls are synchronous).
    pub(super) runtime: tokio::runtime::Handle,
}

impl EngineServices {
    /// Starts the event poster (a background task) and returns the services.
    pub(super) fn start(
        client: Client,
        settings: &OperatorSettings,
        stop: CancellationToken,
        stops: Arc<StopRegistry>,
        indices: Arc<Indices>,
        credentials: Arc<auth::Credentials>,
        metrics: crate::observability::metrics::Metrics,
    ) -> Self {
        let runtime = tokio::runtime::Handle::current();
        let reporter = events::Reporter {
            component: settings.posting.reporting_component.clone(),
            instance: settings.posting.reporting_instance.clone(),
            name_prefix: settings.posting.event_name_prefix.clone(),
        };
        let posting_level = posting_level(settings);
        if !settings.posting.enabled {
            return Self {
                events: None,
                reporter,
                posting_level,
                stops,
                indices,
                credentials,
                runtime,
            };
        }
        Self {
            events: Some(posting::EventQueue::start(client, stop, metrics)),
            reporter,
            posting_level,
            stops,
            indices,
            credentials,
            runtime,
        }
    }
}

impl EngineServices {
    /// The answer to `client.config`. A plugin whose client got a 401 sends the
    /// `generation` of the settings it used as `unauthorized_generation`: if they are
    /// still the current ones, the operator re-authenticates first (single-flight with
    /// its own re-logins) and answers with the fresh settings.
    pub(super) fn client_config(&self, payload: &str) -> Value {
        let stale = serde_json::from_str::<Value>(payload)
            .ok()
            .and_then(|p| p.get("unauthorized_generation").and_then(Value::as_u64));
        if let Some(seen) = stale
            && seen == self.credentials.generation()
        {
            let (tx, rx) = std::sync::mpsc::channel();
            let credentials = self.credentials.clone();
            self.runtime.spawn(async move {
                let _ = tx.send(credentials.refresh(seen).await);
            });
            match rx.recv_timeout(auth::LOGIN_TIMEOUT + Duration::from_secs(5)) {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(target: "kopf.activities", "A plugin's client got a 401: {error}")
                }
                Err(_) => {
                    tracing::warn!(target: "kopf.activities", "A plugin's client got a 401; re-authentication did not finish in time.")
                }
            }
        }
        let mut answer = client_config_json(&self.credentials.config());
        answer["generation"] = Value::from(self.credentials.generation());
        answer
    }
}

/// The operator's connection settings as plugins' own kube clients need them (the SDK's
/// `client` feature reads this): cluster URL, default namespace, CA certificates (base64
/// DER), TLS options, proxy, and the kubeconfig user entry (token, client certificate and
/// key, token file, exec plugin...).
fn client_config_json(config: &kube::Config) -> Value {
    use base64::Engine as _;
    let root_cert = config.root_cert.as_ref().map(|certs| {
        certs
            .iter()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
            .collect::<Vec<_>>()
    });
    serde_json::json!({
        "cluster_url": config.cluster_url.to_string(),
        "default_namespace": config.default_namespace,
        "root_cert": root_cert,
        "accept_invalid_certs": config.accept_invalid_certs,
        "tls_server_name": config.tls_server_name,
        "proxy_url": config.proxy_url.as_ref().map(ToString::to_string),
        "auth_info": serde_json::to_value(&config.auth_info).unwrap_or(Value::Null),
    })
}

impl HostServices for EngineServices {
    fn call(
        &self,
        _caller: &CallerInfo,
        method: &str,
        _version: u32,
        payload: &str,
    ) -> Result<String, Failure> {
        match method {
            host_methods::EVENT_POST => {
                let payload: Value = serde_json::from_str(payload)
                    .map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, format!("event.post: {e}")))?;
                let text = |key: &str| payload.get(key).and_then(Value::as_str).unwrap_or_default();
                // `ctx.info/warn/exception` say their level: below `posting.level`, they
                // are not posted (Kopf's `kopf.info/warn/exception`); `ctx.event` has none.
                if let Some(level) = payload
                    .get("level")
                    .and_then(Value::as_str)
                    .and_then(fields::level_number)
                    && level < self.posting_level
                {
                    return Ok("{}".into());
                }
                let object = payload.get("object").cloned().unwrap_or(Value::Null);
                let event = events::build_event(
                    &events::InvolvedObject::from_body(&object),
                    &self.reporter,
                    text("type"),
                    text("reason"),
                    text("message"),
                );
                if let Some(events) = &self.events {
                    events.post(event);
                }
                Ok("{}".into())
            }
            host_methods::INDEX_GET => {
                let payload: Value = serde_json::from_str(payload)
                    .map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, format!("{method}: {e}")))?;
                let name = payload.get("index").and_then(Value::as_str).unwrap_or_default();
                let key = payload.get("key").unwrap_or(&Value::Null);
                match self.indices.get(name, key) {
                    Some(values) => Ok(Value::Array(values).to_string()),
                    None => Err(Failure::new(
                        FailureKind::BAD_PAYLOAD,
                        format!("no index named {name:?}"),
                    )),
                }
            }
            host_methods::INDEX_ITEMS => {
                let payload: Value = serde_json::from_str(payload)
                    .map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, format!("{method}: {e}")))?;
                let name = payload.get("index").and_then(Value::as_str).unwrap_or_default();
                match self.indices.items(name) {
                    Some(items) => Ok(serde_json::to_string(&items)
                        .map_err(|e| Failure::new(FailureKind::INTERNAL, format!("{method}: {e}")))?),
                    None => Err(Failure::new(
                        FailureKind::BAD_PAYLOAD,
                        format!("no index named {name:?}"),
                    )),
                }
            }
            host_methods::DAEMON_STOPPED | host_methods::DAEMON_WAIT => {
                let payload: Value = serde_json::from_str(payload)
                    .map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, format!("{method}: {e}")))?;
                let Some(call_id) = payload.get("call_id").and_then(Value::as_u64) else {
                    return Err(Failure::new(
                        FailureKind::BAD_PAYLOAD,
                        format!("{method}: no call_id"),
                    ));
                };
                let wait = (method == host_methods::DAEMON_WAIT).then(|| {
                    payload
                        .get("timeout")
                        .and_then(Value::as_f64)
                        .map(crate::settings::seconds)
                });
                Ok(self.stops.answer(call_id, wait).to_string())
            }
            host_methods::DAEMON_BODY => {
                let call_id = serde_json::from_str::<Value>(payload)
                    .ok()
                    .and_then(|p| p.get("call_id")?.as_u64());
                call_id.and_then(|id| self.stops.body(id)).ok_or_else(|| {
                    Failure::new(
                        FailureKind::BAD_PAYLOAD,
                        format!("{method}: not a running daemon or timer: {payload}"),
                    )
                })
            }
            host_methods::CLIENT_CONFIG => Ok(self.client_config(payload).to_string()),
            other => Err(Failure::new(
                FailureKind::UNSUPPORTED,
                format!("host method {other:?} is not supported yet"),
            )),
        }
    }
}
