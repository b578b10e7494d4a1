//! End-to-end tests of the ported Kopf examples: each runs the real `kopf` binary with the
//! example's plugin against an in-process API emulator and drives objects through it.

mod examples_support;

use examples_support::{Example, example_object, has_diff_base, has_finalizer, kopfexamples, pods, progress};
use serde_json::{Value, json};

/// 01-minimal: the create handler's result lands in the status, an update runs nothing,
/// and a deletion (no delete handler: no finalizer) needs nothing from the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_01_minimal() {
    let ex = Example::start("example-01-minimal", &[]).await;
    let kex = kopfexamples();
    ex.create(&kex, example_object("kopf-example-1")).await;
    let created = ex
        .wait_object(&kex, "kopf-example-1", "the result and the diff-base", |o| {
            let o = o?;
            (has_diff_base(o) && o.pointer("/status/create_fn").is_some()).then(|| o.clone())
        })
        .await;
    assert_eq!(created["status"]["create_fn"], json!({"message": "hello world"}));
    assert!(
        !has_finalizer(&created),
        "no delete handler, no finalizer: {created}"
    );
    ex.wait_line("And here we are! Creating:").await;

    ex.patch(&kex, "kopf-example-1", json!({"spec": {"field": "changed"}}))
        .await;
    ex.wait_object(&kex, "kopf-example-1", "the new diff-base", |o| {
        let base = o?
            .pointer("/metadata/annotations")?
            .get(examples_support::LAST_HANDLED)?
            .as_str()?;
        base.contains("changed").then_some(())
    })
    .await;
    assert_eq!(
        ex.lines_with("And here we are!").len(),
        1,
        "the create handler ran once"
    );

    ex.delete(&kex, "kopf-example-1").await;
    ex.wait("the object to be gone", || {
        ex.get(&kex, "kopf-example-1").is_none().then_some(())
    })
    .await
    .unwrap();
    ex.finish().await;
}

/// 02-children: the create handler creates a Pod through the plugin's own client
/// (`client.config`), adopted by the KopfExample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_02_children() {
    let ex = Example::start("example-02-children", &[]).await;
    let kex = kopfexamples();
    ex.create(&kex, example_object("kopf-example-1")).await;

    let children = ex
        .wait_object(&kex, "kopf-example-1", "status.create_fn.children", |o| {
            o?.pointer("/status/create_fn/children")?.as_array().cloned()
        })
        .await;
    assert_eq!(children.len(), 1, "{children:?}");
    let child = children[0].as_str().expect("a child name").to_owned();
    assert!(
        child.starts_with("kopf-example-1-"),
        "generateName from the parent: {child}"
    );

    let parent = ex.get(&kex, "kopf-example-1").unwrap();
    let pod = ex.get(&pods(), &child).expect("the child pod exists");
    assert_eq!(pod["metadata"]["namespace"], "default");
    assert_eq!(pod["metadata"]["labels"]["somelabel"], "somevalue", "{pod}");
    let refs = pod["metadata"]["ownerReferences"]
        .as_array()
        .expect("owner references");
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!(
        refs[0],
        json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample", "name": "kopf-example-1",
            "uid": parent["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
        })
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["env"][0], json!({"name": "FIELD", "value": "value"}));
    assert!(
        container["args"][0].as_str().unwrap().contains("sleep 1m"),
        "{container}"
    );
    // The plugin's requests were made with the operator's credentials (the kubeconfig's token).
    let counters = ex.emu.counters();
    assert!(counters.get("create", "pods") == 1, "{counters:?}");

    // Deleting the parent garbage-collects the child (the emulator collects garbage; a bare
    // API server has no controller manager, so there the owner reference above is the check).
    ex.delete(&kex, "kopf-example-1").await;
    ex.wait("the parent to be gone", || {
        ex.get(&kex, "kopf-example-1").is_none().then_some(())
    })
    .await
    .unwrap();
    if !ex.emu.is_real() {
        ex.wait("the child pod to be garbage-collected", || {
            ex.get(&pods(), &child).is_none().then_some(())
        })
        .await
        .unwrap();
    }
    ex.finish().await;
}

