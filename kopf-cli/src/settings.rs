//! Operator settings: Kopf's `OperatorSettings`, with the same groups, names and defaults.
//!
//! Durations are seconds as `f64`, as in Kopf, so that the JSON handed to startup handlers
//! (which may change it and return it) reads exactly like Kopf's settings.

use serde::{Deserialize, Serialize};

/// All settings of one operator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OperatorSettings {
    /// Posting of Kubernetes events.
    pub posting: PostingSettings,
    /// Peering between operators.
    pub peering: PeeringSettings,
    /// Watch streams.
    pub watching: WatchingSettings,
    /// Per-object queues and workers.
    pub queueing: QueueingSettings,
    /// Observation of namespaces and CRDs.
    pub scanning: ScanningSettings,
    /// Handler execution.
    pub execution: ExecutionSettings,
    /// Daemons and timers.
    pub background: BackgroundSettings,
    /// API requests.
    pub networking: NetworkingSettings,
    /// State stored on objects.
    pub persistence: PersistenceSettings,
    /// The `kopf` process.
    pub process: ProcessSettings,
}

/// `settings.process`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessSettings {
    /// Seconds from SIGINT/SIGTERM until the process exits with 137 however far its
    /// graceful exit got (Kopf SIGKILLs itself); `None` waits for the graceful exit.
    pub ultimate_exiting_timeout: Option<f64>,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        Self {
            ultimate_exiting_timeout: Some(600.0),
        }
    }
}

/// `settings.posting`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostingSettings {
    /// Post events at all (also gates `ctx.info/warn/exception`).
    pub enabled: bool,
    /// Post object log lines as events (off by default since Kopf 1.44).
    pub loggers: bool,
    /// The minimum level to post: `DEBUG`, `INFO`, `WARNING`, `ERROR`, or Python's level
    /// number (`logging.WARNING` is 30), as Kopf's settings hold it.
    #[serde(deserialize_with = "level_name")]
    pub level: String,
    /// `reportingComponent` and `source.component`.
    pub reporting_component: String,
    /// `reportingInstance`.
    pub reporting_instance: String,
    /// `metadata.generateName` of events.
    pub event_name_prefix: String,
}

impl Default for PostingSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            loggers: false,
            level: "INFO".into(),
            reporting_component: "kopf".into(),
            reporting_instance: "dev".into(),
            event_name_prefix: "kopf-event-".into(),
        }
    }
}

/// A log level given by name or by Python's number (stored by name when it has one).
fn level_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Level {
        Number(u32),
        Name(String),
    }
    Ok(match Level::deserialize(deserializer)? {
        Level::Name(name) => name,
        Level::Number(number) => crate::observability::fields::LEVELS
            .iter()
            .find(|(_, known)| *known == number)
            .map_or_else(|| number.to_string(), |(name, _)| (*name).to_owned()),
    })
}

/// `settings.peering`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeeringSettings {
    /// The peering object's name.
    pub name: String,
    /// This operator's priority.
    pub priority: i64,
    /// Seconds a keep-alive record lives.
    pub lifetime: u64,
    /// Stay paused until the peering object exists.
    pub mandatory: bool,
    /// No peering at all.
    pub standalone: bool,
    /// Use the cluster-wide peering object.
    pub clusterwide: bool,
    /// Do not log keep-alives.
    pub stealth: bool,
}

impl Default for PeeringSettings {
    fn default() -> Self {
        Self {
            name: "default".into(),
            priority: 0,
            lifetime: 60,
            mandatory: false,
            standalone: false,
            clusterwide: false,
            stealth: false,
        }
    }
}

/// `settings.watching`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WatchingSettings {
    /// `timeoutSeconds` sent to the server.
    pub server_timeout: Option<f64>,
    /// A client-side total timeout of one watch request.
    pub client_timeout: Option<f64>,
    /// The connection timeout of watch requests.
    pub connect_timeout: Option<f64>,
    /// Seconds between consecutive watch requests.
    pub reconnect_backoff: f64,
    /// Reconnect a stream silent for this long (bookmarks count).
    pub inactivity_timeout: f64,
}

impl Default for WatchingSettings {
    fn default() -> Self {
        Self {
            server_timeout: None,
            client_timeout: None,
            connect_timeout: None,
            reconnect_backoff: 0.1,
            inactivity_timeout: 70.0,
        }
    }
}

/// The default of `settings.queueing.worker_limit` (Kopf's is unbounded): bounds the
/// memory of a burst of objects, not throughput (the API requests in flight are bounded
/// separately, see `clients::connection::MAX_REQUESTS_IN_FLIGHT`); a handler call that runs
/// longer than `reactor::queueing::SLOT_HOLD_LIMIT` gives its slot back meanwhile.
pub const DEFAULT_WORKER_LIMIT: usize = 256;

/// `settings.queueing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueingSettings {
    /// The most objects processed at once; `None` for no limit (Kopf's default), by
    /// default [`DEFAULT_WORKER_LIMIT`].
    pub worker_limit: Option<usize>,
    /// Seconds an idle per-object worker lives.
    pub idle_timeout: f64,
    /// Seconds workers get to finish when a stream stops.
    pub exit_timeout: f64,
    /// Throttling delays after unexpected processing errors.
    pub error_delays: Vec<f64>,
}

