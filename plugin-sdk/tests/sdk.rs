//! The SDK end to end, in-process: handlers declared with the attribute macros, collected
//! into the global registry, described, and called through the exported `PluginModule`
//! with a recording test host.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use abi_stable::std_types::{RResult, RStr, RString};
use kopf::{HandlerKind, Invocation, Outcome, Purpose};
use kopf_abi::protocol::{FilterValue, HandlerErrorKind, PluginDescription};
use kopf_abi::{Failure, FailureKind, HostTable, LogLevel};
use serde_json::{Value, json};

// --- Handlers -------------------------------------------------------------------------

#[kopf::on::create("kopfexamples")]
fn t_create(ctx: &kopf::Context) -> kopf::Result<Value> {
    ctx.patch().status()["seen"] = json!(true);
    Ok(json!({"echo": ctx.spec()}))
}

#[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
async fn t_async(ctx: &kopf::Context) -> kopf::Result<Value> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(json!({"slept": true, "name": ctx.name()}))
}

#[kopf::on::update("kopfexamples")]
fn t_panic(_ctx: &kopf::Context) -> kopf::Result<()> {
    panic!("boom in t_panic");
}

#[kopf::on::update("kopfexamples", id = "t_async_panic_id")]
async fn t_async_panic(_ctx: &kopf::Context) {
    panic!("async boom");
}

#[kopf::on::update("kopf.dev/v1", "kopfexamples", field = "spec.x", old = kopf::PRESENT, new = new_is_big)]
fn t_temporary() -> Result<(), kopf::TemporaryError> {
    Err(kopf::TemporaryError::new("not yet").delay(5))
}

fn new_is_big(value: Option<&Value>, _ctx: &kopf::Context) -> bool {
    value.and_then(Value::as_i64).is_some_and(|v| v > 10)
}

#[derive(Debug, thiserror::Error)]
#[error("custom failure")]
struct Custom;

#[kopf::on::delete("kopfexamples.kopf.dev", optional = true, errors = kopf::Errors::Ignored)]
fn t_arbitrary(_ctx: &kopf::Context) -> Result<u32, Custom> {
    Err(Custom)
}

#[kopf::on::resume("kopfexamples.v1.kopf.dev", deleted = true)]
fn t_log(ctx: &kopf::Context) {
    tracing::info!("hello from t_log");
    ctx.logger().warn("explicit warning");
    ctx.info("Reason", "an event");
}

#[kopf::on::field("v1", "pods", field = "spec.nodeName", value = kopf::PRESENT)]
fn t_field(ctx: &kopf::Context) -> Value {
    json!({"old": ctx.old(), "new": ctx.new()})
}

#[kopf::on::event(kopf::EVERYTHING, group = "kopf.dev")]
fn t_event() {}

#[kopf::timer(
    kind = "KopfExample",
    interval = 10,
    idle = 5.0,
    sharp = true,
    initial_delay = 1.5
)]
fn t_timer() {}

#[kopf::daemon(
    shortcut = "kex",
    cancellation_timeout = 3.0,
    cancellation_backoff = 1.0,
    cancellation_polling = 2.0
)]
async fn t_daemon(ctx: &kopf::Context) {
    // Without a host implementing daemon.wait this sleeps for the timeout.
    let stopped = ctx.stopped();
    while !stopped.wait_async(Some(Duration::from_millis(20))).await {}
}

#[kopf::on::daemon(category = "all", id = "t_sleeper")]
async fn t_long(_ctx: &kopf::Context) {
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[kopf::index("pods")]
fn t_index(ctx: &kopf::Context) -> Value {
    json!({ctx.namespace().unwrap_or_default(): ctx.name()})
}

#[kopf::on::startup(retries = 3, backoff = 1.0)]
fn t_startup() -> kopf::Result<()> {
    Ok(())
}

#[kopf::on::cleanup]
fn t_cleanup() {}

#[kopf::on::login(errors = kopf::Errors::Permanent)]
fn t_login() -> Option<Value> {
    None
}

#[kopf::on::probe(id = "t_probe_id", param = json!({"a": [1, 2]}))]
fn t_probe(ctx: &kopf::Context) -> Option<Value> {
    ctx.param().cloned()
}

#[kopf::on::validate("kopfexamples", operations = ["CREATE", "UPDATE"], persistent = true, side_effects = false)]
fn t_validate(ctx: &kopf::Context) -> kopf::Result<()> {
    ctx.add_warning("careful");
    if ctx.operation() == Some("CREATE") && ctx.dryrun() {
        return Err(kopf::AdmissionError::new("no dry runs").code(403).into());
    }
    Ok(())
}

#[kopf::on::mutate(
    plural = "kopfexamples",
    subresource = "*",
    ignore_failures = true,
    operation = "CREATE"
)]
fn t_mutate(ctx: &kopf::Context) {
    ctx.patch().set("metadata.labels.mutated", "yes");
}

