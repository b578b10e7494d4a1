//! The plugin host, in process: real cdylibs loaded through the real ABI.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kopf_abi::protocol::{HandlerErrorKind, HandlerKind, Invocation};
use kopf_abi::{Failure, FailureKind};
use kopf_cli::observability::logging::{KopfFormat, LogConfig, LogFormat};
use kopf_cli::observability::objects::ObjectsLayer;
use kopf_cli::plugin::{CallerInfo, HandlerRef, HostServices, PluginError, PluginSet};
use kopf_e2e::{isolated_copy, plugin_path};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt as _;

/// Loads a private copy of a fixture (a separate image, so parallel tests do not share
/// the plugin's globals).
fn load(packages: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>, PluginSet) {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = packages
        .iter()
        .enumerate()
        .map(|(i, p)| isolated_copy(&plugin_path(p).unwrap(), dir.path(), &format!("{i}")).unwrap())
        .collect();
    let set = PluginSet::load(&paths).unwrap_or_else(|e| panic!("loading {packages:?}: {e}"));
    (dir, paths, set)
}

fn handler(set: &PluginSet, id: &str) -> HandlerRef {
    set.handlers()
        .iter()
        .find(|h| h.id() == id)
        .unwrap_or_else(|| panic!("no handler {id}"))
        .clone()
}

fn body_of(size: usize) -> Value {
    json!({
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfExample",
        "metadata": {"namespace": "ns1", "name": "kex1", "uid": "u-1"},
        "spec": {"field": "value", "items": ["a", "b"], "pad": "x".repeat(size)},
    })
}

fn invocation(body: Value) -> Invocation {
    Invocation {
        body: Some(body),
        reason: Some("create".into()),
        ..Invocation::default()
    }
}

#[test]
fn describe_lists_handlers_with_their_plugin() {
    let (_dir, paths, set) = load(&["fixture-raw-plugin"]);
    assert_eq!(set.plugins().len(), 1);
    let plugin = &set.plugins()[0];
    assert_eq!(plugin.path(), paths[0].as_path());
    assert_eq!(plugin.name(), "fixture-raw-plugin");
    assert_eq!(plugin.description().abi_revision, kopf_abi::ABI_REVISION);
    let ids: Vec<&str> = set.handlers().iter().map(HandlerRef::id).collect();
    assert_eq!(
        ids,
        ["create_fn", "panic_fn", "call_host", "daemon_fn", "startup_fn"]
    );
    let create = handler(&set, "create_fn");
    assert_eq!(create.kind(), HandlerKind::Create);
    assert_eq!(
        kopf_cli::plugin::render_selector(create.spec().selector.as_ref()),
        "kopfexamples.v1.kopf.dev"
    );
    assert!(std::ptr::eq(create.plugin().as_ref(), plugin.as_ref()));
}

