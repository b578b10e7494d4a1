//! Prometheus metrics of the operator, served at `/metrics` on the liveness endpoint.
//!
//! Kopf has no metrics; these are an addition. Each operator owns one [`Metrics`] (a
//! cheap handle: clones share the registry), built by the operator and handed down in
//! the contexts of its parts, so that two operators in one process (embedding) count
//! only their own work. The parts update it through the small methods below (each a
//! cheap atomic update after the first use of a label set), and [`Metrics::render`]
//! produces the OpenMetrics text exposition that `/metrics` serves.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kopf_handler_invocations_total` | counter | `kind`, `handler`, `outcome` (`success`, `temporary`, `permanent`, `arbitrary`, `admission`, `timeout`: the call was abandoned, `failure`: the plugin could not run it) |
//! | `kopf_handler_duration_seconds` | histogram | `kind`, `handler` |
//! | `kopf_handler_retries_total` | counter | `kind`, `handler` |
//! | `kopf_queue_depth` | gauge | `resource` (events waiting in per-object queues) |
//! | `kopf_watch_restarts_total` | counter | `resource` |
//! | `kopf_api_requests_total` | counter | `verb` (`get`, `patch`, `create`), `code` (the HTTP status of the answer, `0` for no response; a request retried after a re-login counts once per attempt) |
//! | `kopf_objects_watched` | gauge | `resource` |
//! | `kopf_replica_active` | gauge | none: 1 while this replica processes objects (no pause toggle on) |
//! | `kopf_replica_paused` | gauge | `reason` (`peering`: a peer of higher priority or a freeze; `lease`: another replica holds the Lease) |
//! | `kopf_lease_holder` | gauge | none: 1 while this replica holds the `--lease` Lease |
//! | `kopf_events_dropped_total` | counter | (none): Events not posted because the event queue was full |
//! | `kopf_plugin_pool_threads` | gauge | `plugin`, `state` (`busy`: running a call, abandoned ones included; `queued`: calls waiting for a thread; `max`) |
//! | `kopf_plugin_pool_saturations` | gauge | `plugin` (how often every thread of the pool was busy with calls waiting) |

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerOutcomeLabels {
    kind: String,
    handler: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    kind: String,
    handler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PauseLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    plugin: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    code: String,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

struct Families {
    registry: Registry,
    invocations: Family<HandlerOutcomeLabels, Counter>,
    durations: Family<HandlerLabels, Histogram, fn() -> Histogram>,
    retries: Family<HandlerLabels, Counter>,
    queue_depth: Family<ResourceLabels, Gauge>,
    watch_restarts: Family<ResourceLabels, Counter>,
    api_requests: Family<RequestLabels, Counter>,
    objects_watched: Family<ResourceLabels, Gauge>,
    replica_active: Gauge,
    replica_paused: Family<PauseLabels, Gauge>,
    lease_holder: Gauge,
    events_dropped: Counter,
    pool_threads: Family<PoolLabels, Gauge>,
    pool_saturations: Family<PluginLabels, Gauge>,
}

impl Families {
    fn new() -> Self {
        let mut registry = Registry::default();
        let invocations = Family::<HandlerOutcomeLabels, Counter>::default();
        let durations = Family::<HandlerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram as _,
        );
        let retries = Family::<HandlerLabels, Counter>::default();
        let queue_depth = Family::<ResourceLabels, Gauge>::default();
        let watch_restarts = Family::<ResourceLabels, Counter>::default();
        let api_requests = Family::<RequestLabels, Counter>::default();
        let objects_watched = Family::<ResourceLabels, Gauge>::default();
        let replica_active = Gauge::default();
        let replica_paused = Family::<PauseLabels, Gauge>::default();
        let lease_holder = Gauge::default();
        let events_dropped = Counter::default();
        let pool_threads = Family::<PoolLabels, Gauge>::default();
        let pool_saturations = Family::<PluginLabels, Gauge>::default();
        registry.register(
            "kopf_plugin_pool_threads",
            "Threads of a plugin's pool for sync handlers: busy (abandoned calls included), queued calls, the maximum",
            pool_threads.clone(),
        );
        registry.register(
            "kopf_plugin_pool_saturations",
            "How often every thread of a plugin's pool was busy with calls waiting",
            pool_saturations.clone(),
        );
        registry.register(
            "kopf_handler_invocations",
            "Handler invocations by handler kind, id and outcome",
            invocations.clone(),
        );
        registry.register(
            "kopf_handler_duration_seconds",
            "Duration of handler invocations",
            durations.clone(),
        );
        registry.register(
            "kopf_handler_retries",
            "Handler attempts that will be retried",
            retries.clone(),
        );
        registry.register(
            "kopf_queue_depth",
            "Watch events waiting in per-object queues",
            queue_depth.clone(),
        );
        registry.register(
            "kopf_watch_restarts",
            "Watch streams restarted after an error, expiry or inactivity",
            watch_restarts.clone(),
        );
        registry.register(
            "kopf_api_requests",
            "Kubernetes API requests by verb and HTTP status code (0: no response)",
            api_requests.clone(),
        );
        registry.register(
            "kopf_objects_watched",
            "Objects currently known from the watch streams",
            objects_watched.clone(),
        );
        registry.register(
            "kopf_replica_active",
            "1 while this replica processes objects (not paused)",
            replica_active.clone(),
        );
        registry.register(
            "kopf_replica_paused",
            "1 while this replica is paused for the reason (peering, lease)",
            replica_paused.clone(),
        );
        registry.register(
            "kopf_lease_holder",
            "1 while this replica holds the Lease of --lease",
            lease_holder.clone(),
        );
        registry.register(
            "kopf_events_dropped",
            "Events not posted because the event queue was full",
            events_dropped.clone(),
        );
        Self {
            registry,
            invocations,
            durations,
            retries,
            queue_depth,
            watch_restarts,
            api_requests,
            objects_watched,
            replica_active,
            replica_paused,
            lease_holder,
            events_dropped,
            pool_threads,
            pool_saturations,
        }
    }
}