fn tier_cb(value: Option<&str>, _ctx: &kopf::Context) -> bool {
    value == Some("backend")
}

fn enabled(ctx: &kopf::Context) -> bool {
    ctx.spec().get("enabled") != Some(&json!(false))
}

#[kopf::on::create(
    "kopfexamples",
    labels = {"app": "x", "env": kopf::PRESENT, "tier": tier_cb},
    annotations = {"skip": kopf::ABSENT, "owner": "me"},
    when = enabled,
    timeout = 60.0,
    retries = 3,
    backoff = 1.5,
    param = "p"
)]
fn t_filtered(ctx: &kopf::Context) -> kopf::Result<Option<Value>> {
    Ok(ctx.param().cloned())
}

// --- Test host ------------------------------------------------------------------------

static LOGS: Mutex<Vec<(u8, String, String, String)>> = Mutex::new(Vec::new());
static CALLS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
/// A completed call: its id and its JSON outcome or failure.
type Completion = (u64, Result<String, (FailureKind, String)>);

static COMPLETIONS: Mutex<Option<Sender<Completion>>> = Mutex::new(None);
static COMPLETED: Mutex<Option<Receiver<Completion>>> = Mutex::new(None);

extern "C" fn host_log(_: usize, level: LogLevel, target: RStr<'_>, object: RStr<'_>, message: RStr<'_>) {
    LOGS.lock().unwrap().push((
        level.0,
        target.to_string(),
        object.to_string(),
        message.to_string(),
    ));
}

extern "C" fn host_call(
    _: usize,
    method: RStr<'_>,
    _version: u32,
    payload: RStr<'_>,
) -> RResult<RString, Failure> {
    CALLS
        .lock()
        .unwrap()
        .push((method.to_string(), payload.to_string()));
    match method.as_str() {
        "event.post" => RResult::ROk(RString::from("{}")),
        _ => RResult::RErr(Failure::new(FailureKind::UNSUPPORTED, "not here")),
    }
}

extern "C" fn host_complete(_: usize, call_id: u64, outcome: RResult<RString, Failure>) {
    let outcome = match outcome {
        RResult::ROk(s) => Ok(s.to_string()),
        RResult::RErr(f) => Err((f.kind, f.message.to_string())),
    };
    if let Some(tx) = COMPLETIONS.lock().unwrap().as_ref() {
        let _ = tx.send((call_id, outcome));
    }
}

/// Initialises the plugin once with the recording host.
fn module() -> kopf_abi::PluginModule {
    static INIT: Once = Once::new();
    let m = kopf::plugin_module();
    INIT.call_once(|| {
        let (tx, rx) = channel();
        *COMPLETIONS.lock().unwrap() = Some(tx);
        *COMPLETED.lock().unwrap() = Some(rx);
        let host = HostTable {
            context: 0,
            log: host_log,
            call: host_call,
            complete: host_complete,
        };
        let answer = (m.init)(
            host,
            RStr::from(r#"{"host_version": "test", "max_log_level": 4}"#),
        );
        assert_eq!(answer.unwrap().as_str(), "{}");
    });
    m
}

fn body() -> Value {
    json!({
        "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": "kex1", "namespace": "ns1", "uid": "u1",
                     "labels": {"app": "x", "env": "prod", "tier": "backend"}},
        "spec": {"field": "value", "x": 20},
    })
}

fn invocation(extra: Value) -> String {
    let mut inv = json!({"body": body()});
    if let (Value::Object(m), Value::Object(e)) = (&mut inv, extra) {
        m.extend(e);
    }
    inv.to_string()
}