#[test]
fn invoke_round_trip_echoes_the_spec() {
    let (_dir, _paths, set) = load(&["fixture-raw-plugin"]);
    let body = body_of(2000);
    let outcome = set
        .invoke_blocking(&handler(&set, "create_fn"), &invocation(body.clone()))
        .unwrap();
    assert_eq!(outcome.result, Some(body["spec"].clone()));
    assert!(outcome.error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_invoke_runs_on_the_blocking_pool() {
    let (_dir, _paths, set) = load(&["fixture-raw-plugin"]);
    let h = handler(&set, "create_fn");
    let calls = (0..8).map(|i| {
        let set = set.clone();
        let h = h.clone();
        async move { set.invoke(&h, &invocation(json!({"spec": {"n": i}}))).await }
    });
    let outcomes = futures_join(calls).await;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        assert_eq!(outcome.unwrap().result, Some(json!({"n": i})));
    }
}

/// Awaits futures concurrently, keeping their order (no extra dependency needed).
async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn handler_panic_becomes_an_error_outcome_and_the_host_survives() {
    let (_dir, _paths, set) = load(&["fixture-raw-plugin"]);
    let outcome = set
        .invoke_blocking(&handler(&set, "panic_fn"), &invocation(body_of(10)))
        .unwrap();
    let error = outcome.error.expect("a panicking handler must report an error");
    assert!(error.panicked);
    assert_eq!(error.kind, HandlerErrorKind::Arbitrary);
    assert!(error.message.contains("boom from panic_fn"), "{}", error.message);
    // The plugin and the host keep working.
    let again = set
        .invoke_blocking(&handler(&set, "create_fn"), &invocation(body_of(10)))
        .unwrap();
    assert!(again.result.is_some());
}

#[test]
fn plugin_level_panic_is_a_panic_failure() {
    let (_dir, _paths, set) = load(&["fixture-raw-plugin"]);
    let plugin = &set.plugins()[0];
    let failure = plugin.control("panic", "{}").unwrap_err();
    assert_eq!(failure.kind, FailureKind::PANIC);
    assert!(failure.message.contains("control panicked on purpose"));
    assert_eq!(plugin.control("echo", "{\"x\":1}").unwrap(), "{\"x\":1}");
    assert_eq!(
        plugin.control("nope", "{}").unwrap_err().kind,
        FailureKind::UNSUPPORTED
    );
}

#[test]
fn host_calls_are_unsupported_until_services_are_installed() {
    let (_dir, paths, set) = load(&["fixture-raw-plugin"]);
    let h = handler(&set, "call_host");
    let outcome = set.invoke_blocking(&h, &invocation(json!({"k": "v"}))).unwrap();
    let result = outcome.result.unwrap();
    assert_eq!(result["kind"], u64::from(FailureKind::UNSUPPORTED.0));
    assert!(result["failure"].as_str().unwrap().contains("test.echo"));

    struct Echo(Mutex<Vec<CallerInfo>>);
    impl HostServices for Echo {
        fn call(
            &self,
            caller: &CallerInfo,
            method: &str,
            version: u32,
            payload: &str,
        ) -> Result<String, Failure> {
            self.0.lock().unwrap().push(caller.clone());
            match method {
                "test.echo" => Ok(format!("{method}/{version}:{payload}")),
                _ => Err(Failure::new(FailureKind::UNSUPPORTED, method)),
            }
        }
    }
    let echo = Arc::new(Echo(Mutex::new(Vec::new())));
    set.set_services(echo.clone());
    let outcome = set.invoke_blocking(&h, &invocation(json!({"k": "v"}))).unwrap();
    assert_eq!(outcome.result.unwrap()["answer"], "test.echo/1:{\"k\":\"v\"}");
    let callers = echo.0.lock().unwrap();
    assert_eq!(callers.len(), 1);
    assert_eq!(callers[0].name, "fixture-raw-plugin");
    assert_eq!(callers[0].path, paths[0].display().to_string());
}

#[test]
fn a_panicking_host_service_becomes_a_panic_failure() {
    let (_dir, _paths, set) = load(&["fixture-raw-plugin"]);
    struct Bomb;
    impl HostServices for Bomb {
        fn call(&self, _: &CallerInfo, _: &str, _: u32, _: &str) -> Result<String, Failure> {
            panic!("service exploded")
        }
    }
    set.set_services(Arc::new(Bomb));
    let outcome = set
        .invoke_blocking(&handler(&set, "call_host"), &invocation(json!({})))
        .unwrap();
    let result = outcome.result.unwrap();
    assert_eq!(result["kind"], u64::from(FailureKind::PANIC.0));
    assert!(result["failure"].as_str().unwrap().contains("service exploded"));
}

/// A `MakeWriter` collecting everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn capture_logs(config: LogConfig, f: impl FnOnce()) -> String {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(out.clone())
        .event_format(KopfFormat::new(&config))
        .finish()
        .with(ObjectsLayer::default());
    tracing::subscriber::with_default(subscriber, f);
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn plugin_logs_reach_the_host_log_with_the_object_prefix() {
    let (_dir, _paths, set) = load(&["fixture-raw-plugin"]);
    let h = handler(&set, "create_fn");
    let run = || {
        set.invoke_blocking(&h, &invocation(body_of(1))).unwrap();
    };

    let full = capture_logs(LogConfig::default(), run);
    let line = full
        .lines()
        .find(|l| l.contains("create_fn is handling"))
        .unwrap_or_else(|| panic!("{full}"));
    assert!(
        line.contains("raw_plugin") && line.contains("[INFO    ] [ns1/kex1] create_fn is handling retry=0"),
        "{line}"
    );

    let plain = capture_logs(
        LogConfig {
            format: LogFormat::Plain,
            prefix: Some(false),
            ..LogConfig::default()
        },
        run,
    );
    assert!(
        plain.lines().any(|l| l == "create_fn is handling retry=0"),
        "{plain}"
    );

    let json_logs = capture_logs(
        LogConfig {
            format: LogFormat::Json,
            refkey: "k8s".into(),
            ..LogConfig::default()
        },
        run,
    );
    let doc: Value = json_logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|d| d["message"] == "create_fn is handling retry=0")
        .unwrap_or_else(|| panic!("{json_logs}"));
    // Kopf's JSON fields: the reference under the refkey with Kopf's keys (outside the
    // engine's object span only `namespace/name` is known: the rest is null), Python's
    // timestamp.
    assert_eq!(
        doc["k8s"],
        json!({"apiVersion": null, "kind": null, "namespace": "ns1", "name": "kex1", "uid": null})
    );
    assert_eq!(doc["severity"], "info");
    let timestamp = doc["timestamp"].as_str().unwrap_or_default();
    assert!(
        timestamp.len() == 32 && timestamp.ends_with("+00:00") && timestamp.as_bytes()[19] == b'.',
        "{timestamp}"
    );
    assert_eq!(doc["target"], "raw_plugin");
    assert_eq!(doc["plugin"], "fixture-raw-plugin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_calls_complete_through_the_host_table() {
    let (_dir, _paths, set) = load(&["fixture-raw-plugin"]);
    let never = CancellationToken::new();
    let outcome = set
        .invoke_submitted(&handler(&set, "create_fn"), &invocation(body_of(5)), &never)
        .await
        .unwrap();
    assert_eq!(outcome.result.unwrap()["field"], "value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_daemon_is_cancelled() {
    let (_dir, _paths, set) = load(&["fixture-raw-plugin"]);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = set
        .invoke_submitted(&handler(&set, "daemon_fn"), &invocation(json!({})), &cancel)
        .await
        .unwrap_err();
    assert_eq!(
        err.failure().map(|f| f.kind),
        Some(FailureKind::CANCELLED),
        "{err}"
    );

    // Cancelling while it runs, from another task.
    let cancel = CancellationToken::new();
    let h = handler(&set, "daemon_fn");
    let task = {
        let (set, cancel) = (set.clone(), cancel.clone());
        tokio::spawn(async move { set.invoke_submitted(&h, &invocation(json!({})), &cancel).await })
    };
    cancel.cancel();
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, PluginError::Call { failure, .. } if failure.kind == FailureKind::CANCELLED),
        "{err}"
    );
}

