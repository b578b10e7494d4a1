//! The cluster connection: kubeconfig, in-cluster service account, or `KUBECONFIG`.

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, header::USER_AGENT};
use kube::{Client, Config};

use crate::observability::metrics::Metrics;

/// Failure to set up the cluster connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Neither a kubeconfig nor an in-cluster environment was usable.
    #[error("cannot find cluster credentials (kubeconfig, KUBECONFIG or in-cluster service account): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The kubeconfig file given explicitly could not be read.
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built from the configuration.
    #[error("cannot build the API client: {0}")]
    Client(#[source] kube::Error),
}

/// The `User-Agent` of every request kopf makes, so API servers (and the emulator's
/// counters) can tell kopf's traffic apart.
pub fn user_agent() -> String {
    format!("kopf/{}", env!("CARGO_PKG_VERSION"))
}

/// Infers the configuration the way kubectl does (`KUBECONFIG`, `~/.kube/config`, then
/// the in-cluster service account), or reads the given kubeconfig file.
pub async fn load_config(kubeconfig: Option<&std::path::Path>) -> Result<Config, ConnectionError> {
    match kubeconfig {
        Some(path) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(|source| ConnectionError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?;
            Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|source| ConnectionError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })
        }
        None => Config::infer().await.map_err(ConnectionError::Infer),
    }
}

/// Reads a configuration from kubeconfig YAML text (e.g. an embedded emulator's).
pub async fn config_from_yaml(yaml: &str) -> Result<Config, ConnectionError> {
    let source = |source| ConnectionError::Kubeconfig {
        path: "<embedded>".into(),
        source,
    };
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).map_err(source)?;
    Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(source)
}

/// API requests in flight at once per client. A burst of objects then shares a bounded set
/// of pooled connections instead of opening one connection (with its buffers) per object:
/// that keeps memory flat and spares the API server. Above the default worker limit, so
/// that on a slow server the objects in processing do not queue behind each other's
/// requests (docs/benchmarks.md compares 32 and 128). A watch holds its slot only until
/// the response headers arrive, so long-lived streams never starve other requests.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 128;

/// Builds a client from a configuration, with kopf's user agent and at most
/// [`MAX_REQUESTS_IN_FLIGHT`] requests in flight.
pub fn make_client(config: Config) -> Result<Client, ConnectionError> {
    build_client(config, None)
}

/// [`make_client`], counting each request that carries an [`ApiVerb`] in `metrics`
/// (`kopf_api_requests_total`): the operator's clients count into the operator's metrics.
pub fn counted_client(config: Config, metrics: &Metrics) -> Result<Client, ConnectionError> {
    build_client(config, Some(metrics.clone()))
}

fn build_client(mut config: Config, metrics: Option<Metrics>) -> Result<Client, ConnectionError> {
    if let Ok(value) = HeaderValue::from_str(&user_agent()) {
        config.headers.retain(|(name, _)| name != USER_AGENT);
        config.headers.push((USER_AGENT, value));
    }
    if config.cluster_url.scheme() == Some(&http::uri::Scheme::HTTP) && config.root_cert.is_none() {
        // kube builds its TLS stack even for `http://` servers, and without a configured CA
        // that stack loads the system's trust store at start. Plain HTTP never uses it: an
        // empty CA list spares that start-up cost (and its memory) and changes nothing else.
        config.root_cert = Some(Vec::new());
    }
    let builder = kube::client::ClientBuilder::try_from(config).map_err(ConnectionError::Client)?;
    Ok(builder
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(MAX_REQUESTS_IN_FLIGHT))
        .with_layer(&Counting { inner: (), metrics })
        .build())
}