fn invoke(id: &str, payload: &str) -> Result<Outcome, Failure> {
    match (module().invoke)(RStr::from(id), RStr::from(payload)) {
        RResult::ROk(s) => Ok(serde_json::from_str(s.as_str()).unwrap()),
        RResult::RErr(f) => Err(f),
    }
}

fn wait_completion(call_id: u64) -> Result<String, (FailureKind, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let guard = COMPLETED.lock().unwrap();
    let rx = guard.as_ref().unwrap();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((id, outcome)) if id == call_id => return outcome,
            Ok(_) => continue, // another test's call
            Err(_) => panic!("call {call_id} did not complete within 10 s"),
        }
    }
}

fn description() -> PluginDescription {
    let json = (module().describe)().unwrap();
    serde_json::from_str(json.as_str()).unwrap()
}

fn spec_json(id: &str) -> Value {
    let d = description();
    let h = d
        .handlers
        .iter()
        .find(|h| h.id == id)
        .unwrap_or_else(|| panic!("no handler {id}"));
    serde_json::to_value(h).unwrap()
}

// --- Tests ----------------------------------------------------------------------------

#[test]
fn describe_lists_every_kind_in_source_order() {
    let d = description();
    assert_eq!(d.abi_revision, kopf_abi::ABI_REVISION);
    assert_eq!(d.sdk_version, kopf::SDK_VERSION);
    assert_eq!(d.plugin.name, "kopf");
    let ids: Vec<&str> = d.handlers.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(&ids[..3], &["t_create", "t_async", "t_panic"]);
    for kind in HandlerKind::ALL {
        assert!(
            d.handlers.iter().any(|h| h.kind == kind),
            "no {kind} handler described"
        );
    }
    // Round trip.
    let json = serde_json::to_string(&d).unwrap();
    let back: PluginDescription = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d);
}

#[test]
fn macro_options_become_the_handler_spec() {
    assert_eq!(
        spec_json("t_create"),
        json!({"id": "t_create", "kind": "create", "selector": {"any_name": "kopfexamples"}, "is_async": false})
    );
    assert_eq!(spec_json("t_async")["is_async"], true);
    assert_eq!(
        spec_json("t_async")["selector"],
        json!({"group": "kopf.dev", "version": "v1", "any_name": "kopfexamples"})
    );
    assert_eq!(spec_json("t_async_panic_id")["kind"], "update");
    assert_eq!(
        spec_json("t_temporary/spec.x"),
        json!({"id": "t_temporary/spec.x", "kind": "update", "is_async": false,
               "selector": {"group": "kopf.dev", "version": "v1", "any_name": "kopfexamples"},
               "filters": {"field": "spec.x", "old": "present", "new": "callback"}})
    );
    assert_eq!(
        spec_json("t_arbitrary")["selector"],
        json!({"group": "kopf.dev", "any_name": "kopfexamples"})
    );
    assert_eq!(
        spec_json("t_arbitrary")["options"],
        json!({"errors": "ignored", "optional": true})
    );
    assert_eq!(
        spec_json("t_log")["selector"],
        json!({"group": "kopf.dev", "version": "v1", "any_name": "kopfexamples"})
    );
    assert_eq!(spec_json("t_log")["options"], json!({"deleted": true}));
    assert_eq!(
        spec_json("t_field/spec.nodeName"),
        json!({"id": "t_field/spec.nodeName", "kind": "field", "is_async": false,
               "selector": {"group": "", "version": "v1", "any_name": "pods"},
               "filters": {"field": "spec.nodeName", "value": "present"}})
    );
    assert_eq!(
        spec_json("t_event")["selector"],
        json!({"group": "kopf.dev", "everything": true})
    );
    assert_eq!(
        spec_json("t_timer"),
        json!({"id": "t_timer", "kind": "timer", "is_async": false, "selector": {"kind": "KopfExample"},
               "options": {"interval": 10.0, "idle": 5.0, "sharp": true, "initial_delay": 1.5}})
    );
    assert_eq!(
        spec_json("t_daemon")["options"],
        json!({"cancellation_timeout": 3.0, "cancellation_backoff": 1.0, "cancellation_polling": 2.0})
    );
    assert_eq!(spec_json("t_daemon")["selector"], json!({"shortcut": "kex"}));
    assert_eq!(spec_json("t_sleeper")["selector"], json!({"category": "all"}));
    assert_eq!(spec_json("t_index")["kind"], "index");
    let startup = spec_json("t_startup");
    assert_eq!(startup["options"], json!({"retries": 3, "backoff": 1.0}));
    assert!(startup.get("selector").is_none());
    assert_eq!(spec_json("t_login")["options"], json!({"errors": "permanent"}));
    assert_eq!(
        spec_json("t_probe_id")["options"],
        json!({"param": {"a": [1, 2]}})
    );
    assert_eq!(
        spec_json("t_validate")["options"],
        json!({"operations": ["CREATE", "UPDATE"], "persistent": true, "side_effects": false})
    );
    assert_eq!(
        spec_json("t_mutate")["options"],
        json!({"operations": ["CREATE"], "subresource": "*", "ignore_failures": true})
    );
    assert_eq!(
        spec_json("t_filtered"),
        json!({"id": "t_filtered", "kind": "create", "is_async": false,
               "selector": {"any_name": "kopfexamples"},
               "filters": {"labels": {"app": {"equals": "x"}, "env": "present", "tier": "callback"},
                           "annotations": {"skip": "absent", "owner": {"equals": "me"}},
                           "when": true},
               "options": {"timeout": 60.0, "retries": 3, "backoff": 1.5, "param": "p"}})
    );
    let d = description();
    let filtered = d.handlers.iter().find(|h| h.id == "t_filtered").unwrap();
    assert_eq!(filtered.filters.labels["tier"], FilterValue::Callback);
    assert!(filtered.filters.has_callbacks());
}

