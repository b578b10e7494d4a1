//! What login handlers return: Kopf's `kopf.ConnectionInfo`.

use serde::{Deserialize, Serialize};

/// The credentials and endpoint a `#[kopf::on::login]` handler returns (Kopf's
/// `ConnectionInfo`). The `kopf` host builds its API client from the one with the highest
/// `priority` among all login handlers' results, and plugins can get the same through
/// the `client.config` host method.
///
/// Certificates and keys are given either as file paths or as PEM text (`*_data`).
///
/// ```
/// #[kopf::on::login]
/// fn login() -> kopf::Result<kopf::ConnectionInfo> {
///     Ok(kopf::ConnectionInfo::new("https://127.0.0.1:6443").token("secret").insecure(true))
/// }
/// # fn main() {}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionInfo {
    /// The API server URL, e.g. `https://10.0.0.1:6443`.
    pub server: String,
    /// A CA bundle file to trust.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_path: Option<String>,
    /// A CA bundle to trust, PEM text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_data: Option<String>,
    /// Skip TLS verification of the server.
    pub insecure: bool,
    /// Basic auth user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic auth password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The auth scheme of `token` (Kopf's `scheme`); only `Bearer` (the default) is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// A bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A client certificate file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_path: Option<String>,
    /// A client certificate, PEM text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_data: Option<String>,
    /// The client certificate's private key file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_path: Option<String>,
    /// The client certificate's private key, PEM text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_data: Option<String>,
    /// The namespace used when none is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_namespace: Option<String>,
    /// An HTTP proxy URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// Among several login results, the highest priority wins.
    pub priority: i64,
    /// RFC 3339 time after which the credentials are no longer valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
}

impl ConnectionInfo {
    /// Connection info for this server URL, without credentials.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            ..Self::default()
        }
    }

    /// With a bearer token.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// With a CA bundle (PEM text).
    #[must_use]
    pub fn ca_data(mut self, pem: impl Into<String>) -> Self {
        self.ca_data = Some(pem.into());
        self
    }

    /// Skipping TLS verification or not.
    #[must_use]
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// With a default namespace.
    #[must_use]
    pub fn default_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.default_namespace = Some(namespace.into());
        self
    }

    /// With a priority among several login results.
    #[must_use]
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }
}