/// The verb under which a request is counted (a request extension, set by
/// [`super::patching`]); requests without one are not counted.
#[derive(Debug, Clone, Copy)]
pub struct ApiVerb(pub &'static str);

/// Counts the requests that name their [`ApiVerb`], with the status of the answer (after
/// kube's own retries) or `0` when none came. Also its own layer (`inner: ()`).
#[derive(Clone)]
struct Counting<S> {
    inner: S,
    metrics: Option<Metrics>,
}

impl<S> tower::Layer<S> for Counting<()> {
    type Service = Counting<S>;

    fn layer(&self, inner: S) -> Counting<S> {
        Counting {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

impl<S, B> tower::Service<Request<kube::client::Body>> for Counting<S>
where
    S: tower::Service<Request<kube::client::Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<B>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let counted = self
            .metrics
            .clone()
            .zip(request.extensions().get::<ApiVerb>().copied());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            if let Some((metrics, ApiVerb(verb))) = counted {
                let code = result.as_ref().map_or(0, |response| response.status().as_u16());
                metrics.api_request(verb, code);
            }
            result
        })
    }
}

/// Applies Kopf's `settings.networking` timeouts to a configuration: `request_timeout`
/// bounds every read and write of a request (kube's per-operation timeouts: Kopf's is a
/// total), `connect_timeout` the connection set-up (else `request_timeout` does).
pub fn apply_networking(config: &mut Config, networking: &crate::settings::NetworkingSettings) {
    use crate::settings::seconds;
    let request = seconds(networking.request_timeout);
    config.read_timeout = Some(request);
    config.write_timeout = Some(request);
    config.connect_timeout = Some(networking.connect_timeout.map_or(request, seconds).min(request));
}

/// An emulator and a client of it, for the engine's tests.
#[cfg(test)]
pub(crate) async fn emulated() -> (kopf_testing::EmulatorHandle, kube::Client) {
    let emu = kopf_testing::Emulator::builder().start().await.unwrap();
    let config = config_from_yaml(&emu.kubeconfig_yaml()).await.unwrap();
    let client = make_client(config).unwrap();
    (emu, client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counted_clients_count_into_their_own_metrics() {
        let emu = kopf_testing::Emulator::builder().start().await.unwrap();
        let config = config_from_yaml(&emu.kubeconfig_yaml()).await.unwrap();
        let (mine, other) = (Metrics::default(), Metrics::default());
        let client = counted_client(config.clone(), &mine).unwrap();
        super::super::patching::get(&client, "/api/v1/namespaces")
            .await
            .unwrap();
        let absent = super::super::patching::get(&client, "/api/v1/namespaces/absent-ns").await;
        assert!(absent.is_err());
        // Requests without a verb (listings, watches) are not counted.
        let request = http::Request::get("/api/v1/namespaces").body(Vec::new()).unwrap();
        super::super::requests::request_json(&client, request)
            .await
            .unwrap();
        // Nor are those of a client without metrics.
        let plain = make_client(config).unwrap();
        super::super::patching::get(&plain, "/api/v1/namespaces")
            .await
            .unwrap();
        let text = mine.render();
        assert!(
            text.contains(r#"kopf_api_requests_total{verb="get",code="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kopf_api_requests_total{verb="get",code="404"} 1"#),
            "{text}"
        );
        let text = other.render();
        assert!(!text.contains("kopf_api_requests_total{"), "{text}");
    }
    use std::time::Duration;

    #[test]
    fn networking_timeouts_reach_the_client_config() {
        let mut config = Config::new("http://127.0.0.1:9".parse().unwrap());
        let mut networking = crate::settings::NetworkingSettings::default();
        apply_networking(&mut config, &networking);
        assert_eq!(
            config.read_timeout,
            Some(Duration::from_secs(300)),
            "Kopf's default"
        );
        assert_eq!(config.write_timeout, Some(Duration::from_secs(300)));
        assert_eq!(config.connect_timeout, Some(Duration::from_secs(300)));
        networking.request_timeout = 20.0;
        networking.connect_timeout = Some(2.5);
        apply_networking(&mut config, &networking);
        assert_eq!(config.read_timeout, Some(Duration::from_secs(20)));
        assert_eq!(config.connect_timeout, Some(Duration::from_millis(2500)));
        networking.connect_timeout = Some(99.0);
        apply_networking(&mut config, &networking);
        assert_eq!(
            config.connect_timeout,
            Some(Duration::from_secs(20)),
            "never above the total"
        );
    }
}