#[test]
fn sync_handler_result_and_patch() {
    let o = invoke("t_create", &invocation(json!({}))).unwrap();
    assert_eq!(o.result, Some(json!({"echo": {"field": "value", "x": 20}})));
    assert_eq!(o.patch, Some(json!({"status": {"seen": true}})));
    assert!(o.error.is_none());
}

#[test]
fn async_handler_runs_on_the_plugin_runtime() {
    let o = invoke("t_async", &invocation(json!({}))).unwrap();
    assert_eq!(o.result, Some(json!({"slept": true, "name": "kex1"})));
}

#[test]
fn panics_become_arbitrary_errors() {
    for id in ["t_panic", "t_async_panic_id"] {
        let o = invoke(id, &invocation(json!({}))).unwrap();
        let e = o.error.unwrap_or_else(|| panic!("{id}: no error"));
        assert_eq!(e.kind, HandlerErrorKind::Arbitrary, "{id}");
        assert!(e.panicked, "{id}");
        assert!(e.message.contains("boom"), "{id}: {}", e.message);
    }
    // The panic text goes to the host's log at debug level, with the object, not to stderr.
    let logs = LOGS.lock().unwrap().clone();
    assert!(
        logs.iter().any(|(level, target, object, msg)| *level == 4
            && target == "kopf.plugin"
            && object == "ns1/kex1"
            && msg.contains("boom in t_panic")),
        "{logs:?}"
    );
}

#[test]
fn error_kinds_reach_the_outcome() {
    let o = invoke("t_temporary/spec.x", &invocation(json!({}))).unwrap();
    let e = o.error.unwrap();
    assert_eq!(
        (e.kind, e.message.as_str(), e.delay),
        (HandlerErrorKind::Temporary, "not yet", Some(5.0))
    );

    let e = invoke("t_arbitrary", &invocation(json!({})))
        .unwrap()
        .error
        .unwrap();
    assert_eq!(
        (e.kind, e.message.as_str(), e.panicked),
        (HandlerErrorKind::Arbitrary, "custom failure", false)
    );

    let admission = json!({"admission": {"operation": "CREATE", "dryrun": true}});
    let o = invoke("t_validate", &invocation(admission)).unwrap();
    let e = o.error.unwrap();
    assert_eq!((e.kind, e.code), (HandlerErrorKind::Admission, Some(403)));
    assert_eq!(o.warnings, vec!["careful".to_owned()]);
}