impl Default for QueueingSettings {
    fn default() -> Self {
        Self {
            worker_limit: Some(DEFAULT_WORKER_LIMIT),
            idle_timeout: 5.0,
            exit_timeout: 2.0,
            error_delays: vec![
                1., 1., 2., 3., 5., 8., 13., 21., 34., 55., 89., 144., 233., 377., 610.,
            ],
        }
    }
}

/// `settings.scanning`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScanningSettings {
    /// Do not observe namespaces and CRDs.
    pub disabled: bool,
}

/// `settings.execution`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutionSettings {
    /// Seconds before retrying a handler after an arbitrary error.
    pub default_backoff: f64,
    /// Threads for sync handlers; `None` for the default.
    pub max_workers: Option<usize>,
}

impl Default for ExecutionSettings {
    fn default() -> Self {
        Self {
            default_backoff: 60.0,
            max_workers: None,
        }
    }
}

/// `settings.background`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackgroundSettings {
    /// Seconds between checks whether a stopping daemon has exited.
    pub cancellation_polling: f64,
    /// Seconds a daemon may take to exit "instantly".
    pub instant_exit_timeout: Option<f64>,
    /// Zero-time cycles a daemon gets to exit "instantly".
    pub instant_exit_zero_time_cycles: u32,
}

impl Default for BackgroundSettings {
    fn default() -> Self {
        Self {
            cancellation_polling: 60.0,
            instant_exit_timeout: None,
            instant_exit_zero_time_cycles: 10,
        }
    }
}

/// `settings.networking`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkingSettings {
    /// Seconds for one API request.
    pub request_timeout: f64,
    /// Seconds to connect.
    pub connect_timeout: Option<f64>,
    /// Delays between retries of failed API requests.
    pub error_backoffs: Vec<f64>,
    /// Always wait for `Retry-After`, even beyond the backoff.
    pub enforce_retry_after: bool,
}

impl Default for NetworkingSettings {
    fn default() -> Self {
        Self {
            request_timeout: 300.0,
            connect_timeout: None,
            error_backoffs: vec![1., 1., 2., 3., 5., 8., 13., 21.],
            enforce_retry_after: false,
        }
    }
}

/// `settings.persistence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersistenceSettings {
    /// The finalizer put on objects that need one.
    pub finalizer: String,
    /// The annotations prefix of progress records and the diff-base.
    pub prefix: String,
    /// The diff-base annotation's key (after the prefix).
    pub diffbase_key: String,
    /// Also write the legacy V1 annotation keys when they differ from V2.
    pub v1: bool,
    /// Kopf's `progress_storage` class: `smart` (Kopf's default), `annotations`, `status`
    /// or `multi` (see `persistence::storages`).
    pub progress_storage: String,
    /// The status field of the `status` and `smart` progress storages.
    pub progress_field: String,
    /// Kopf's `diffbase_storage` class: `annotations` (Kopf's default), `status` or `multi`.
    pub diffbase_storage: String,
    /// The status field of the `status` diff-base storage.
    pub diffbase_field: String,
    /// Seconds to wait for our own patch to arrive before processing further events.
    pub consistency_timeout: f64,
}

impl Default for PersistenceSettings {
    fn default() -> Self {
        Self {
            finalizer: "kopf.zalando.org/KopfFinalizerMarker".into(),
            prefix: "kopf.zalando.org".into(),
            diffbase_key: "last-handled-configuration".into(),
            v1: true,
            progress_storage: "smart".into(),
            progress_field: "status.kopf.progress".into(),
            diffbase_storage: "annotations".into(),
            diffbase_field: "status.kopf.last-handled-configuration".into(),
            consistency_timeout: 5.0,
        }
    }
}

/// Converts seconds (Kopf's floats) into a duration, treating negatives and NaN as zero.
pub fn seconds(value: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kopf() {
        let s = OperatorSettings::default();
        assert_eq!(s.persistence.finalizer, "kopf.zalando.org/KopfFinalizerMarker");
        assert_eq!(s.watching.inactivity_timeout, 70.0);
        assert_eq!(s.queueing.idle_timeout, 5.0);
        assert_eq!(s.execution.default_backoff, 60.0);
        assert_eq!(s.peering.lifetime, 60);
        assert!(!s.posting.loggers);
    }

    #[test]
    fn partial_json_keeps_the_other_defaults() {
        let s: OperatorSettings =
            serde_json::from_str(r#"{"posting": {"enabled": false}, "queueing": {"worker_limit": 3}}"#)
                .unwrap();
        assert!(!s.posting.enabled);
        assert_eq!(s.posting.reporting_component, "kopf");
        assert_eq!(s.queueing.worker_limit, Some(3));
        assert_eq!(s.queueing.idle_timeout, 5.0);
        assert_eq!(seconds(-1.0), std::time::Duration::ZERO);
    }

    #[test]
    fn the_posting_level_reads_names_and_python_numbers() {
        let level = |json: &str| {
            serde_json::from_str::<OperatorSettings>(json)
                .unwrap()
                .posting
                .level
        };
        assert_eq!(level(r#"{"posting": {"level": 30}}"#), "WARNING");
        assert_eq!(level(r#"{"posting": {"level": "ERROR"}}"#), "ERROR");
        assert_eq!(level(r#"{"posting": {"level": 25}}"#), "25");
        assert_eq!(level(r#"{}"#), "INFO");
    }
}