/// 03-exceptions: progress annotations while retrying, then the final outcome of each
/// error path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_03_exceptions() {
    let port = kopf_e2e::free_port().unwrap();
    let liveness = format!("http://127.0.0.1:{port}/healthz");
    let ex = Example::start("example-03-exceptions", &[("KOPF_RUN_LIVENESS", &liveness)]).await;
    let kex = kopfexamples();
    ex.create(&kex, example_object("kopf-example-1")).await;

    // Record every distinct progress record seen while the handlers retry.
    let ids = [
        "create_fn",
        "eventual_success",
        "limited_retries",
        "permanent_errors",
    ];
    let mut seen: std::collections::BTreeMap<&str, Vec<Value>> = Default::default();
    let done = ex
        .wait_object(
            &kex,
            "kopf-example-1",
            "all handlers done (diff-base stored)",
            |o| {
                let o = o?;
                for id in ids {
                    if let Some(p) = progress(o, id) {
                        let list = seen.entry(id).or_default();
                        if list.last() != Some(&p) {
                            list.push(p);
                        }
                    }
                }
                has_diff_base(o).then(|| o.clone())
            },
        )
        .await;

    // create_fn: temporary error first, with its message and a delay.
    let create_fn = &seen["create_fn"];
    let first = create_fn
        .iter()
        .find(|p| p["retries"] == 1)
        .unwrap_or_else(|| panic!("no record after the 1st attempt: {create_fn:?}"));
    assert_eq!(first["message"], "First failure.", "{first}");
    assert_eq!(first["success"], false);
    assert_eq!(first["failure"], false);
    assert_eq!(first["purpose"], "create");
    assert!(first.get("delayed").is_some(), "{first}");
    let second = create_fn.iter().find(|p| p["retries"] == 2);
    if let Some(second) = second {
        assert_eq!(second["message"], "Second failure.", "{second}");
        assert_eq!(second["failure"], false);
    }
    assert!(create_fn.iter().all(|p| p["success"] == false), "{create_fn:?}");
    // The final failure is purged in the same patch that finishes the cause (as in Kopf),
    // so it is seen in the log, not necessarily on the object.
    ex.wait_line(
        "[default/kopf-example-1] Handler 'create_fn' failed permanently: Third failure, the final one.",
    )
    .await;

    // eventual_success: retried after temporary errors, then succeeded.
    let ev = &seen["eventual_success"];
    assert!(
        ev.iter()
            .any(|p| p["message"] == "Not ready yet (attempt 1)." && p["retries"] == 1),
        "{ev:?}"
    );
    assert_eq!(
        done.pointer("/status/eventual_success"),
        Some(&json!({"attempts": 3}))
    );

    // limited_retries: gave up after 3 attempts.
    ex.wait_line(
        "Handler 'limited_retries' failed permanently: Handler 'limited_retries' has exceeded 3 retries",
    )
    .await;
    let lr = &seen["limited_retries"];
    assert!(lr.iter().all(|p| p["retries"].as_u64() <= Some(3)), "{lr:?}");
    assert!(
        seen["limited_retries"]
            .iter()
            .any(|p| p["message"] == "Failure." && p["failure"] == false),
        "{:?}",
        seen["limited_retries"]
    );

    // permanent_errors: failed at the first attempt, never retried.
    let pe = &seen["permanent_errors"];
    assert!(pe.iter().all(|p| p["retries"] != 2), "{pe:?}");
    let pe = pe.last().unwrap();
    assert_eq!(
        (pe["retries"].clone(), pe["failure"].clone()),
        (json!(1), json!(true)),
        "{pe}"
    );
    assert_eq!(pe["message"], "Unrecoverable.");

    // Done: progress purged, no results of failed handlers, one summary line.
    for id in ids {
        assert!(progress(&done, id).is_none(), "{id} not purged: {done}");
    }
    for id in ["create_fn", "limited_retries", "permanent_errors"] {
        assert!(done.pointer(&format!("/status/{id}")).is_none(), "{done}");
    }
    ex.wait_line("Creation is processed: 1 succeeded; 3 failed.")
        .await;

    assert_resource_handler_metrics(port).await;
    ex.finish().await;
}

