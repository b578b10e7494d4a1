//! Re-authentication: when the API answers `401 Unauthorized`, log in again and retry.
//!
//! The engine's [`kube::Client`] is built on a [`Credentials`] vault instead of directly
//! on a configuration: every request goes through the vault's current inner client. On a
//! 401 the vault re-runs the login (the operator's login activity, or a re-read of the
//! kubeconfig/token when there are no login handlers), swaps the inner client, and the
//! request is retried once with the fresh credentials. All clones of the engine's client
//! (watchers, patches, events, peering, ...) see the new credentials at once; plugins'
//! own clients get them through the `client.config` host method.
//!
//! Re-logins are single-flight (concurrent 401s wait for one login) and back off when the
//! login keeps failing: 1 s, 2 s, 4 s... up to [`MAX_BACKOFF`], during which further 401s
//! are passed through to the callers (which retry with their own backoffs).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use parking_lot::RwLock;
use tokio::time::Instant;

use super::connection::{self, ConnectionError};
use crate::observability::metrics::Metrics;
use crate::structs::backoff::Backoff;

/// The longest pause between two failed re-logins.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long one re-login may take before it counts as failed.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Failures of re-authentication.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The login (activity or kubeconfig re-read) failed.
    #[error("re-authentication failed: {0}")]
    Login(String),
    /// The login took too long.
    #[error("re-authentication timed out after {0:?}")]
    Timeout(Duration),
    /// A client could not be built from the fresh credentials.
    #[error(transparent)]
    Client(#[from] ConnectionError),
    /// The last re-login failed recently; the next attempt is not due yet.
    #[error("re-authentication is backing off after {failures} failure(s); next attempt in {remaining:?}")]
    BackingOff {
        /// Consecutive failures so far.
        failures: u32,
        /// Time until the next attempt is allowed.
        remaining: Duration,
    },
}

/// Produces a fresh connection configuration: the login activity, or a re-read of the
/// kubeconfig.
pub type Relogin = Arc<dyn Fn() -> BoxFuture<'static, Result<Fresh, AuthError>> + Send + Sync>;

/// What a login produced: the configuration and when its credentials expire (Kopf's
/// `ConnectionInfo.expiration`).
#[derive(Clone)]
pub struct Fresh {
    /// The connection configuration.
    pub config: kube::Config,
    /// When the credentials expire, if they say.
    pub expires: Option<jiff::Timestamp>,
}

impl From<kube::Config> for Fresh {
    fn from(config: kube::Config) -> Self {
        Self {
            config,
            expires: None,
        }
    }
}

/// How long before their expiration credentials are renewed.
pub const EXPIRATION_MARGIN: Duration = Duration::from_secs(5);

/// A relogin that always returns the same configuration (no way to get fresh credentials).
pub fn static_relogin(config: kube::Config) -> Relogin {
    Arc::new(move || {
        let config = config.clone();
        Box::pin(async move { Ok(config.into()) })
    })
}

struct Current {
    client: Client,
    config: kube::Config,
    generation: u64,
}