#[test]
fn duplicate_handler_ids_across_plugins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lib = plugin_path("fixture-raw-plugin").unwrap();
    let a = isolated_copy(&lib, dir.path(), "a").unwrap();
    let b = isolated_copy(&lib, dir.path(), "b").unwrap();
    let err = PluginSet::load(&[&a, &b]).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PluginError::DuplicateHandler { .. }), "{text}");
    assert!(
        text.contains("\"create_fn\"") && text.contains("kopfexamples.v1.kopf.dev"),
        "{text}"
    );
    assert!(
        text.contains(&a.display().to_string()) && text.contains(&b.display().to_string()),
        "{text}"
    );
}

#[test]
fn broken_plugins_fail_to_load_with_typed_errors() {
    let missing = PluginSet::load(&["/nonexistent.so"]).unwrap_err();
    assert!(matches!(missing, PluginError::NotFound { .. }));
    let rev = PluginSet::load(&[plugin_path("fixture-broken-revision").unwrap()]).unwrap_err();
    assert!(
        matches!(
            rev,
            PluginError::RevisionMismatch {
                found: 999,
                expected: 1,
                ..
            }
        ),
        "{rev}"
    );
    let layout = PluginSet::load(&[plugin_path("fixture-broken-layout").unwrap()]).unwrap_err();
    assert!(matches!(layout, PluginError::Layout { .. }), "{layout}");
    assert!(!layout.to_string().contains('\n'));
    assert!(layout.detail().unwrap().lines().count() > 20);
}

// ---- SDK-built plugins ----