/// Resource handlers are counted like every other kind: each attempt by its outcome, each
/// retry (03-exceptions' create_fn: temporary, arbitrary, then permanent: 2 retries).
async fn assert_resource_handler_metrics(port: u16) {
    let (status, metrics) = tokio::task::spawn_blocking(move || {
        kopf_e2e::http_get(port, "/metrics", std::time::Duration::from_secs(10)).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{metrics}");
    for needle in [
        r#"kopf_handler_invocations_total{kind="create",handler="create_fn",outcome="temporary"} 1"#,
        r#"kopf_handler_invocations_total{kind="create",handler="create_fn",outcome="arbitrary"} 1"#,
        r#"kopf_handler_invocations_total{kind="create",handler="create_fn",outcome="permanent"} 1"#,
        r#"kopf_handler_retries_total{kind="create",handler="create_fn"} 2"#,
        r#"kopf_handler_retries_total{kind="create",handler="eventual_success"} 2"#,
        r#"kopf_handler_invocations_total{kind="create",handler="permanent_errors",outcome="arbitrary"} 1"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in:\n{metrics}");
    }
    assert!(
        !metrics.contains(r#"kopf_handler_retries_total{kind="create",handler="permanent_errors"}"#),
        "{metrics}"
    );
}

/// 04-events: the four events exist as core/v1 Events about the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_04_events() {
    let ex = Example::start("example-04-events", &[]).await;
    let kex = kopfexamples();
    ex.create(&kex, example_object("kopf-example-1")).await;
    let uid = ex
        .wait_object(&kex, "kopf-example-1", "the object's uid", |o| {
            o?.pointer("/metadata/uid").cloned()
        })
        .await;

    let events = ex
        .wait("4 events about the object", || {
            let events: Vec<Value> = ex
                .emu
                .list_objects("v1", "events", Some("default"), None)
                .ok()?
                .into_iter()
                .filter(|e| e.pointer("/involvedObject/name") == Some(&json!("kopf-example-1")))
                .collect();
            (events.len() >= 4).then_some(events)
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nall events: {:?}\nrequests: {:?}",
                ex.emu.list_objects("v1", "events", None, None),
                ex.emu.counters().by_verb_resource
            )
        });
    let mut found: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("type"), s("reason"), s("message"))
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (
                "Error".into(),
                "SomeReason".into(),
                "Some exception: Exception text.".into()
            ),
            ("Normal".into(), "SomeReason".into(), "Some message".into()),
            ("SomeType".into(), "SomeReason".into(), "Some message".into()),
            ("Warning".into(), "SomeReason".into(), "Some message".into()),
        ]
    );
    for e in &events {
        assert_eq!(
            e["involvedObject"],
            json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "name": "kopf-example-1",
                   "uid": uid, "namespace": "default"}),
            "{e}"
        );
        assert_eq!(e.pointer("/source/component"), Some(&json!("kopf")), "{e}");
        assert!(
            e.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .starts_with("kopf-event-"),
            "{e}"
        );
    }
    ex.finish().await;
}

/// The events about `name` in `default`, as (type, reason, message), sorted.
fn events_about(ex: &Example, name: &str) -> Vec<(String, String, String, Value)> {
    let mut found: Vec<(String, String, String, Value)> = ex
        .emu
        .list_objects("v1", "events", Some("default"), None)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.pointer("/involvedObject/name") == Some(&json!(name)))
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("type"), s("reason"), s("message"), e["involvedObject"].clone())
        })
        .collect();
    found.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    found
}

/// `--post-logs`: the operator's log lines about an object become Events with reason
/// `Logging` (Kopf's `settings.posting.loggers`), linked to the object by uid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_logs_turns_object_log_lines_into_events() {
    let ex = Example::start("example-04-events", &[("KOPF_RUN_POST_LOGS", "INFO")]).await;
    let kex = kopfexamples();
    ex.create(&kex, example_object("kopf-example-1")).await;
    let logged = ex
        .wait("a Logging event about the handler's success", || {
            let events = events_about(&ex, "kopf-example-1");
            events
                .iter()
                .any(|(_, reason, message, _)| {
                    reason == "Logging" && message == "Handler 'create_fn' succeeded."
                })
                .then_some(events)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{:?}", events_about(&ex, "kopf-example-1")));
    let uid = ex.get(&kex, "kopf-example-1").unwrap()["metadata"]["uid"].clone();
    for (kind, reason, message, involved) in &logged {
        assert_eq!(
            involved,
            &json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "name": "kopf-example-1",
                    "uid": uid, "namespace": "default"}),
            "{kind} {reason} {message}"
        );
        if reason == "Logging" {
            assert_eq!(kind, "Normal", "INFO lines are Normal events: {message}");
            assert!(
                !message.starts_with('['),
                "posted without the object prefix: {message}"
            );
        }
    }
    // The handler's own events are still there (all four at INFO).
    assert_eq!(
        logged.iter().filter(|e| e.1 == "SomeReason").count(),
        4,
        "{logged:?}"
    );
    ex.finish().await;
}

