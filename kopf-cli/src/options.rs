//! What `kopf run` asks of the engine, as plain data independent of clap: Kopf's
//! `kopf run` options, which its CLI hands to `kopf.operator()` as arguments.
//!
//! The command line ([`crate::cli`]) and the embedding builder ([`crate::embedded`])
//! fill a [`RunOptions`]; the operator and its parts only read it. The environment
//! variables the engine honours are read there too, once ([`Environment`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::observability::logging::LogConfig;

/// The peering priority `--dev` sets (Kopf's).
pub const DEV_PRIORITY: i64 = 666;

/// `KOPF_INDEXING_TIMEOUT`: seconds the indices may stay incomplete before the liveness
/// probe fails.
pub const INDEXING_TIMEOUT_ENV: &str = "KOPF_INDEXING_TIMEOUT";
/// `KOPF_LEASE_DURATION`: the `--lease` and `--sharding` Leases' duration in seconds.
pub const LEASE_DURATION_ENV: &str = "KOPF_LEASE_DURATION";
/// `KOPF_PEERING_LIFETIME`: Kopf peering's keep-alive lifetime in seconds.
pub const LIFETIME_ENV: &str = "KOPF_PEERING_LIFETIME";
/// `KOPF_WEBHOOK_RECONCILE_INTERVAL`: seconds between re-applying managed webhook
/// configurations.
pub const RECONCILE_INTERVAL_ENV: &str = "KOPF_WEBHOOK_RECONCILE_INTERVAL";
/// `POD_NAMESPACE`: the namespace the operator runs in (from the downward API).
pub const POD_NAMESPACE_ENV: &str = "POD_NAMESPACE";

/// What the engine takes from the process's environment, read once where the operator is
/// configured (the command line, the embedding builder), so that the engine's parts never
/// read environment variables themselves. Unset or unreadable values are `None` (the
/// part's default applies); durations in whole seconds are at least 1 s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// [`POD_NAMESPACE_ENV`], trimmed, if not empty.
    pub pod_namespace: Option<String>,
    /// [`INDEXING_TIMEOUT_ENV`] (fractional seconds allowed; zero is allowed).
    pub indexing_timeout: Option<Duration>,
    /// [`LEASE_DURATION_ENV`].
    pub lease_duration: Option<Duration>,
    /// [`LIFETIME_ENV`], in seconds.
    pub peering_lifetime: Option<u64>,
    /// [`RECONCILE_INTERVAL_ENV`].
    pub webhook_reconcile_interval: Option<Duration>,
}

impl Environment {
    /// Reads the process's environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (the process's environment, or a test's).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let seconds = |name: &str| {
            lookup(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|secs| secs.max(1))
        };
        let indexing_timeout = lookup(INDEXING_TIMEOUT_ENV).and_then(|text| {
            match text.trim().parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs >= 0.0 => Some(Duration::from_secs_f64(secs)),
                _ => {
                    tracing::warn!(target: "kopf.activities", "{INDEXING_TIMEOUT_ENV}={text:?} is not a number of seconds; using the default.");
                    None
                }
            }
        });
        Self {
            pod_namespace: lookup(POD_NAMESPACE_ENV)
                .map(|ns| ns.trim().to_owned())
                .filter(|ns| !ns.is_empty()),
            indexing_timeout,
            lease_duration: seconds(LEASE_DURATION_ENV).map(Duration::from_secs),
            peering_lifetime: seconds(LIFETIME_ENV),
            webhook_reconcile_interval: seconds(RECONCILE_INTERVAL_ENV).map(Duration::from_secs),
        }
    }
}