#[test]
fn sdk_plugin_invoke_echoes_the_spec() {
    let (_dir, _paths, set) = load(&["fixture-sdk-plugin-a"]);
    let body = body_of(2000);
    let outcome = set
        .invoke_blocking(&handler(&set, "create_fn"), &invocation(body.clone()))
        .unwrap();
    assert!(outcome.error.is_none(), "{outcome:?}");
    assert_eq!(outcome.result, Some(json!({"echo": body["spec"]})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_async_handler_via_invoke_and_submit() {
    let (_dir, _paths, set) = load(&["fixture-sdk-plugin-a"]);
    let h = handler(&set, "async_fn");
    assert!(h.spec().is_async);
    let outcome = set.invoke(&h, &invocation(body_of(10))).await.unwrap();
    assert_eq!(outcome.result, Some(json!({"slept": true})));
    let never = CancellationToken::new();
    let outcome = set
        .invoke_submitted(&h, &invocation(body_of(10)), &never)
        .await
        .unwrap();
    assert_eq!(outcome.result, Some(json!({"slept": true})));
}

#[test]
fn sdk_handler_panic_is_reported_as_panicked() {
    let (_dir, _paths, set) = load(&["fixture-sdk-plugin-a"]);
    let outcome = set
        .invoke_blocking(&handler(&set, "panic_fn"), &invocation(body_of(10)))
        .unwrap();
    let error = outcome.error.expect("error outcome");
    assert!(error.panicked, "{error:?}");
    assert!(error.message.contains("boom"), "{error:?}");
    // Still alive.
    assert!(
        set.invoke_blocking(&handler(&set, "create_fn"), &invocation(body_of(1)))
            .unwrap()
            .result
            .is_some()
    );
}

#[test]
fn sdk_plugin_logs_reach_the_host_log() {
    let (_dir, _paths, set) = load(&["fixture-sdk-plugin-a"]);
    let h = handler(&set, "log_fn");
    let logs = capture_logs(LogConfig::default(), || {
        set.invoke_blocking(&h, &invocation(body_of(1))).unwrap();
    });
    assert!(
        logs.lines()
            .any(|l| l.contains("[INFO    ] [ns1/kex1] hello from log_fn")),
        "{logs}"
    );
}

#[test]
fn two_sdk_plugins_at_once_give_distinct_results() {
    let (_dir, _paths, set) = load(&["fixture-sdk-plugin-a", "fixture-sdk-plugin-b"]);
    assert_eq!(set.plugins().len(), 2);
    assert_eq!(set.plugins()[0].name(), "fixture-sdk-plugin-a");
    assert_eq!(set.plugins()[1].name(), "fixture-sdk-plugin-b");
    let body = body_of(10);
    let a = set
        .invoke_blocking(&handler(&set, "create_fn"), &invocation(body.clone()))
        .unwrap();
    let b = set
        .invoke_blocking(&handler(&set, "b_create"), &invocation(body.clone()))
        .unwrap();
    assert_eq!(a.result, Some(json!({"echo": body["spec"]})));
    assert_eq!(b.result, Some(json!({"from": "b"})));
    assert!(Arc::ptr_eq(handler(&set, "b_create").plugin(), &set.plugins()[1]));
}

#[test]
fn sdk_duplicate_plugin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = isolated_copy(&plugin_path("fixture-sdk-plugin-a").unwrap(), dir.path(), "a").unwrap();
    let dup = isolated_copy(&plugin_path("fixture-sdk-plugin-dup").unwrap(), dir.path(), "dup").unwrap();
    let err = PluginSet::load(&[&a, &dup]).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PluginError::DuplicateHandler { .. }), "{text}");
    assert!(text.contains("\"create_fn\""), "{text}");
    assert!(
        text.contains(&a.display().to_string()) && text.contains(&dup.display().to_string()),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_in_place_works_inside_and_outside_a_runtime() {
    let (_dir, _paths, set) = load(&["fixture-raw-plugin"]);
    let h = handler(&set, "create_fn");
    let inside = set
        .invoke_in_place(&h, &invocation(json!({"spec": {"in": true}})))
        .unwrap();
    assert_eq!(inside.result, Some(json!({"in": true})));
    let outside =
        std::thread::spawn(move || set.invoke_in_place(&h, &invocation(json!({"spec": {"in": false}}))))
            .join()
            .unwrap()
            .unwrap();
    assert_eq!(outside.result, Some(json!({"in": false})));
}