/// `--post-logs` also posts the lines of timers (and daemons): their tasks run in the
/// object's span, so a timer's own log line becomes a `Logging` event linked to the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_logs_includes_the_lines_of_timers() {
    let ex = Example::start("example-15-timers", &[("KOPF_RUN_POST_LOGS", "INFO")]).await;
    let kex = kopfexamples();
    ex.create(&kex, example_object("kopf-example-1")).await;
    let events = ex
        .wait("a Logging event with the timer's line", || {
            let events = events_about(&ex, "kopf-example-1");
            events
                .iter()
                .any(|(_, reason, message, _)| {
                    reason == "Logging" && message.starts_with("Ping from a sync timer")
                })
                .then_some(events)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{:?}", events_about(&ex, "kopf-example-1")));
    let uid = ex.get(&kex, "kopf-example-1").unwrap()["metadata"]["uid"].clone();
    for (_, reason, message, involved) in events.iter().filter(|e| e.1 == "Logging") {
        assert_eq!(involved["uid"], uid, "{reason} {message}");
    }
    ex.finish().await;
}

/// `posting.level` (here via `--post-logs=ERROR`) also gates `ctx.info` and `ctx.warn`,
/// as Kopf's level gates `kopf.info/warn`; `ctx.event` and `ctx.exception` still post.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_posting_level_gates_info_and_warn_events() {
    let ex = Example::start("example-04-events", &[("KOPF_RUN_POST_LOGS", "ERROR")]).await;
    let kex = kopfexamples();
    ex.create(&kex, example_object("kopf-example-1")).await;
    // Events are posted in order by one queue: once the exception's event (the handler's
    // last) is there, the dropped info and warn events would have been posted before it.
    ex.wait("the exception's event", || {
        events_about(&ex, "kopf-example-1")
            .iter()
            .any(|e| e.0 == "Error")
            .then_some(())
    })
    .await
    .unwrap();
    ex.wait_line("succeeded.").await;
    let kinds: Vec<(String, String)> = events_about(&ex, "kopf-example-1")
        .into_iter()
        .map(|(kind, reason, _, _)| (kind, reason))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("Error".to_owned(), "SomeReason".to_owned()),
            ("SomeType".to_owned(), "SomeReason".to_owned())
        ],
        "no Normal/Warning events and no INFO log lines posted"
    );
    ex.finish().await;
}

/// 05-handlers: create → update of spec.field → restart (resume) → delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_05_handlers() {
    let mut ex = Example::start("example-05-handlers", &[]).await;
    let kex = kopfexamples();
    ex.create(&kex, example_object("kopf-example-1")).await;

    let created = ex
        .wait_object(&kex, "kopf-example-1", "creation handled", |o| {
            let o = o?;
            (has_diff_base(o) && o.pointer("/status/create_fn_2").is_some()).then(|| o.clone())
        })
        .await;
    assert!(
        has_finalizer(&created),
        "delete handlers need the finalizer: {created}"
    );
    assert_eq!(created.pointer("/status/create_fn_1"), Some(&json!({"order": 1})));
    assert_eq!(created.pointer("/status/create_fn_2"), Some(&json!({"order": 2})));
    // The field handler ran on creation too: old null (dropped by the merge patch) → new.
    let field = created
        .pointer("/status/field_fn~1spec.field")
        .cloned()
        .unwrap_or_default();
    assert_eq!(field["new"], "value", "{created}");
    assert!(field.get("old").is_none(), "{field}");
    assert!(created.pointer("/status/update_fn").is_none(), "{created}");
    assert!(created.pointer("/status/resume_fn_1").is_none(), "{created}");
    ex.wait_line("CREATED 1st").await;
    ex.wait_line("CREATED 2nd").await;

    // Update spec.field.
    ex.patch(&kex, "kopf-example-1", json!({"spec": {"field": "changed"}}))
        .await;
    let updated = ex
        .wait_object(&kex, "kopf-example-1", "update handled", |o| {
            let o = o?;
            (o.pointer("/status/update_fn").is_some()
                && o.pointer("/status/field_fn~1spec.field/old") == Some(&json!("value")))
            .then(|| o.clone())
        })
        .await;
    let update = &updated["status"]["update_fn"];
    assert_eq!(
        update["diff"],
        json!([["change", ["spec", "field"], "value", "changed"]]),
        "{update}"
    );
    assert_eq!(
        (update["old_field"].clone(), update["new_field"].clone()),
        (json!("value"), json!("changed"))
    );
    let field = &updated["status"]["field_fn/spec.field"];
    assert_eq!(field["old"], "value");
    assert_eq!(field["new"], "changed");
    assert_eq!(
        field["diff"],
        json!([["change", [], "value", "changed"]]),
        "{field}"
    );
    ex.wait_line("UPDATED").await;
    ex.wait_line("FIELD CHANGED: Some(String(\"value\")) -> Some(String(\"changed\"))")
        .await;

    // A new operator process resumes the object: both resume handlers run, nothing else.
    ex.restart().await;
    let resumed = ex
        .wait_object(&kex, "kopf-example-1", "resume handlers", |o| {
            let o = o?;
            (o.pointer("/status/resume_fn_1").is_some() && o.pointer("/status/resume_fn_2").is_some())
                .then(|| o.clone())
        })
        .await;
    assert_eq!(resumed["status"]["resume_fn_1"], json!({"cause": "resume"}));
    ex.wait_line("RESUMED 2nd").await;
    assert!(ex.lines_with("UPDATED").is_empty(), "no update after the restart");

    // Delete: both delete handlers, then the finalizer goes and so does the object.
    ex.delete(&kex, "kopf-example-1").await;
    ex.wait("the object to be released and deleted", || {
        ex.get(&kex, "kopf-example-1").is_none().then_some(())
    })
    .await
    .unwrap();
    ex.wait_line("DELETED 1st").await;
    ex.wait_line("DELETED 2nd").await;
    ex.finish().await;
}

