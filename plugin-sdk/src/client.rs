//! A Kubernetes client for handlers (cargo feature `client`): a [`kube::Client`] built
//! from the operator's own connection settings, which the host hands out through the host
//! method `client.config`.
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! #[kopf::on::create("kopfexamples")]
//! async fn create_fn(ctx: &kopf::Context) -> kopf::Result<()> {
//!     use k8s_openapi::api::core::v1::Pod;
//!     let pods: kube::Api<Pod> = kube::Api::default_namespaced(ctx.client()?);
//!     let list = pods.list(&Default::default()).await?;
//!     tracing::info!("{} pods", list.items.len());
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! The client lives on the plugin's own tokio runtime (a plugin's tokio is separate from the
//! host's): use it from `async fn` handlers directly; from sync handlers, wrap the calls in
//! [`crate::block_on`].
//!
//! # The `client.config` answer (JSON)
//!
//! ```json
//! {"cluster_url": "https://10.0.0.1:6443", "default_namespace": "default",
//!  "root_cert": ["<base64 DER>"], "accept_invalid_certs": false,
//!  "tls_server_name": null, "proxy_url": null,
//!  "auth_info": {"token": "...", "client-certificate-data": "...", "client-key-data": "..."},
//!  "generation": 0}
//! ```
//!
//! `generation` increments each time the operator re-authenticates after a
//! `401 Unauthorized` (re-running the login handlers or re-reading the kubeconfig):
//! [`client()`] then builds a new client with the fresh credentials. A plugin whose own
//! client gets a 401 first can call [`report_unauthorized`] (payload
//! `{"unauthorized_generation": n}`) to have the operator re-authenticate now.
//!
//! `auth_info` is a kubeconfig `user` entry (kube's `AuthInfo`), so token files, client
//! certificate files and exec plugins work as they do for the host.

use std::sync::Mutex;

use base64::Engine as _;
use serde::Deserialize;

use crate::context::Context;
use crate::error::{HostCallError, SdkError};
use crate::host::Host;
use crate::runtime::runtime;

/// The method name, version and payload of the host call.
const METHOD: &str = kopf_abi::protocol::host_methods::CLIENT_CONFIG;

/// Why a Kubernetes client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host could not give its connection settings (not initialised, or too old).
    #[error("cannot get the operator's connection settings: {0}")]
    Host(#[from] HostCallError),
    /// The host's connection settings are unusable.
    #[error("bad connection settings from the host: {0}")]
    Config(String),
    /// The plugin's runtime is unavailable.
    #[error(transparent)]
    Runtime(#[from] SdkError),
    /// kube-rs refused the configuration.
    #[error("cannot build the Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
}

/// The host's answer to `client.config`.
#[derive(Debug, Deserialize)]
struct ClientConfigDoc {
    cluster_url: String,
    #[serde(default)]
    default_namespace: Option<String>,
    #[serde(default)]
    root_cert: Option<Vec<String>>,
    #[serde(default)]
    accept_invalid_certs: bool,
    #[serde(default)]
    tls_server_name: Option<String>,
    #[serde(default)]
    proxy_url: Option<String>,
    #[serde(default)]
    auth_info: kube::config::AuthInfo,
    /// Increments when the operator re-authenticates (absent from older hosts).
    #[serde(default)]
    generation: Option<u64>,
}

impl ClientConfigDoc {
    fn into_config(self) -> Result<kube::Config, ClientError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| ClientError::Config(format!("{what}: {e}"));
        let url = self.cluster_url.parse().map_err(|e| bad("cluster_url", &e))?;
        let mut config = kube::Config::new(url);
        if let Some(ns) = self.default_namespace.filter(|n| !n.is_empty()) {
            config.default_namespace = ns;
        }
        if let Some(certs) = self.root_cert {
            let der = certs
                .iter()
                .map(|c| base64::engine::general_purpose::STANDARD.decode(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("root_cert", &e))?;
            config.root_cert = Some(der);
        }
        config.accept_invalid_certs = self.accept_invalid_certs;
        config.tls_server_name = self.tls_server_name;
        if let Some(proxy) = self.proxy_url {
            config.proxy_url = Some(proxy.parse().map_err(|e| bad("proxy_url", &e))?);
        }
        config.auth_info = self.auth_info;
        Ok(config)
    }
}

/// A cached client: the operator it is for (its host's context), the generation of that
/// host's credentials it was built from, and the client.
type Cached = (Option<usize>, Option<u64>, kube::Client);

/// The cached clients, one per operator the plugin serves (each has its own cluster).
static CLIENTS: Mutex<Vec<Cached>> = Mutex::new(Vec::new());

/// The plugin's Kubernetes client, built from the host's connection settings and shared
/// (clones are cheap). See the [module docs](self).
///
/// Each call asks the host for its settings (an in-process call); when the operator has
/// re-authenticated since (after a 401; the answer's `generation` changed), a new client
/// with the fresh credentials is built. Keep a client for one handler call, not longer.
pub fn client() -> Result<kube::Client, ClientError> {
    client_for(Host::current())
}

fn client_for(host: Host) -> Result<kube::Client, ClientError> {
    let doc: ClientConfigDoc = host.call(METHOD, 1, &serde_json::json!({}))?;
    let operator = host.context();
    let mut cached = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, client)) = cached
        .iter()
        .find(|(of, generation, _)| *of == operator && *generation == doc.generation)
    {
        return Ok(client.clone());
    }
    let generation = doc.generation;
    let config = doc.into_config()?;
    // kube's client spawns its connection worker: do it on the plugin's runtime.
    let _entered = runtime()?.enter();
    let client = kube::Client::try_from(config)?;
    cached.retain(|(of, _, _)| *of != operator);
    cached.push((operator, generation, client.clone()));
    Ok(client)
}

