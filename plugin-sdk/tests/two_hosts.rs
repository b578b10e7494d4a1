//! One plugin image initialised by two operators (two host tables, as when two operators
//! of one process load the same file): each call's host calls (logs, events, the
//! completion of submitted calls) reach the operator that made the call, from the
//! handler's thread or task and from what it spawns; payloads without a host context
//! (older hosts) reach the table `init` gave last.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use abi_stable::std_types::{RResult, RStr, RString};
use kopf_abi::protocol::{peek_host_context, with_host_context};
use kopf_abi::{Failure, HostTable, LogLevel};
use serde_json::{Value, json};

#[kopf::on::create("kopfexamples")]
fn h_sync(ctx: &kopf::Context) {
    tracing::info!("sync line");
    ctx.info("Sync", "an event");
    ctx.logger().info("a logger line");
    let bare = ctx.clone();
    std::thread::spawn(move || bare.info("Thread", "from a thread of the handler's"))
        .join()
        .unwrap();
}

#[kopf::on::update("kopfexamples")]
async fn h_async(ctx: &kopf::Context) {
    // Suspends once: the rest runs after a yield, where the call's operator must still hold.
    tokio::task::yield_now().await;
    tracing::info!("async line");
    ctx.info("Async", "an event");
    tokio::spawn(kopf::with_operator(async {
        tokio::task::yield_now().await;
        tracing::info!("spawned line");
    }))
    .await
    .unwrap();
    let bare = ctx.clone();
    tokio::spawn(async move { bare.info("Task", "from a bare task") })
        .await
        .unwrap();
}

/// What each host table received: (context, what, object, text).
static SEEN: Mutex<Vec<(usize, &'static str, String, String)>> = Mutex::new(Vec::new());

extern "C" fn host_log(context: usize, _: LogLevel, _: RStr<'_>, object: RStr<'_>, message: RStr<'_>) {
    let entry = (context, "log", object.to_string(), message.to_string());
    SEEN.lock().unwrap().push(entry);
}

extern "C" fn host_call(
    context: usize,
    method: RStr<'_>,
    _: u32,
    payload: RStr<'_>,
) -> RResult<RString, Failure> {
    let payload: Value = serde_json::from_str(payload.as_str()).unwrap_or_default();
    let object = payload["object"]["name"].as_str().unwrap_or_default().to_owned();
    let what = format!(
        "{} {}",
        method.as_str(),
        payload["reason"].as_str().unwrap_or_default()
    );
    SEEN.lock().unwrap().push((context, "call", object, what));
    RResult::ROk(RString::from("{}"))
}

extern "C" fn host_complete(context: usize, call_id: u64, outcome: RResult<RString, Failure>) {
    let text = format!("{call_id} {}", outcome.is_ok());
    SEEN.lock()
        .unwrap()
        .push((context, "complete", String::new(), text));
}

fn table(context: usize) -> HostTable {
    HostTable {
        context,
        log: host_log,
        call: host_call,
        complete: host_complete,
    }
}

fn payload(name: &str, context: Option<u64>) -> String {
    let inv = json!({"body": {
        "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
    }})
    .to_string();
    match context {
        Some(context) => with_host_context(&inv, context).unwrap(),
        None => inv,
    }
}

/// What arrived about `name` (host calls name it by the object, log lines by `ns/name`),
/// by context.
fn seen_about(name: &str) -> Vec<(usize, &'static str, String)> {
    let reference = format!("ns/{name}");
    SEEN.lock()
        .unwrap()
        .iter()
        .filter(|(_, _, object, _)| object == name || *object == reference)
        .map(|(context, what, _, text)| (*context, *what, text.clone()))
        .collect()
}

fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn completed(context: usize, call_id: u64) -> bool {
    let prefix = format!("{call_id} ");
    SEEN.lock()
        .unwrap()
        .iter()
        .any(|(c, what, _, text)| *c == context && *what == "complete" && text.starts_with(&prefix))
}

#[test]
fn each_call_reaches_its_own_operator() {
    let module = kopf::plugin_module();
    let config = RStr::from(r#"{"host_version": "test", "max_log_level": 5}"#);
    // Operator 10 initialises the image first, operator 20 last.
    for context in [10, 20] {
        assert!((module.init)(table(context), config).is_ok());
    }
    assert_eq!(peek_host_context(&payload("x", Some(10))), Some(10));

    // Blocking invokes, sync handler.
    for (name, context) in [("sa", 10), ("sb", 20)] {
        let answer = (module.invoke)(
            RStr::from("h_sync"),
            RStr::from(payload(name, Some(context)).as_str()),
        );
        assert!(answer.is_ok());
    }
    // Submitted calls, sync (the pool) and async (a task), both operators at once.
    let calls = [
        (1, "h_sync", "pa", 10),
        (2, "h_sync", "pb", 20),
        (3, "h_async", "aa", 10),
        (4, "h_async", "ab", 20),
    ];
    for (call_id, handler, name, context) in calls {
        let started = (module.submit)(
            call_id,
            RStr::from(handler),
            RStr::from(payload(name, Some(context)).as_str()),
        );
        assert!(started.is_ok());
    }
    for (call_id, _, _, context) in calls {
        wait_for(&format!("call {call_id} completed to {context}"), || {
            completed(context as usize, call_id)
        });
    }
    // Sync: a line, an event, a logger line, an event from a thread; async: a line, an
    // event, an event from a bare task.
    for (name, lines) in [("sa", 4), ("sb", 4), ("pa", 4), ("pb", 4), ("aa", 3), ("ab", 3)] {
        let context = if name.ends_with('a') { 10 } else { 20 };
        let seen = seen_about(name);
        assert!(
            seen.iter().all(|(c, ..)| *c == context),
            "{name}: everything to {context}: {seen:?}"
        );
        assert_eq!(seen.len(), lines, "{name}: {seen:?}");
    }
    // Outside the handler's object span, without an object: one from each operator.
    let mut spawned: Vec<usize> = SEEN
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.3 == "spawned line")
        .map(|s| s.0)
        .collect();
    spawned.sort_unstable();
    assert_eq!(spawned, [10, 20], "a line from each operator's spawned task");

    // An older host sends no context: the table `init` gave last answers.
    let answer = (module.invoke)(RStr::from("h_sync"), RStr::from(payload("old", None).as_str()));
    assert!(answer.is_ok());
    let seen = seen_about("old");
    assert!(
        !seen.is_empty() && seen.iter().all(|(c, ..)| *c == 20),
        "{seen:?}"
    );
}