/// 08-events: every event reaches both spies; the failing one is never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_08_events() {
    let ex = Example::start(
        "example-08-events",
        &[("KOPF_EXAMPLE_EVENTS_LOG", "{dir}/events.log")],
    )
    .await;
    let log = ex.dir.path().join("events.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let kex = kopfexamples();
    ex.create(&kex, example_object("kopf-example-1")).await;
    ex.wait("the ADDED event in both handlers", || {
        let text = read();
        (text.contains("normal_event_fn ADDED kopf-example-1")
            && text.contains("event_fn_with_error ADDED kopf-example-1"))
        .then_some(())
    })
    .await
    .unwrap();
    ex.patch(&kex, "kopf-example-1", json!({"spec": {"field": "changed"}}))
        .await;
    ex.wait("the MODIFIED event", || {
        read()
            .contains("normal_event_fn MODIFIED kopf-example-1")
            .then_some(())
    })
    .await
    .unwrap();
    ex.delete(&kex, "kopf-example-1").await;
    ex.wait("the DELETED event in both handlers", || {
        let text = read();
        (text.contains("normal_event_fn DELETED kopf-example-1")
            && text.contains("event_fn_with_error DELETED kopf-example-1"))
        .then_some(())
    })
    .await
    .unwrap();

    // One call of each handler per event: the failure was not retried.
    let text = read();
    let calls = |h: &str| text.lines().filter(|l| l.starts_with(&format!("{h} "))).count();
    assert_eq!(calls("event_fn_with_error"), calls("normal_event_fn"), "{text}");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("normal_event_fn "))
        .collect();
    let failing: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event_fn_with_error "))
        .collect();
    assert_eq!(events, failing, "the same events in the same order");
    assert!(!ex.lines_with("Oops!").is_empty(), "the failure is logged");
    ex.wait_line("Event received: {\"object\":").await;
    // Event handlers keep no state on objects (the object is gone anyway) and need no finalizer.
    ex.finish().await;
}

/// 10-builtins: pods get a killer on create and on resume; the delete handler cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_10_builtins() {
    let mut ex = Example::start("example-10-builtins", &[]).await;
    let pods = pods();
    let pod = |name: &str, ttl: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {"kopf.dev/ttl": ttl}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        })
    };
    // A pod with a short life: killed by the operator, then released by its delete handler.
    ex.create(&pods, pod("short-lived", "0.5")).await;
    ex.wait_line("[default/short-lived] === Pod killing happens in 0.5s.")
        .await;
    ex.wait_line("[default/short-lived] === Pod killing happens NOW!")
        .await;
    ex.wait("the short-lived pod to be gone", || {
        ex.get(&pods, "short-lived").is_none().then_some(())
    })
    .await
    .unwrap();

    // A long-lived pod survives an operator restart (its killer is rescheduled by the
    // resume handler) and its killer is cancelled when the pod is deleted by the test.
    ex.create(&pods, pod("long-lived", "3600")).await;
    ex.wait_object(&pods, "long-lived", "the finalizer on the long-lived pod", |o| {
        o.filter(|o| has_finalizer(o) && has_diff_base(o)).map(|_| ())
    })
    .await;
    ex.wait_line("[default/long-lived] === Pod killing happens in 3600s.")
        .await;
    ex.restart().await;
    ex.wait_line("[default/long-lived] === Pod killing happens in 3600s.")
        .await;
    ex.delete(&pods, "long-lived").await;
    ex.wait("the long-lived pod to be gone", || {
        ex.get(&pods, "long-lived").is_none().then_some(())
    })
    .await
    .unwrap();
    ex.wait_line("[default/long-lived] === Pod killing is cancelled!")
        .await;
    assert!(
        ex.lines_with("[default/long-lived] === Pod killing happens NOW!")
            .is_empty()
    );
    ex.finish().await;
}