#[test]
fn unit_and_none_results_are_no_result() {
    assert_eq!(invoke("t_cleanup", "{}").unwrap(), Outcome::default());
    assert_eq!(invoke("t_login", "{}").unwrap(), Outcome::default());
    let o = invoke("t_probe_id", r#"{"param": {"a": [1, 2]}}"#).unwrap();
    assert_eq!(o.result, Some(json!({"a": [1, 2]})));
}

#[test]
fn filter_callbacks_are_evaluated_on_request() {
    let filter = |extra: Value| {
        let mut inv: Invocation = serde_json::from_str(&invocation(extra)).unwrap();
        inv.purpose = Purpose::Filter;
        invoke("t_filtered", &serde_json::to_string(&inv).unwrap()).unwrap()
    };
    let o = filter(json!({}));
    assert_eq!(o.matches, Some(true));
    assert_eq!(o.result, None, "filters must not run the handler");

    let mut other_tier = body();
    other_tier["metadata"]["labels"]["tier"] = json!("frontend");
    assert_eq!(filter(json!({"body": other_tier})).matches, Some(false));

    let mut disabled = body();
    disabled["spec"]["enabled"] = json!(false);
    assert_eq!(filter(json!({"body": disabled})).matches, Some(false));

    // new= callback on the field's new value, for a cause (the host sends its reason).
    let check = |new: Value| {
        let payload = invocation(json!({"purpose": "filter", "reason": "update", "old": 1, "new": new}));
        invoke("t_temporary/spec.x", &payload).unwrap().matches
    };
    assert_eq!(check(json!(50)), Some(true));
    assert_eq!(check(json!(5)), Some(false));
    // Without a cause (the pre-match that decides the finalizer), old=/new= are not asked,
    // as in Kopf's prematch.
    let prematch = invocation(json!({"purpose": "filter", "old": 1, "new": 5}));
    assert_eq!(
        invoke("t_temporary/spec.x", &prematch).unwrap().matches,
        Some(true)
    );
}

#[test]
fn logs_and_events_go_to_the_host_with_the_object() {
    invoke("t_log", &invocation(json!({}))).unwrap();
    let logs = LOGS.lock().unwrap().clone();
    assert!(
        logs.iter()
            .any(|(level, _, object, msg)| *level == 3 && object == "ns1/kex1" && msg == "hello from t_log"),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|(level, target, object, msg)| *level == 2
            && target == kopf::OBJECTS_TARGET
            && object == "ns1/kex1"
            && msg == "explicit warning"),
        "{logs:?}"
    );
    let calls = CALLS.lock().unwrap().clone();
    let (_, payload) = calls
        .iter()
        .find(|(m, p)| m == "event.post" && p.contains("an event"))
        .expect("event posted");
    let payload: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(payload["type"], "Normal");
    assert_eq!(payload["reason"], "Reason");
    assert_eq!(
        payload["object"],
        json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "name": "kex1", "uid": "u1", "namespace": "ns1"})
    );
}

#[test]
fn bad_calls_are_typed_failures() {
    let f = invoke("no_such_handler", "{}").unwrap_err();
    assert_eq!(f.kind, FailureKind::UNKNOWN_HANDLER);
    let f = invoke("t_create", "{not json").unwrap_err();
    assert_eq!(f.kind, FailureKind::BAD_PAYLOAD);
    let f = (module().control)(RStr::from("frobnicate"), RStr::from("{}")).unwrap_err();
    assert_eq!(f.kind, FailureKind::UNSUPPORTED);
    assert_eq!(
        (module().control)(RStr::from("ping"), RStr::from(""))
            .unwrap()
            .as_str(),
        r#"{"ok":true}"#
    );
    let f = (module().submit)(1, RStr::from("nope"), RStr::from("{}")).unwrap_err();
    assert_eq!(f.kind, FailureKind::UNKNOWN_HANDLER);
}