/// The re-login backoff and when the next attempt may start.
struct Refreshing {
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl Default for Refreshing {
    fn default() -> Self {
        Refreshing {
            backoff: Backoff::exponential(Duration::from_secs(1), MAX_BACKOFF),
            retry_at: None,
        }
    }
}

/// The current credentials of the engine and the way to renew them. See the module docs.
pub struct Credentials {
    current: RwLock<Current>,
    refreshing: tokio::sync::Mutex<Refreshing>,
    relogin: Relogin,
    /// Timeouts applied to every inner client (`settings.networking`).
    networking: RwLock<Option<crate::settings::NetworkingSettings>>,
    /// When the current credentials are renewed before they expire.
    renew_at: RwLock<Option<jiff::Timestamp>>,
    /// The operator's metrics: every inner client counts its requests there.
    metrics: Metrics,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The configuration in force now (what plugins' clients should use).
    pub fn config(&self) -> kube::Config {
        self.current.read().config.clone()
    }

    /// Increments on every successful re-login (starts at 0).
    pub fn generation(&self) -> u64 {
        self.current.read().generation
    }

    /// An inner client for this configuration, with the networking timeouts applied.
    fn build(&self, mut config: kube::Config) -> Result<Client, ConnectionError> {
        if let Some(networking) = self.networking.read().as_ref() {
            connection::apply_networking(&mut config, networking);
        }
        connection::counted_client(config, &self.metrics)
    }

    /// The operator's metrics, for clients of its own built from [`Self::config`].
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Applies Kopf's `settings.networking` timeouts (known after the startup handlers)
    /// to the current client and to every client built after a re-login.
    pub fn set_networking(
        &self,
        networking: &crate::settings::NetworkingSettings,
    ) -> Result<(), ConnectionError> {
        {
            let mut current = self.networking.write();
            if current.as_ref() == Some(networking) {
                // The client was built with these already: building a client costs a TLS
                // set-up (for a cluster without its own CA, the system's roots are read).
                return Ok(());
            }
            *current = Some(networking.clone());
        }
        let config = self.config();
        let client = self.build(config)?;
        self.current.write().client = client;
        Ok(())
    }

    /// Renews the credentials [`EXPIRATION_MARGIN`] before `expires` (none: only on 401s).
    /// Credentials that expire within the margin already are not renewed in advance (each
    /// request would log in again).
    pub fn set_expiration(&self, expires: Option<jiff::Timestamp>) {
        let margin = jiff::SignedDuration::try_from(EXPIRATION_MARGIN).unwrap_or_default();
        let renew_at = expires.and_then(|at| at.checked_sub(margin).ok());
        let renew_at = match renew_at {
            Some(at) if at <= jiff::Timestamp::now() => {
                tracing::warn!(target: "kopf.activities", "The login's credentials expire within {EXPIRATION_MARGIN:?}: they are renewed on a 401 only.");
                None
            }
            other => other,
        };
        *self.renew_at.write() = renew_at;
    }

    /// Logs in again if the current credentials are about to expire (Kopf's vault drops
    /// expired credentials and logs in before the next request).
    async fn renew_if_expiring(&self, seen: u64) {
        let due = self
            .renew_at
            .read()
            .is_some_and(|at| at <= jiff::Timestamp::now());
        if due && let Err(error) = self.renew(seen, "The credentials are about to expire").await {
            tracing::debug!(target: "kopf.activities", "Keeping the expiring credentials: {error}");
        }
    }

    fn snapshot(&self) -> (Client, u64) {
        let current = self.current.read();
        (current.client.clone(), current.generation)
    }

    /// Renews the credentials after a 401 seen with `seen` (a [`Credentials::generation`]).
    /// Does nothing if they were renewed since; fails fast while backing off.
    pub async fn refresh(&self, seen: u64) -> Result<u64, AuthError> {
        self.renew(seen, "The API answered 401 Unauthorized").await
    }

    async fn renew(&self, seen: u64, why: &str) -> Result<u64, AuthError> {
        let mut backoff = self.refreshing.lock().await;
        let generation = self.generation();
        if generation != seen {
            return Ok(generation);
        }
        let now = Instant::now();
        if let Some(at) = backoff.retry_at.filter(|at| *at > now) {
            return Err(AuthError::BackingOff {
                failures: backoff.backoff.failures(),
                remaining: at - now,
            });
        }
        tracing::warn!(target: "kopf.activities", "{why}: re-authenticating.");
        let attempt = async {
            let fresh = tokio::time::timeout(LOGIN_TIMEOUT, (self.relogin)())
                .await
                .map_err(|_| AuthError::Timeout(LOGIN_TIMEOUT))??;
            let client = self.build(fresh.config.clone())?;
            Ok::<_, AuthError>((client, fresh))
        };
        match attempt.await {
            Ok((client, fresh)) => {
                self.set_expiration(fresh.expires);
                let mut current = self.current.write();
                current.generation += 1;
                current.client = client;
                current.config = fresh.config;
                *backoff = Refreshing::default();
                tracing::info!(
                    target: "kopf.activities",
                    "Re-authenticated: new credentials are in use (generation {}).",
                    current.generation
                );
                Ok(current.generation)
            }
            Err(error) => {
                let delay = backoff.backoff.next_backoff();
                backoff.retry_at = Some(Instant::now() + delay);
                tracing::error!(
                    target: "kopf.activities",
                    "{error} (failure {}); the next attempt in no less than {delay:?}.",
                    backoff.backoff.failures()
                );
                Err(error)
            }
        }
    }
}

/// Builds the engine's client on a [`Credentials`] vault: see the module docs.
pub fn reauthenticating_client(
    config: kube::Config,
    relogin: Relogin,
    metrics: Metrics,
) -> Result<(Client, Arc<Credentials>), ConnectionError> {
    let default_namespace = config.default_namespace.clone();
    // Kopf's networking defaults from the start; startup handlers may change them.
    let networking = crate::settings::NetworkingSettings::default();
    let mut first = config.clone();
    connection::apply_networking(&mut first, &networking);
    let inner = connection::counted_client(first, &metrics)?;
    let credentials = Arc::new(Credentials {
        current: RwLock::new(Current {
            client: inner,
            config,
            generation: 0,
        }),
        refreshing: tokio::sync::Mutex::new(Refreshing::default()),
        relogin,
        networking: RwLock::new(Some(networking)),
        renew_at: RwLock::new(None),
        metrics,
    });
    let service = Reauthenticating {
        credentials: credentials.clone(),
    };
    Ok((Client::new(service, default_namespace), credentials))
}

/// The tower service under the engine's client.
#[derive(Clone)]
struct Reauthenticating {
    credentials: Arc<Credentials>,
}

/// A copy of a request for the retry; `None` when its body is a stream.
fn copy_request(request: &Request<Body>) -> Option<Request<Body>> {
    let body = request.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

impl tower::Service<Request<Body>> for Reauthenticating {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let credentials = self.credentials.clone();
        Box::pin(async move {
            let (_, seen) = credentials.snapshot();
            credentials.renew_if_expiring(seen).await;
            let (client, generation) = credentials.snapshot();
            let retry = copy_request(&request);
            let response = client.send(request).await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let Some(retry) = retry else {
                return Ok(response);
            };
            match credentials.refresh(generation).await {
                Ok(_) => {
                    let (client, _) = credentials.snapshot();
                    client.send(retry).await
                }
                Err(error) => {
                    tracing::debug!(target: "kopf.activities", "Passing a 401 through: {error}");
                    Ok(response)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config() -> kube::Config {
        kube::Config::new("http://127.0.0.1:9".parse().unwrap())
    }

    /// A relogin that fails its first `failures` calls, then succeeds; counts calls.
    fn flaky(failures: usize, calls: Arc<AtomicUsize>) -> Relogin {
        Arc::new(move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n < failures {
                    Err(AuthError::Login(format!("attempt {n} refused")))
                } else {
                    Ok(config().into())
                }
            })
        })
    }

    /// Makes the pending backoff expire now (instead of waiting for it).
    async fn expire_backoff(creds: &Credentials) {
        creds.refreshing.lock().await.retry_at = Some(Instant::now());
    }

    #[tokio::test]
    async fn expirations_schedule_a_renewal_before_them() {
        let (_, creds) =
            reauthenticating_client(config(), static_relogin(config()), Metrics::default()).unwrap();
        let in_a_minute = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
        creds.set_expiration(Some(in_a_minute));
        let renew_at = creds.renew_at.read().unwrap();
        assert_eq!(
            in_a_minute.duration_since(renew_at),
            jiff::SignedDuration::from_secs(5)
        );
        // Already within the margin: no renewal before every request.
        creds.set_expiration(Some(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2)));
        assert_eq!(*creds.renew_at.read(), None);
        creds.set_expiration(None);
        assert_eq!(*creds.renew_at.read(), None);
    }

    #[test]
    fn the_backoff_doubles_up_to_a_bound() {
        let mut refreshing = Refreshing::default();
        let delays: Vec<u64> = (1..=8)
            .map(|_| refreshing.backoff.next_backoff().as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[tokio::test]
    async fn failing_relogins_back_off_then_recover() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (_client, creds) =
            reauthenticating_client(config(), flaky(2, calls.clone()), Metrics::default()).unwrap();
        let err = creds.refresh(0).await.unwrap_err();
        assert!(matches!(err, AuthError::Login(_)), "{err}");
        // Until the backoff expires, 401s do not cause new attempts.
        let err = creds.refresh(0).await.unwrap_err();
        assert!(
            matches!(err, AuthError::BackingOff { failures: 1, remaining } if remaining <= Duration::from_secs(1)),
            "{err}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        expire_backoff(&creds).await;
        assert!(matches!(creds.refresh(0).await, Err(AuthError::Login(_))));
        match creds.refresh(0).await.unwrap_err() {
            AuthError::BackingOff {
                failures: 2,
                remaining,
            } => {
                assert!(remaining > Duration::from_secs(1) && remaining <= Duration::from_secs(2))
            }
            other => panic!("{other}"),
        }
        expire_backoff(&creds).await;
        assert_eq!(creds.refresh(0).await.unwrap(), 1, "the third attempt succeeds");
        assert_eq!(creds.generation(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // A 401 seen with the old credentials does not log in again; the backoff is reset.
        assert_eq!(creds.refresh(0).await.unwrap(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(creds.refreshing.lock().await.backoff.failures(), 0);
    }

    #[tokio::test]
    async fn concurrent_401s_log_in_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (_client, creds) =
            reauthenticating_client(config(), flaky(0, calls.clone()), Metrics::default()).unwrap();
        let results = futures::future::join_all((0..8).map(|_| creds.refresh(0))).await;
        assert!(results.iter().all(|r| matches!(r, Ok(1))), "{results:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