/// The metrics of one operator; clones share them. A `default()` handle is a registry of
/// its own, which nobody serves unless it is handed to the operator's parts.
#[derive(Clone)]
pub struct Metrics {
    families: Arc<Families>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            families: Arc::new(Families::new()),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Records one handler invocation: its kind (`create`, `startup`, ...), id, outcome
    /// (`success`, `temporary`, `permanent`, `arbitrary`, `ignored`, `failure`...) and duration.
    pub fn handler_invoked(&self, kind: &str, handler: &str, outcome: &str, seconds: f64) {
        self.families
            .invocations
            .get_or_create(&HandlerOutcomeLabels {
                kind: kind.to_owned(),
                handler: handler.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.families
            .durations
            .get_or_create(&HandlerLabels {
                kind: kind.to_owned(),
                handler: handler.to_owned(),
            })
            .observe(seconds.max(0.0));
    }

    /// Records that a handler will be retried.
    pub fn handler_retried(&self, kind: &str, handler: &str) {
        self.families
            .retries
            .get_or_create(&HandlerLabels {
                kind: kind.to_owned(),
                handler: handler.to_owned(),
            })
            .inc();
    }

    /// Changes the number of events waiting in a resource's per-object queues by `delta`.
    pub fn queue_depth(&self, resource: &str, delta: i64) {
        self.families
            .queue_depth
            .get_or_create(&ResourceLabels {
                resource: resource.to_owned(),
            })
            .inc_by(delta);
    }

    /// Records a restart of a resource's watch stream.
    pub fn watch_restarted(&self, resource: &str) {
        self.families
            .watch_restarts
            .get_or_create(&ResourceLabels {
                resource: resource.to_owned(),
            })
            .inc();
    }

    /// Records one API request: its verb (`list`, `watch`, `patch`, `create`, ...) and the
    /// HTTP status code (`0` when no response arrived).
    pub fn api_request(&self, verb: &str, code: u16) {
        self.families
            .api_requests
            .get_or_create(&RequestLabels {
                verb: verb.to_owned(),
                code: code.to_string(),
            })
            .inc();
    }

    /// Changes the number of objects known for a resource by `delta`.
    pub fn objects_watched(&self, resource: &str, delta: i64) {
        self.families
            .objects_watched
            .get_or_create(&ResourceLabels {
                resource: resource.to_owned(),
            })
            .inc_by(delta);
    }

    /// Sets the number of objects known for a resource (after a full listing).
    pub fn set_objects_watched(&self, resource: &str, count: i64) {
        self.families
            .objects_watched
            .get_or_create(&ResourceLabels {
                resource: resource.to_owned(),
            })
            .set(count);
    }

    /// Sets whether the replica is paused for `reason` (a pause toggle: `peering`, `lease`);
    /// a reason once seen stays listed, at 0, while it is off.
    pub fn replica_paused(&self, reason: &str, paused: bool) {
        self.families
            .replica_paused
            .get_or_create(&PauseLabels {
                reason: reason.to_owned(),
            })
            .set(i64::from(paused));
    }

    /// Sets whether the replica processes objects (no pause toggle is on).
    pub fn replica_active(&self, active: bool) {
        self.families.replica_active.set(i64::from(active));
    }

    /// Sets whether this replica holds the Lease of `--lease`.
    pub fn lease_holder(&self, held: bool) {
        self.families.lease_holder.set(i64::from(held));
    }

    /// Counts an Event dropped because the event queue was full.
    pub fn event_dropped(&self) {
        self.families.events_dropped.inc();
    }

    /// Sets the state of a plugin's pool for sync handlers, from its `pool` answer.
    pub fn plugin_pool(&self, plugin: &str, stats: &serde_json::Value) {
        let count = |field: &str| stats.get(field).and_then(serde_json::Value::as_i64).unwrap_or(0);
        for (state, field) in [("busy", "busy"), ("queued", "queued"), ("max", "max_threads")] {
            self.families
                .pool_threads
                .get_or_create(&PoolLabels {
                    plugin: plugin.to_owned(),
                    state: state.to_owned(),
                })
                .set(count(field));
        }
        self.families
            .pool_saturations
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
            })
            .set(count("saturations"));
    }