/// Tells the host that the plugin's client got a `401 Unauthorized`: the operator
/// re-authenticates (unless it did already since the client was built) and the next
/// [`client()`] has the fresh credentials. Blocks until the re-login ends (bounded).
pub fn report_unauthorized() -> Result<(), ClientError> {
    let host = Host::current();
    let operator = host.context();
    let generation = CLIENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(of, _, _)| *of == operator)
        .and_then(|(_, generation, _)| *generation);
    let payload = serde_json::json!({ "unauthorized_generation": generation });
    let _: serde_json::Value = host.call(METHOD, 1, &payload)?;
    Ok(())
}

impl Context {
    /// A Kubernetes client with the operator's credentials (feature `client`): see
    /// [`crate::client`]. Errors are arbitrary handler errors (retried per `errors`).
    pub fn client(&self) -> Result<kube::Client, crate::Error> {
        client_for(self.host()).map_err(crate::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_document_is_read() {
        let doc: ClientConfigDoc = serde_json::from_value(serde_json::json!({
            "cluster_url": "https://10.1.2.3:6443",
            "default_namespace": "ns1",
            "root_cert": [base64::engine::general_purpose::STANDARD.encode(b"der")],
            "accept_invalid_certs": true,
            "auth_info": {"token": "secret-token"},
        }))
        .unwrap();
        let config = doc.into_config().unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://10.1.2.3:6443/");
        assert_eq!(config.default_namespace, "ns1");
        assert_eq!(config.root_cert, Some(vec![b"der".to_vec()]));
        assert!(config.accept_invalid_certs);
        assert!(config.auth_info.token.is_some());
    }

    #[test]
    fn the_credentials_generation_is_read_when_present() {
        let doc: ClientConfigDoc =
            serde_json::from_value(serde_json::json!({"cluster_url": "http://h", "generation": 3})).unwrap();
        assert_eq!(doc.generation, Some(3));
        let old_host: ClientConfigDoc =
            serde_json::from_value(serde_json::json!({"cluster_url": "http://h"})).unwrap();
        assert_eq!(old_host.generation, None);
    }

    #[test]
    fn bad_documents_are_clear_errors() {
        let doc: ClientConfigDoc =
            serde_json::from_value(serde_json::json!({"cluster_url": "not a url at all"})).unwrap();
        assert!(matches!(doc.into_config(), Err(ClientError::Config(m)) if m.contains("cluster_url")));
        let doc: ClientConfigDoc =
            serde_json::from_value(serde_json::json!({"cluster_url": "http://x", "root_cert": ["!!!"]}))
                .unwrap();
        assert!(matches!(doc.into_config(), Err(ClientError::Config(m)) if m.contains("root_cert")));
    }

    #[test]
    fn without_a_host_the_client_is_a_clear_error() {
        assert!(matches!(
            client(),
            Err(ClientError::Host(HostCallError::NotInitialised))
        ));
    }
}
