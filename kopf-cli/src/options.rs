//! What `kopf run` asks of the engine, as plain data independent of clap: Kopf's
//! `kopf run` options, which its CLI hands to `kopf.operator()` as arguments.
//!
//! The command line ([`crate::cli`]) and the embedding builder ([`crate::embedded`])
//! fill a [`RunOptions`]; the operator and its parts only read it.

use std::path::PathBuf;

use crate::observability::logging::LogConfig;

/// The peering priority `--dev` sets (Kopf's).
pub const DEV_PRIORITY: i64 = 666;

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