#[test]
fn submitted_calls_complete_once() {
    let m = module();
    (m.submit)(
        101,
        RStr::from("t_async"),
        RStr::from(invocation(json!({})).as_str()),
    )
    .unwrap();
    let o: Outcome = serde_json::from_str(&wait_completion(101).unwrap()).unwrap();
    assert_eq!(o.result, Some(json!({"slept": true, "name": "kex1"})));

    (m.submit)(
        102,
        RStr::from("t_panic"),
        RStr::from(invocation(json!({})).as_str()),
    )
    .unwrap();
    let o: Outcome = serde_json::from_str(&wait_completion(102).unwrap()).unwrap();
    assert!(o.error.unwrap().panicked);

    // A daemon whose host cannot answer daemon.wait keeps waiting until cancelled.
    (m.submit)(
        103,
        RStr::from("t_sleeper"),
        RStr::from(invocation(json!({})).as_str()),
    )
    .unwrap();
    (m.cancel)(103);
    let (kind, _) = wait_completion(103).unwrap_err();
    assert_eq!(kind, FailureKind::CANCELLED);

    // A sync handler runs on the plugin's blocking pool and completes from there.
    (m.submit)(
        104,
        RStr::from("t_create"),
        RStr::from(invocation(json!({})).as_str()),
    )
    .unwrap();
    let o: Outcome = serde_json::from_str(&wait_completion(104).unwrap()).unwrap();
    assert!(o.result.is_some() && o.error.is_none(), "{o:?}");

    // An async handler that never waits completes on the caller's thread, before
    // `submit` returns (its first poll runs there); one that waits (t_async, above)
    // goes on on the plugin's runtime.
    (m.submit)(
        107,
        RStr::from("t_async_panic_id"),
        RStr::from(invocation(json!({})).as_str()),
    )
    .unwrap();
    let (id, outcome) = COMPLETED
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .try_recv()
        .expect("completed before submit returned");
    assert_eq!(id, 107);
    let o: Outcome = serde_json::from_str(&outcome.unwrap()).unwrap();
    assert!(o.error.unwrap().panicked);

    // The payload is decoded by the call's own thread: a bad one fails the call.
    for (call_id, handler) in [(105, "t_create"), (106, "t_async")] {
        (m.submit)(call_id, RStr::from(handler), RStr::from("{not json")).unwrap();
        let (kind, _) = wait_completion(call_id).unwrap_err();
        assert_eq!(kind, FailureKind::BAD_PAYLOAD, "{handler}");
    }
}

#[test]
fn daemon_stop_flag_without_host_support_is_unset() {
    let ctx = kopf::Context::from_invocation(
        "d",
        Invocation {
            call_id: Some(5),
            ..Default::default()
        },
    );
    module();
    assert!(!ctx.stopped().is_set());
    let started = Instant::now();
    assert!(!ctx.stopped().wait(Some(Duration::from_millis(1))));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        CALLS
            .lock()
            .unwrap()
            .iter()
            .any(|(m, p)| m == "daemon.stopped" && p.contains("5"))
    );
}

/// A host before `daemon.body` answers "unsupported": the daemon keeps its start body.
#[test]
fn live_body_without_host_support_is_the_start_body() {
    let body = json!({"metadata": {"name": "n"}, "spec": {"field": "a"}});
    let ctx = kopf::Context::from_invocation(
        "d",
        Invocation {
            call_id: Some(6),
            body: Some(body.clone()),
            ..Default::default()
        },
    );
    module();
    assert_eq!(ctx.live_body(), body);
    assert!(
        CALLS
            .lock()
            .unwrap()
            .iter()
            .any(|(m, p)| m == "daemon.body" && p.contains('6'))
    );
}

#[test]
fn builder_validation_errors_are_clear() {
    use kopf::HandlerBuilder;
    let ok = |_: &kopf::Context| -> kopf::Result<()> { Ok(()) };
    let err = HandlerBuilder::new(HandlerKind::Create, "x")
        .sync_fn(ok)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no names"), "{err}");
    let err = HandlerBuilder::new(HandlerKind::Startup, "x")
        .resource(["pods"])
        .sync_fn(ok)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no resource selector"), "{err}");
    let err = HandlerBuilder::new(HandlerKind::Create, "x")
        .resource(["pods"])
        .old(1)
        .field("a")
        .sync_fn(ok)
        .build();
    assert!(err.unwrap_err().to_string().contains("only for update and field"));
    let err = HandlerBuilder::new(HandlerKind::Update, "x")
        .resource(["pods"])
        .value(1)
        .sync_fn(ok)
        .build();
    assert!(err.unwrap_err().to_string().contains("need `field`"));
    let err = HandlerBuilder::new(HandlerKind::Create, "x")
        .resource(["pods"])
        .label("a", kopf::EVERYTHING)
        .sync_fn(ok)
        .build();
    assert!(err.unwrap_err().to_string().contains("EVERYTHING"));
    let err = HandlerBuilder::new(HandlerKind::Create, "x")
        .resource(["pods"])
        .build()
        .unwrap_err();
    assert!(matches!(err, kopf::SdkError::NoFunction(_)));

    let mut reg = kopf::Registry::new();
    let mk = |kind| {
        HandlerBuilder::new(kind, "same")
            .resource(["pods"])
            .sync_fn(ok)
            .build()
            .unwrap()
    };
    reg.add(mk(HandlerKind::Create)).unwrap();
    let err = reg.add(mk(HandlerKind::Resume)).unwrap_err();
    assert!(err.to_string().contains("duplicate handler id \"same\""), "{err}");
}

