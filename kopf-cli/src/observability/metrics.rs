//! Prometheus metrics of the operator, served at `/metrics` on the liveness endpoint.
//!
//! Kopf has no metrics; these are an addition. One process-wide registry; the reactor,
//! the clients and the activities update it through the small functions below (each a
//! cheap atomic update after the first use of a label set), and
//! [`render`] produces the OpenMetrics text exposition.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kopf_handler_invocations_total` | counter | `kind`, `handler`, `outcome` (`success`, `temporary`, `permanent`, `arbitrary`, `admission`, `timeout`: the call was abandoned, `failure`: the plugin could not run it) |
//! | `kopf_handler_duration_seconds` | histogram | `kind`, `handler` |
//! | `kopf_handler_retries_total` | counter | `kind`, `handler` |
//! | `kopf_queue_depth` | gauge | `resource` (events waiting in per-object queues) |
//! | `kopf_watch_restarts_total` | counter | `resource` |
//! | `kopf_api_requests_total` | counter | `verb`, `code` (`0` for no response) |
//! | `kopf_objects_watched` | gauge | `resource` |
//! | `kopf_replica_active` | gauge | none: 1 while this replica processes objects (no pause toggle on) |
//! | `kopf_replica_paused` | gauge | `reason` (`peering`: a peer of higher priority or a freeze; `lease`: another replica holds the Lease) |
//! | `kopf_lease_holder` | gauge | none: 1 while this replica holds the `--lease` Lease |
//! | `kopf_events_dropped_total` | counter | (none): Events not posted because the event queue was full |
//! | `kopf_plugin_pool_threads` | gauge | `plugin`, `state` (`busy`: running a call, abandoned ones included; `queued`: calls waiting for a thread; `max`) |
//! | `kopf_plugin_pool_saturations` | gauge | `plugin` (how often every thread of the pool was busy with calls waiting) |

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`render`]'s output.
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

struct Metrics {
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

impl Metrics {
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

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Records one handler invocation: its kind (`create`, `startup`, ...), id, outcome
/// (`success`, `temporary`, `permanent`, `arbitrary`, `ignored`, `failure`...) and duration.
pub fn handler_invoked(kind: &str, handler: &str, outcome: &str, seconds: f64) {
    METRICS
        .invocations
        .get_or_create(&HandlerOutcomeLabels {
            kind: kind.to_owned(),
            handler: handler.to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
    METRICS
        .durations
        .get_or_create(&HandlerLabels {
            kind: kind.to_owned(),
            handler: handler.to_owned(),
        })
        .observe(seconds.max(0.0));
}

/// Records that a handler will be retried.
pub fn handler_retried(kind: &str, handler: &str) {
    METRICS
        .retries
        .get_or_create(&HandlerLabels {
            kind: kind.to_owned(),
            handler: handler.to_owned(),
        })
        .inc();
}

/// Changes the number of events waiting in a resource's per-object queues by `delta`.
pub fn queue_depth(resource: &str, delta: i64) {
    METRICS
        .queue_depth
        .get_or_create(&ResourceLabels {
            resource: resource.to_owned(),
        })
        .inc_by(delta);
}

/// Records a restart of a resource's watch stream.
pub fn watch_restarted(resource: &str) {
    METRICS
        .watch_restarts
        .get_or_create(&ResourceLabels {
            resource: resource.to_owned(),
        })
        .inc();
}

/// Records one API request: its verb (`list`, `watch`, `patch`, `create`, ...) and the
/// HTTP status code (`0` when no response arrived).
pub fn api_request(verb: &str, code: u16) {
    METRICS
        .api_requests
        .get_or_create(&RequestLabels {
            verb: verb.to_owned(),
            code: code.to_string(),
        })
        .inc();
}

/// Changes the number of objects known for a resource by `delta`.
pub fn objects_watched(resource: &str, delta: i64) {
    METRICS
        .objects_watched
        .get_or_create(&ResourceLabels {
            resource: resource.to_owned(),
        })
        .inc_by(delta);
}

/// Sets the number of objects known for a resource (after a full listing).
pub fn set_objects_watched(resource: &str, count: i64) {
    METRICS
        .objects_watched
        .get_or_create(&ResourceLabels {
            resource: resource.to_owned(),
        })
        .set(count);
}

/// Sets whether the replica is paused for `reason` (a pause toggle: `peering`, `lease`);
/// a reason once seen stays listed, at 0, while it is off.
pub fn replica_paused(reason: &str, paused: bool) {
    METRICS
        .replica_paused
        .get_or_create(&PauseLabels {
            reason: reason.to_owned(),
        })
        .set(i64::from(paused));
}

/// Sets whether the replica processes objects (no pause toggle is on).
pub fn replica_active(active: bool) {
    METRICS.replica_active.set(i64::from(active));
}

/// Sets whether this replica holds the Lease of `--lease`.
pub fn lease_holder(held: bool) {
    METRICS.lease_holder.set(i64::from(held));
}

/// Counts an Event dropped because the event queue was full.
pub fn event_dropped() {
    METRICS.events_dropped.inc();
}

/// Sets the state of a plugin's pool for sync handlers, from its `pool` answer.
pub fn plugin_pool(plugin: &str, stats: &serde_json::Value) {
    let count = |field: &str| stats.get(field).and_then(serde_json::Value::as_i64).unwrap_or(0);
    for (state, field) in [("busy", "busy"), ("queued", "queued"), ("max", "max_threads")] {
        METRICS
            .pool_threads
            .get_or_create(&PoolLabels {
                plugin: plugin.to_owned(),
                state: state.to_owned(),
            })
            .set(count(field));
    }
    METRICS
        .pool_saturations
        .get_or_create(&PluginLabels {
            plugin: plugin.to_owned(),
        })
        .set(count("saturations"));
}

/// The OpenMetrics text of all metrics (see [`CONTENT_TYPE`]).
pub fn render() -> String {
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &METRICS.registry) {
        tracing::warn!(target: "kopf.metrics", "Cannot encode the metrics: {error}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_follow_the_naming_conventions() {
        handler_invoked("create", "unit_test_fn", "success", 0.25);
        handler_retried("create", "unit_test_fn");
        api_request("patch", 200);
        watch_restarted("unittests.v1.example.dev");
        objects_watched("unittests.v1.example.dev", 2);
        objects_watched("unittests.v1.example.dev", -1);
        queue_depth("unittests.v1.example.dev", 3);
        replica_paused("unittest", true);
        replica_active(false);
        lease_holder(true);
        let text = render();
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
    fn plugin_pools_are_gauges_by_plugin_and_state() {
        plugin_pool(
            "unit-test-plugin",
            &serde_json::json!({"threads": 3, "busy": 2, "queued": 5, "max_threads": 512, "saturations": 1}),
        );
        let text = render();
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
