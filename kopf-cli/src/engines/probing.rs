//! The liveness endpoint (`--liveness http://host:port/path`): probe handlers' results as
//! JSON (Kopf's `kopf/_core/engines/probing.py`), plus Prometheus metrics at `/metrics`.
//!
//! * `GET <path>` (`/` when the URL has none) runs every probe handler once, at most every
//!   10 seconds (results are cached), and answers `{probe_id: result, ...}`; `{}` without
//!   probe handlers. A probe that fails is reported as `{"probe_id": {"error": "..."}}` and
//!   the status is `500` (Kopf answers 500 too, with a traceback instead of JSON), so a
//!   Kubernetes liveness probe sees the failure.
//! * The engine's own liveness checks ([`LivenessCheck`], e.g. indices that never become
//!   ready) run on every request, uncached: a failing one is reported under its id as
//!   `{"error": "..."}` with status `500`, as a failing probe.
//! * `GET /metrics` (unless the probe path is `/metrics` itself) serves
//!   [`crate::observability::metrics`] in the OpenMetrics text format. Kopf has no metrics
//!   endpoint; it shares the liveness listener so no extra port is needed.
//! * `GET /readyz` (unless the probe path is `/readyz`) answers `200 {"ready": true}` once
//!   the replica is ready ([`crate::signals::readiness`]: discovered, every stream listed,
//!   not paused), else `503 {"ready": false, "reasons": [...]}`. Kopf has none either; a
//!   standby replica of `--lease` or one paused by peering is alive but not ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::{
    contexts::OperatorContext,
    engines::activities,
    observability::metrics::{self, Metrics},
    plugin::PluginSet,
    settings::OperatorSettings,
    signals::{PauseToggles, Readiness},
};

/// The path of the readiness endpoint on the liveness listener.
pub const READINESS_PATH: &str = "/readyz";

/// How long probe results are reused, as in Kopf.
pub const PROBE_MAX_AGE: Duration = Duration::from_secs(10);

/// A check of the engine's own liveness: its id, and `Some(reason)` while it fails.
pub type LivenessCheck = (String, Arc<dyn Fn() -> Option<String> + Send + Sync>);

/// Probe results cached for [`PROBE_MAX_AGE`].
struct Prober {
    plugins: PluginSet,
    settings: OperatorSettings,
    cache: Mutex<Option<(Instant, Value, bool)>>,
    readiness: Arc<Readiness>,
    toggles: PauseToggles,
    checks: Vec<LivenessCheck>,
    /// This operator's metrics (`/metrics`).
    metrics: Metrics,
}

impl Prober {
    async fn results(&self) -> (Value, bool) {
        let mut cache = self.cache.lock().await;
        if let Some((at, value, failed)) = cache.as_ref()
            && at.elapsed() < PROBE_MAX_AGE
        {
            return (value.clone(), *failed);
        }
        let (results, failed) = activities::run_probes(&self.metrics, &self.plugins, &self.settings).await;
        let value = Value::Object(results.into_iter().collect());
        *cache = Some((Instant::now(), value.clone(), failed));
        (value, failed)
    }
}

async fn health(State(prober): State<Arc<Prober>>) -> Response {
    let (mut value, mut failed) = prober.results().await;
    for (id, check) in &prober.checks {
        if let Some(reason) = check()
            && let Some(results) = value.as_object_mut()
        {
            results.insert(id.clone(), serde_json::json!({"error": reason}));
            failed = true;
        }
    }
    let status = if failed {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    (status, axum::Json(value)).into_response()
}

async fn ready(State(prober): State<Arc<Prober>>) -> Response {
    let reasons = prober.readiness.unready_reasons(&prober.toggles);
    if reasons.is_empty() {
        (StatusCode::OK, axum::Json(json!({"ready": true}))).into_response()
    } else {
        let body = json!({"ready": false, "reasons": reasons});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn metrics_text(State(prober): State<Arc<Prober>>) -> Response {
    // The plugins' pools are asked when scraped (a cheap control call each).
    for (plugin, stats) in prober.plugins.pool_stats() {
        prober.metrics.plugin_pool(&plugin, &stats);
    }
    let text = prober.metrics.render();
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

/// The address and path of a liveness URL (`http://host:port/path`).
fn endpoint(url: &str) -> anyhow::Result<(String, u16, String)> {
    let parsed = url::Url::parse(url).with_context(|| format!("invalid liveness URL {url:?}"))?;
    if parsed.scheme() != "http" {
        anyhow::bail!("only http:// liveness endpoints are supported, got {url:?}");
    }
    let host = parsed
        .host_str()
        .with_context(|| format!("the liveness URL {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let path = match parsed.path() {
        "" => "/".to_owned(),
        p => p.to_owned(),
    };
    Ok((host, port, path))
}

/// The router of the liveness endpoint: probes at `path`, metrics at `/metrics`,
/// readiness at [`READINESS_PATH`] (each unless `path` is that path); `checks` are the
/// engine's own liveness checks.
pub fn router(context: &OperatorContext, path: &str, checks: Vec<LivenessCheck>) -> Router {
    let prober = Arc::new(Prober {
        plugins: context.plugins.clone(),
        settings: context.settings.clone(),
        cache: Mutex::new(None),
        readiness: context.readiness.clone(),
        toggles: context.toggles.clone(),
        checks,
        metrics: context.metrics.clone(),
    });
    let mut router = Router::new().route(path, get(health));
    if path != "/metrics" {
        router = router.route("/metrics", get(metrics_text));
    }
    if path != READINESS_PATH {
        router = router.route(READINESS_PATH, get(ready));
    }
    router.with_state(prober)
}

/// Starts the liveness endpoint if one is configured; it serves until the operator stops.
/// Fails if the address cannot be bound.
pub async fn start(context: &OperatorContext, checks: Vec<LivenessCheck>) -> anyhow::Result<()> {
    let Some(url) = context.options.liveness_endpoint.as_deref() else {
        return Ok(());
    };
    let (host, port, path) = endpoint(url)?;
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("cannot serve the liveness endpoint at {host}:{port}"))?;
    let local = listener.local_addr().ok();
    let app = router(context, &path, checks);
    let stop = context.stop.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(target: "kopf.activities", "The liveness endpoint failed: {error}");
        }
    });
    match local {
        Some(addr) => tracing::info!(
            target: "kopf.activities",
            "Serving health status at http://{addr}{path} (metrics at /metrics, readiness at {READINESS_PATH})."
        ),
        None => tracing::info!(target: "kopf.activities", "Serving health status at {url}."),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_parsed() {
        assert_eq!(
            endpoint("http://0.0.0.0:8080/healthz").unwrap(),
            ("0.0.0.0".to_owned(), 8080, "/healthz".to_owned())
        );
        assert_eq!(
            endpoint("http://localhost").unwrap(),
            ("localhost".to_owned(), 80, "/".to_owned())
        );
        assert_eq!(endpoint("http://[::1]:9/x").unwrap().0, "::1");
        assert!(endpoint("https://x:1/").is_err());
        assert!(endpoint("nonsense").is_err());
    }
}