#[test]
fn builder_async_closures_share_the_patch() {
    let h = kopf::HandlerBuilder::new(HandlerKind::Create, "b")
        .resource(["pods"])
        .async_fn(|ctx: kopf::Context| async move {
            ctx.patch().set("status.done", true);
            Ok::<_, kopf::Error>(ctx.name().map(str::to_owned))
        })
        .build()
        .unwrap();
    let inv: Invocation = serde_json::from_str(&invocation(json!({}))).unwrap();
    let o = h.run(inv);
    assert_eq!(o.result, Some(json!("kex1")));
    assert_eq!(o.patch, Some(json!({"status": {"done": true}})));
}

#[test]
fn owns_takes_kinds_as_selectors_on_event_handlers_only() {
    use kopf::HandlerBuilder;
    use kopf_abi::protocol::ResourceSelector;
    let ok = |_: &kopf::Context| -> kopf::Result<()> { Ok(()) };
    let handler = HandlerBuilder::new(HandlerKind::Event, "x")
        .resource(["kopfexamples"])
        .owns(["v1/configmaps", "kopf.dev/v1/kopfexamples", "pods"])
        .sync_fn(ok)
        .build()
        .unwrap();
    let sel = |group: Option<&str>, version: Option<&str>, name: &str| ResourceSelector {
        group: group.map(str::to_owned),
        version: version.map(str::to_owned),
        any_name: Some(name.to_owned()),
        ..ResourceSelector::default()
    };
    assert_eq!(
        handler.spec().options.owns,
        Some(vec![
            sel(Some(""), Some("v1"), "configmaps"),
            sel(Some("kopf.dev"), Some("v1"), "kopfexamples"),
            sel(None, None, "pods"),
        ])
    );
    let err = HandlerBuilder::new(HandlerKind::Create, "x")
        .resource(["kopfexamples"])
        .owns("pods")
        .sync_fn(ok)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("only for event handlers"), "{err}");
}

#[test]
fn callable_resource_selectors_are_asked_per_resource() {
    use kopf::HandlerBuilder;
    let ok = |_: &kopf::Context| -> kopf::Result<()> { Ok(()) };
    let handler = HandlerBuilder::new(HandlerKind::Create, "x")
        .group("kopf.dev")
        .resource_fn(|r: &kopf::ResourceInfo| r.plural.starts_with("kopf"))
        .sync_fn(ok)
        .build()
        .unwrap();
    let selector = handler.spec().selector.clone().unwrap();
    assert!(selector.callable);
    assert_eq!(selector.group.as_deref(), Some("kopf.dev"));
    let ask = |plural: &str, select: bool| {
        let mut inv = Invocation {
            purpose: Purpose::Filter,
            resource: Some(kopf::ResourceInfo {
                plural: plural.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        if select {
            inv.extra.insert("select_resource".into(), json!(true));
        }
        handler.run(inv).matches
    };
    assert_eq!(ask("kopfexamples", true), Some(true));
    assert_eq!(ask("pods", true), Some(false));
    // Object filters are still the filters (none here: a match).
    assert_eq!(ask("pods", false), Some(true));

    let err = HandlerBuilder::new(HandlerKind::Validate, "x")
        .resource_fn(|_: &kopf::ResourceInfo| true)
        .sync_fn(ok)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("webhook handlers take no callable"),
        "{err}"
    );
    let err = HandlerBuilder::new(HandlerKind::Create, "x")
        .plural("pods")
        .resource_fn(|_: &kopf::ResourceInfo| true)
        .sync_fn(ok)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no resource name besides it"), "{err}");
}