/// 11-filtering-handlers: which handlers run for a matching and a bare object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_11_filtering_handlers() {
    let ex = Example::start("example-11-filtering-handlers", &[]).await;
    let kex = kopfexamples();
    ex.create(&kex, example_object("kopf-example-1")).await;
    ex.create(
        &kex,
        json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
               "metadata": {"name": "bare"}, "spec": {"field": "other"}}),
    )
    .await;

    let ran = |o: &Value| -> Vec<String> {
        let mut keys: Vec<String> = o
            .get("status")
            .and_then(Value::as_object)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    };
    let full = ex
        .wait_object(&kex, "kopf-example-1", "creation handled", |o| {
            o.filter(|o| has_diff_base(o)).cloned()
        })
        .await;
    let mut expected = vec![
        "create_with_annotations_absent",
        "create_with_annotations_callback_matching",
        "create_with_annotations_matching",
        "create_with_annotations_present",
        "create_with_field_absence/spec.nonexistent",
        "create_with_field_callback/spec.field",
        "create_with_field_presence/spec.field",
        "create_with_field_value/spec.field",
        "create_with_labels_absent",
        "create_with_labels_callback_matching",
        "create_with_labels_matching",
        "create_with_labels_present",
        "create_with_when_matching",
    ];
    expected.sort();
    assert_eq!(ran(&full), expected, "{full}");
    assert!(
        full["status"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == &json!(true))
    );

    let bare = ex
        .wait_object(&kex, "bare", "creation handled", |o| {
            o.filter(|o| has_diff_base(o)).cloned()
        })
        .await;
    assert_eq!(
        ran(&bare),
        vec![
            "create_with_annotations_absent",
            "create_with_field_absence/spec.nonexistent",
            "create_with_field_presence/spec.field",
            "create_with_labels_absent",
        ],
        "{bare}"
    );
    ex.wait_line("[default/kopf-example-1] Label is matching.").await;
    for message in [
        "is mismatching.",
        "callback mismatching.",
        "When-filter is not satisfied.",
        "Combined filters are satisfied.",
    ] {
        assert!(ex.lines_with(message).is_empty(), "{:?}", ex.lines_with(message));
    }

    assert_change_filters_see_the_cause(&ex, &kex).await;
    ex.finish().await;
}

/// 11-filtering-handlers, changes: `old=`/`new=` callbacks see the field's old and new
/// values, `when=` sees the cause (reason, old, new, diff). Growing to 5 is not "big";
/// 5 -> 20 is.
async fn assert_change_filters_see_the_cause(ex: &Example, kex: &kube::core::ApiResource) {
    ex.patch(kex, "kopf-example-1", json!({"spec": {"size": 5}}))
        .await;
    let small = ex
        .wait_object(kex, "kopf-example-1", "the first update handled", |o| {
            o.filter(|o| o.pointer("/status/update_with_cause_in_when").is_some())
                .cloned()
        })
        .await;
    assert!(
        small
            .pointer("/status/update_when_growing_big~1spec.size")
            .is_none(),
        "{small}"
    );
    ex.patch(kex, "kopf-example-1", json!({"spec": {"size": 20}}))
        .await;
    let big = ex
        .wait_object(kex, "kopf-example-1", "the growth handled", |o| {
            o.filter(|o| o.pointer("/status/update_when_growing_big~1spec.size").is_some())
                .cloned()
        })
        .await;
    assert_eq!(
        big.pointer("/status/update_when_growing_big~1spec.size"),
        Some(&json!(true)),
        "{big}"
    );
    ex.wait_line("The size grew big: Some(Number(5)) -> Some(Number(20)).")
        .await;
}