    /// The OpenMetrics text of all metrics (see [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.families.registry) {
            tracing::warn!(target: "kopf.metrics", "Cannot encode the metrics: {error}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_follow_the_naming_conventions() {
        let metrics = Metrics::default();
        metrics.handler_invoked("create", "unit_test_fn", "success", 0.25);
        metrics.handler_retried("create", "unit_test_fn");
        metrics.api_request("patch", 200);
        metrics.watch_restarted("unittests.v1.example.dev");
        metrics.objects_watched("unittests.v1.example.dev", 2);
        metrics.objects_watched("unittests.v1.example.dev", -1);
        metrics.queue_depth("unittests.v1.example.dev", 3);
        metrics.replica_paused("unittest", true);
        metrics.replica_active(false);
        metrics.lease_holder(true);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"kopf_handler_invocations_total{kind="create",handler="unit_test_fn",outcome="success"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"kopf_handler_duration_seconds_count{kind="create",handler="unit_test_fn"} 1"#)
        );
        assert!(text.contains(r#"kopf_handler_retries_total{kind="create",handler="unit_test_fn"} 1"#));
        assert!(text.contains(r#"kopf_api_requests_total{verb="patch",code="200"}"#));
        assert!(text.contains(r#"kopf_watch_restarts_total{resource="unittests.v1.example.dev"} 1"#));
        assert!(text.contains(r#"kopf_objects_watched{resource="unittests.v1.example.dev"} 1"#));
        assert!(text.contains(r#"kopf_queue_depth{resource="unittests.v1.example.dev"} 3"#));
        assert!(text.contains(r#"kopf_replica_paused{reason="unittest"} 1"#));
        assert!(text.contains("kopf_replica_active 0"));
        assert!(text.contains("kopf_lease_holder 1"));
        assert!(text.contains("# TYPE kopf_handler_duration_seconds histogram"));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn each_handle_counts_apart_and_clones_share() {
        let (one, two) = (Metrics::default(), Metrics::default());
        one.clone().handler_invoked("create", "fn_of_one", "success", 0.1);
        two.replica_active(false);
        one.replica_active(true);
        let (one, two) = (one.render(), two.render());
        assert!(one.contains(r#"handler="fn_of_one""#), "{one}");
        assert!(!two.contains("fn_of_one"), "{two}");
        assert!(one.contains("kopf_replica_active 1"), "{one}");
        assert!(two.contains("kopf_replica_active 0"), "{two}");
    }

    #[test]
    fn plugin_pools_are_gauges_by_plugin_and_state() {
        let metrics = Metrics::default();
        metrics.plugin_pool(
            "unit-test-plugin",
            &serde_json::json!({"threads": 3, "busy": 2, "queued": 5, "max_threads": 512, "saturations": 1}),
        );
        let text = metrics.render();
        for line in [
            r#"kopf_plugin_pool_threads{plugin="unit-test-plugin",state="busy"} 2"#,
            r#"kopf_plugin_pool_threads{plugin="unit-test-plugin",state="queued"} 5"#,
            r#"kopf_plugin_pool_threads{plugin="unit-test-plugin",state="max"} 512"#,
            r#"kopf_plugin_pool_saturations{plugin="unit-test-plugin"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