/// What `kopf run` asks of the engine: a plain struct, independent of clap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// The plugin files, in command-line order.
    pub plugins: Vec<PathBuf>,
    /// Namespace patterns as given (each may hold comma-separated parts, globs and `!`).
    /// Empty together with `clusterwide == false` means Kopf's default (cluster-wide with
    /// a warning).
    pub namespaces: Vec<String>,
    /// `-A/--all-namespaces`.
    pub clusterwide: bool,
    /// `--standalone`: no peering.
    pub standalone: bool,
    /// `-P/--peering`: the peering name (mandatory peering).
    pub peering_name: Option<String>,
    /// `-p/--priority` or [`DEV_PRIORITY`] for `--dev`.
    pub priority: i64,
    /// `-L/--liveness`: the probe endpoint URL.
    pub liveness_endpoint: Option<String>,
    /// `--lease`: the Lease electing one active replica.
    pub lease: Option<String>,
    /// `--sharding`: the ring of replicas that split the objects among themselves.
    pub sharding: Option<String>,
    /// Admission webhook server options.
    pub webhooks: WebhookOptions,
    /// Logging settings.
    pub log: LogConfig,
    /// What the environment says (read at the edge, see [`Environment`]).
    pub environment: Environment,
    /// `--post-logs[=LEVEL]`: post object log lines as events at this level and above.
    pub post_logs: Option<String>,
}

/// The webhook server options of `kopf run` (`--webhook-*`; the clap side is
/// `crate::admission::WebhookArgs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookOptions {
    /// `--webhook-server`: serve admission webhooks at this `https://ADDR:PORT[/PATH]`.
    pub webhook_server: Option<String>,
    /// `--webhook-host`: the certificate's names and the configurations' host (the first).
    pub webhook_host: Vec<String>,
    /// `--webhook-cert`: the server certificate (PEM chain), reloaded when it changes.
    pub webhook_cert: Option<PathBuf>,
    /// `--webhook-key`: the certificate's private key (PEM), reloaded when it changes.
    pub webhook_key: Option<PathBuf>,
    /// `--webhook-ca`: the CA bundle (PEM) put into the configurations.
    pub webhook_ca: Option<PathBuf>,
    /// `--webhook-cadump`: write the server's CA certificate (PEM) here.
    pub webhook_cadump: Option<PathBuf>,
    /// `--webhook-managed`: keep the Validating/MutatingWebhookConfiguration of this name.
    pub webhook_managed: Option<String>,
    /// `--webhook-verify-cafile`: verify clients' certificates against this CA bundle.
    pub webhook_verify_cafile: Option<PathBuf>,
    /// `--webhook-verify-mode`: `required` (the default) or `optional`.
    pub webhook_verify_mode: Option<String>,
}

/// This operator's identity: `POD_ID` if set, else `user@host/YYYYmmddHHMMSS/xyz` (or
/// `user@host` for manual commands like `kopf peering freeze`), as Kopf's `detect_own_id`.
pub fn detect_own_id(manual: bool) -> String {
    if let Ok(pod) = std::env::var("POD_ID") {
        return pod;
    }
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let host = hostname();
    if manual {
        return format!("{user}@{host}");
    }
    let now = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y%m%d%H%M%S")
        .to_string();
    const ALPHABET: &[u8] = b"abcdefhijklmnopqrstuvwxyz0123456789";
    let rnd: String = (0..3)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{user}@{host}/{now}/{rnd}")
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_environment_is_read_once_with_defaults_for_what_is_unset_or_unreadable() {
        let vars = [
            ("POD_NAMESPACE", " ops "),
            ("KOPF_INDEXING_TIMEOUT", "2.5"),
            ("KOPF_LEASE_DURATION", "0"),
            ("KOPF_PEERING_LIFETIME", "x"),
            ("KOPF_WEBHOOK_RECONCILE_INTERVAL", "30"),
        ];
        let env = super::Environment::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        });
        assert_eq!(env.pod_namespace.as_deref(), Some("ops"));
        assert_eq!(env.indexing_timeout, Some(std::time::Duration::from_millis(2500)));
        assert_eq!(
            env.lease_duration,
            Some(std::time::Duration::from_secs(1)),
            "at least 1 s"
        );
        assert_eq!(env.peering_lifetime, None, "not a number: the default applies");
        assert_eq!(
            env.webhook_reconcile_interval,
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            super::Environment::from_lookup(|_| None),
            super::Environment::default()
        );
    }
}
