//! End-to-end: sub-handlers (Kopf's `@kopf.subhandler`/`kopf.register`) with the real
//! `kopf` binary, the real `example-07-subhandlers` plugin and the `fixture-subhandlers`
//! plugin, against the emulator: results under `status["create_fn/item-x"]`, progress
//! records in Kopf's format while a child is delayed, their purge at the end, and the
//! PATCH budget when all children succeed at once.

mod reactor_common;

use reactor_common::{Cluster, NS, fixture, last_handled, progress_annotations, read_records};
use serde_json::{Value, json};

/// A KopfExample with `spec.items` (and optional `spec.delay`).
async fn create_with_items(cluster: &Cluster, name: &str, items: &[&str], delay: Option<f64>) {
    let mut spec = json!({"items": items});
    if let Some(delay) = delay {
        spec["delay"] = json!(delay);
    }
    cluster
        .emu
        .create_object(json!({
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfExample",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }))
        .await
        .unwrap();
}

/// Waits until the creation is fully handled (the diff-base is stored).
async fn wait_handled(cluster: &Cluster, name: &str, kopf: &kopf_e2e::KopfProcess) -> Value {
    cluster
        .wait_obj(name, "the creation handled", Some(kopf), |o| {
            let o = o?;
            last_handled(o).is_some().then(|| o.clone())
        })
        .await
}

/// A cluster with kopf running `fixture-subhandlers`, its calls recorded in the file
/// returned.
async fn start_with_fixture() -> (Cluster, std::path::PathBuf, kopf_e2e::KopfProcess) {
    let cluster = Cluster::start().await;
    let record = cluster.path("record.txt");
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-subhandlers"),
        &[("KOPF_SUBHANDLERS_RECORD", record.display().to_string())],
    );
    (cluster, record, kopf)
}

/// Calls per handler id, from a record file.
fn calls(path: &std::path::Path) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for ((id, _, _, reason), n) in read_records(path) {
        assert_eq!(reason, "create", "children get the parent's cause");
        *out.entry(id).or_insert(0) += n;
    }
    out
}

/// A progress annotation, decoded.
fn record_of(obj: &Value, key: &str) -> Option<Value> {
    let text = obj.pointer("/metadata/annotations")?.get(key)?.as_str()?;
    serde_json::from_str(text).ok()
}

/// The progress record of `id` (`parent/child/...`), decoded.
fn record_of_id(obj: &Value, id: &str) -> Option<Value> {
    record_of(obj, &format!("kopf.zalando.org/{}", id.replace('/', ".")))
}

/// The nested child of the hand-over tests (items `a`, `flaky`, `nested`).
const NESTED: &str = "create_fn/item-nested";
/// Its grandchildren.
const STEP_A: &str = "create_fn/item-nested/step-a";
const STEP_FLAKY: &str = "create_fn/item-nested/step-flaky";

/// The top parent's `subrefs` in the hand-over tests: all depths, sorted (Kopf's order);
/// the last two are the nested child's own.
fn all_subrefs() -> [&'static str; 5] {
    [
        "create_fn/item-a",
        "create_fn/item-flaky",
        NESTED,
        STEP_A,
        STEP_FLAKY,
    ]
}

/// After a hand-over with `item-nested` waiting for `step-flaky`: the finished grandchild
/// is not re-run, the pending one runs once, the nested child finishes with its result.
fn assert_nested_continued(done: &Value, calls: &std::collections::BTreeMap<String, usize>) {
    assert_eq!(calls.get(STEP_A), None, "step-a is not re-run: {calls:?}");
    assert_eq!(calls.get(STEP_FLAKY), Some(&1), "retried once: {calls:?}");
    assert_eq!(calls.get(NESTED), Some(&1), "{calls:?}");
    assert_eq!(done["status"][STEP_FLAKY], json!({"step": "flaky"}), "{done}");
    assert_eq!(done["status"][STEP_A], json!({"step": "a"}), "{done}");
    assert_eq!(done["status"][NESTED], json!({"item": "nested"}), "{done}");
}

/// Python Kopf running `tests/python/subhandlers_operator.py` (the fixture's twin) on
/// the cluster, its output into `log`.
fn spawn_python_kopf(
    cluster: &Cluster,
    record: &std::path::Path,
    log: &std::path::Path,
) -> std::process::Child {
    cluster.spawn_python_kopf(
        "subhandlers_operator.py",
        &[("KOPF_SUBHANDLERS_RECORD", record)],
        log,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_07_children_succeed_in_one_cycle_without_extra_patches() {
    let cluster = Cluster::start().await;
    let kopf = cluster.spawn_kopf(&fixture("example-07-subhandlers"), &[]);
    create_with_items(&cluster, "kex-sub", &["item1", "item2"], None).await;
    let obj = wait_handled(&cluster, "kex-sub", &kopf).await;

    for item in ["item1", "item2"] {
        let key = format!("create_fn/item-{item}");
        assert_eq!(
            obj["status"].get(&key),
            Some(&json!({"item": item, "handler": key})),
            "{obj}"
        );
    }
    assert_eq!(progress_annotations(&obj), Vec::<String>::new(), "{obj}");
    assert!(
        !cluster.writes.any_annotation_ending("create_fn.item-item1"),
        "children that succeed at once never write progress records"
    );
    // One /status patch (all results) and one body patch (the diff-base): as for a
    // single handler without children.
    let counters = cluster.emu.counters();
    assert_eq!(counters.get("patch", "kopfexamples"), 1, "{counters:?}");
    assert_eq!(counters.get("patch", "kopfexamples/status"), 1, "{counters:?}");
    drop(kopf);
    cluster.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_child_keeps_kopf_records_then_all_are_purged() {
    let (cluster, record, kopf) = start_with_fixture().await;
    create_with_items(&cluster, "kex-flaky", &["a", "flaky"], Some(2.0)).await;

    // While the flaky child waits for its retry: Kopf's records.
    let pending = cluster
        .wait_obj("kex-flaky", "the pending records", Some(&kopf), |o| {
            let o = o?;
            record_of(o, "kopf.zalando.org/create_fn.item-flaky").map(|_| o.clone())
        })
        .await;
    let parent = record_of(&pending, "kopf.zalando.org/create_fn").expect("the parent's record");
    assert_eq!(parent["message"], json!("None"), "{parent}");
    assert_eq!(
        parent["subrefs"],
        json!(["create_fn/item-a", "create_fn/item-flaky"]),
        "{parent}"
    );
    assert_eq!(
        (
            &parent["purpose"],
            &parent["retries"],
            &parent["success"],
            &parent["failure"]
        ),
        (&json!("create"), &json!(1), &json!(false), &json!(false)),
        "{parent}"
    );
    assert!(
        parent["delayed"].is_string() && parent.get("stopped").is_none(),
        "{parent}"
    );
    let flaky = record_of(&pending, "kopf.zalando.org/create_fn.item-flaky").unwrap();
    assert_eq!(flaky["message"], json!("flaky is not ready"), "{flaky}");
    assert_eq!(
        (&flaky["retries"], &flaky["success"]),
        (&json!(1), &json!(false)),
        "{flaky}"
    );
    assert!(
        flaky["delayed"].is_string() && flaky.get("subrefs").is_none(),
        "{flaky}"
    );
    let a = record_of(&pending, "kopf.zalando.org/create_fn.item-a").expect("a's record");
    assert_eq!((&a["success"], &a["retries"]), (&json!(true), &json!(1)), "{a}");
    assert!(a["stopped"].is_string(), "{a}");
    assert_eq!(
        pending["status"]["create_fn/item-a"],
        json!({"item": "a"}),
        "{pending}"
    );
    assert!(pending["status"].get("create_fn").is_none(), "{pending}");
    assert!(last_handled(&pending).is_none(), "{pending}");

    // After the retry: everything purged, all results delivered.
    let done = wait_handled(&cluster, "kex-flaky", &kopf).await;
    assert_eq!(progress_annotations(&done), Vec::<String>::new(), "{done}");
    assert_eq!(
        done["status"]["create_fn/item-flaky"],
        json!({"item": "flaky"}),
        "{done}"
    );
    assert_eq!(done["status"]["create_fn/item-a"], json!({"item": "a"}), "{done}");
    assert_eq!(done["status"]["create_fn"], json!({"parent": true}), "{done}");
    let calls = calls(&record);
    assert_eq!(
        calls.get("create_fn/item-a"),
        Some(&1),
        "a succeeded child is not re-run: {calls:?}"
    );
    assert_eq!(calls.get("create_fn/item-flaky"), Some(&2), "{calls:?}");
    assert_eq!(
        calls.get("create_fn"),
        Some(&2),
        "the parent re-runs once: {calls:?}"
    );
    drop(kopf);
    cluster.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanently_failed_child_is_final_and_the_parent_finishes_as_in_kopf() {
    let (cluster, record, kopf) = start_with_fixture().await;
    create_with_items(&cluster, "kex-fatal", &["fatal", "ok"], None).await;
    let done = wait_handled(&cluster, "kex-fatal", &kopf).await;
    assert_eq!(progress_annotations(&done), Vec::<String>::new(), "{done}");
    assert_eq!(
        done["status"]["create_fn/item-ok"],
        json!({"item": "ok"}),
        "{done}"
    );
    assert!(done["status"].get("create_fn/item-fatal").is_none(), "{done}");
    // Kopf 1.45: all children finished (one of them failed) => the parent succeeds.
    assert_eq!(done["status"]["create_fn"], json!({"parent": true}), "{done}");
    let calls = calls(&record);
    assert_eq!(calls.get("create_fn/item-fatal"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("create_fn"), Some(&1), "{calls:?}");
    let mut kopf = kopf;
    tokio::task::block_in_place(|| {
        kopf.wait_for_line("failed permanently: fatal is fatal", reactor_common::DEADLINE)
    })
    .unwrap();
    drop(kopf);
    cluster.emu.shutdown().await;
}

/// Python Kopf (PyPI 1.45) handles the object partway — `item-a` done, `item-flaky`
/// delayed — and is stopped; kopf continues from Kopf's records without re-running the
/// finished sub-handler, then purges everything. Needs Python Kopf (see
/// `kopf_e2e::python_kopf_available`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kopf_continues_python_kopfs_pending_subhandlers() {
    if !kopf_e2e::python_kopf_available() {
        return;
    }
    let cluster = Cluster::start().await;
    let (py_record, rs_record, py_log) = (
        cluster.path("py.txt"),
        cluster.path("rs.txt"),
        cluster.path("py.log"),
    );
    let name = "kex-py-sub";
    create_with_items(&cluster, name, &["a", "flaky", "nested"], Some(6.0)).await;

    let mut python = spawn_python_kopf(&cluster, &py_record, &py_log);
    let partway = cluster
        .wait_obj(name, "Python Kopf partway (item-flaky delayed)", None, |o| {
            let o = o?;
            let flaky = record_of(o, "kopf.zalando.org/create_fn.item-flaky")?;
            let a = record_of(o, "kopf.zalando.org/create_fn.item-a")?;
            let step_flaky = record_of_id(o, "create_fn/item-nested/step-flaky")?;
            let step_a = record_of_id(o, "create_fn/item-nested/step-a")?;
            let waiting = [flaky["retries"] == json!(1), a["success"] == json!(true)];
            let nested = [
                step_flaky["retries"] == json!(1),
                step_a["success"] == json!(true),
            ];
            (waiting == [true; 2] && nested == [true; 2]).then(|| o.clone())
        })
        .await;
    let _ = python.kill();
    let _ = python.wait();
    let parent = record_of(&partway, "kopf.zalando.org/create_fn").expect("Kopf's parent record");
    assert_eq!(parent["message"], json!("None"), "{parent}");
    assert_eq!(parent["subrefs"], json!(all_subrefs()), "{parent}");
    let nested = record_of_id(&partway, NESTED).expect("Kopf's record of the nested child");
    assert_eq!(nested["message"], json!("None"), "{nested}");
    assert_eq!(nested["subrefs"], json!(all_subrefs()[3..]), "{nested}");
    let py_calls = calls(&py_record);
    assert_eq!(py_calls.get("create_fn/item-a"), Some(&1), "{py_calls:?}");
    assert_eq!(py_calls.get("create_fn/item-flaky"), Some(&1), "{py_calls:?}");
    assert_eq!(py_calls.get(STEP_A), Some(&1), "{py_calls:?}");

    let kopf = cluster.spawn_kopf(
        &fixture("fixture-subhandlers"),
        &[("KOPF_SUBHANDLERS_RECORD", rs_record.display().to_string())],
    );
    let done = wait_handled(&cluster, name, &kopf).await;
    assert_eq!(progress_annotations(&done), Vec::<String>::new(), "{done}");
    assert_eq!(done["status"]["create_fn/item-a"], json!({"item": "a"}), "{done}");
    assert_eq!(
        done["status"]["create_fn/item-flaky"],
        json!({"item": "flaky"}),
        "{done}"
    );
    assert_eq!(done["status"]["create_fn"], json!({"parent": true}), "{done}");
    let rs_calls = calls(&rs_record);
    assert_eq!(
        rs_calls.get("create_fn/item-a"),
        None,
        "item-a is not re-run: {rs_calls:?}"
    );
    assert_eq!(
        rs_calls.get("create_fn/item-flaky"),
        Some(&1),
        "retried once: {rs_calls:?}"
    );
    assert_nested_continued(&done, &rs_calls);
    // Once per child waking up: item-flaky's and item-nested's delays may end apart.
    assert!(
        rs_calls.get("create_fn").is_some_and(|n| (1..=2).contains(n)),
        "{rs_calls:?}"
    );
    drop(kopf);
    cluster.emu.shutdown().await;
}

/// The other way: kopf handles the object partway — `item-a` done, `item-flaky` delayed —
/// and is stopped; Python Kopf (PyPI 1.45) continues from kopf's records without
/// re-running the finished sub-handler, and purges everything. Needs Python Kopf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kopf_continues_kopfs_pending_subhandlers() {
    if !kopf_e2e::python_kopf_available() {
        return;
    }
    let cluster = Cluster::start().await;
    let (py_record, rs_record, py_log) = (
        cluster.path("py.txt"),
        cluster.path("rs.txt"),
        cluster.path("py.log"),
    );
    let name = "kex-rs-sub";
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-subhandlers"),
        &[("KOPF_SUBHANDLERS_RECORD", rs_record.display().to_string())],
    );
    create_with_items(&cluster, name, &["a", "flaky", "nested"], Some(3.0)).await;
    let partway = cluster
        .wait_obj(name, "kopf partway (item-flaky delayed)", Some(&kopf), |o| {
            let o = o?;
            record_of(o, "kopf.zalando.org/create_fn.item-flaky").map(|_| o.clone())
        })
        .await;
    drop(kopf);
    let parent = record_of_id(&partway, "create_fn").expect("kopf's parent record");
    assert_eq!(parent["subrefs"], json!(all_subrefs()), "{parent}");
    let nested = record_of_id(&partway, NESTED).expect("kopf's record of the nested child");
    assert_eq!(
        (&nested["message"], &nested["subrefs"]),
        (&json!("None"), &json!(all_subrefs()[3..])),
        "{nested}"
    );
    let rs_calls = calls(&rs_record);
    assert_eq!(rs_calls.get("create_fn/item-a"), Some(&1), "{rs_calls:?}");
    assert_eq!(rs_calls.get("create_fn/item-flaky"), Some(&1), "{rs_calls:?}");

    let mut python = spawn_python_kopf(&cluster, &py_record, &py_log);
    let start = std::time::Instant::now();
    let done = loop {
        let obj = cluster.get(name);
        // Kopf sends the results (/status) and the diff-base with the purge (body)
        // in two patches: wait for both.
        if let Some(o) = obj.as_ref().filter(|o| {
            last_handled(o).is_some()
                && o["status"].get("create_fn").is_some()
                && o["status"].get("create_fn/item-flaky").is_some()
                && o["status"].get(NESTED).is_some()
        }) {
            break o.clone();
        }
        if start.elapsed() > reactor_common::DEADLINE {
            let _ = python.kill();
            let _ = python.wait();
            panic!(
                "Python Kopf did not finish: {obj:?}\n{}",
                std::fs::read_to_string(&py_log).unwrap_or_default()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let _ = python.kill();
    let _ = python.wait();
    assert_eq!(progress_annotations(&done), Vec::<String>::new(), "{done}");
    assert_eq!(done["status"]["create_fn/item-a"], json!({"item": "a"}), "{done}");
    assert_eq!(
        done["status"]["create_fn/item-flaky"],
        json!({"item": "flaky"}),
        "{done}"
    );
    assert_eq!(done["status"]["create_fn"], json!({"parent": true}), "{done}");
    let py_calls = calls(&py_record);
    assert_eq!(
        py_calls.get("create_fn/item-a"),
        None,
        "item-a is not re-run: {py_calls:?}"
    );
    assert_eq!(
        py_calls.get("create_fn/item-flaky"),
        Some(&1),
        "retried once: {py_calls:?}"
    );
    assert!(py_calls.get("create_fn").is_some_and(|n| *n >= 1), "{py_calls:?}");
    assert_nested_continued(&done, &py_calls);
    cluster.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_subhandlers_keep_kopf_records_until_the_grandchildren_finish() {
    let (cluster, record, kopf) = start_with_fixture().await;
    create_with_items(&cluster, "kex-nested", &["nested"], Some(2.0)).await;
    let (child, flaky, step_a) = (
        "create_fn/item-nested",
        "create_fn/item-nested/step-flaky",
        "create_fn/item-nested/step-a",
    );

    // While the grandchild waits for its retry: the child waits for it as the parent
    // waits for the child, both with Kopf's "None" and their subrefs of all depths.
    let pending = cluster
        .wait_obj("kex-nested", "the grandchild's record", Some(&kopf), |o| {
            let o = o?;
            record_of_id(o, flaky).map(|_| o.clone())
        })
        .await;
    let parent = record_of_id(&pending, "create_fn").expect("the parent's record");
    assert_eq!(parent["subrefs"], json!([child, step_a, flaky]), "{parent}");
    let middle = record_of_id(&pending, child).expect("the child's record");
    assert_eq!(middle["subrefs"], json!([step_a, flaky]), "{middle}");
    for record in [&parent, &middle] {
        assert_eq!(
            (&record["message"], &record["retries"], &record["success"]),
            (&json!("None"), &json!(1), &json!(false)),
            "{record}"
        );
        assert!(record["delayed"].is_string(), "{record}");
    }
    let grand = record_of_id(&pending, flaky).unwrap();
    assert_eq!(grand["message"], json!("flaky-step is not ready"), "{grand}");
    assert!(grand.get("subrefs").is_none(), "{grand}");
    let a = record_of_id(&pending, step_a).unwrap();
    assert_eq!((&a["success"], &a["retries"]), (&json!(true), &json!(1)), "{a}");
    assert_eq!(pending["status"][step_a], json!({"step": "a"}), "{pending}");
    assert!(pending["status"].get(child).is_none(), "{pending}");

    let done = wait_handled(&cluster, "kex-nested", &kopf).await;
    assert_eq!(progress_annotations(&done), Vec::<String>::new(), "{done}");
    assert_eq!(done["status"][flaky], json!({"step": "flaky"}), "{done}");
    assert_eq!(done["status"][child], json!({"item": "nested"}), "{done}");
    assert_eq!(done["status"]["create_fn"], json!({"parent": true}), "{done}");
    let calls = calls(&record);
    let expected = [("create_fn", 2), (child, 2), (step_a, 1), (flaky, 2)];
    for (id, n) in expected {
        assert_eq!(calls.get(id), Some(&n), "{id}: {calls:?}");
    }
    drop(kopf);
    cluster.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_progress_survives_a_restart_of_kopf() {
    let (cluster, record, kopf) = start_with_fixture().await;
    create_with_items(&cluster, "kex-nested-restart", &["nested"], Some(2.0)).await;
    cluster
        .wait_obj(
            "kex-nested-restart",
            "the grandchild's record",
            Some(&kopf),
            |o| record_of_id(o?, STEP_FLAKY).map(|_| ()),
        )
        .await;
    drop(kopf);
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-subhandlers"),
        &[("KOPF_SUBHANDLERS_RECORD", record.display().to_string())],
    );
    let done = wait_handled(&cluster, "kex-nested-restart", &kopf).await;
    assert_eq!(progress_annotations(&done), Vec::<String>::new(), "{done}");
    assert_eq!(done["status"][NESTED], json!({"item": "nested"}), "{done}");
    let calls = calls(&record);
    // Across both runs, as without the restart: nothing finished is called again.
    let expected = [("create_fn", 2), (NESTED, 2), (STEP_A, 1), (STEP_FLAKY, 2)];
    for (id, n) in expected {
        assert_eq!(calls.get(id), Some(&n), "{id}: {calls:?}");
    }
    drop(kopf);
    cluster.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchilds_permanent_failure_is_final_and_its_parents_finish_as_in_kopf() {
    let (cluster, record, kopf) = start_with_fixture().await;
    create_with_items(&cluster, "kex-nested-fatal", &["nestedfatal"], Some(0.5)).await;
    let done = wait_handled(&cluster, "kex-nested-fatal", &kopf).await;
    let child = "create_fn/item-nestedfatal";
    assert_eq!(progress_annotations(&done), Vec::<String>::new(), "{done}");
    assert!(
        done["status"].get(format!("{child}/step-fatal")).is_none(),
        "{done}"
    );
    assert_eq!(done["status"][child], json!({"item": "nestedfatal"}), "{done}");
    assert_eq!(done["status"]["create_fn"], json!({"parent": true}), "{done}");
    let calls = calls(&record);
    assert_eq!(calls.get(&format!("{child}/step-fatal")), Some(&1), "{calls:?}");
    assert_eq!(
        calls.get(child),
        Some(&2),
        "re-run once for step-flaky: {calls:?}"
    );
    drop(kopf);
    cluster.emu.shutdown().await;
}

/// An object whose `create_fn` runs `spec.fns` with `execute_fns` (Kopf's
/// `execute(fns=...)`), then registers `item-i`.
async fn create_with_fns(cluster: &Cluster, name: &str) {
    cluster
        .emu
        .create_object(json!({
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfExample",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"fns": ["a", "flaky"], "items": ["i"], "delay": 2.0},
        }))
        .await
        .unwrap();
}

/// What the operator wrote while `fn-flaky` waits for its retry: ids from the keys,
/// prefixed with the parent's, and nothing past the pending `execute_fns` ran.
fn assert_fns_pending(pending: &Value) {
    let parent = record_of_id(pending, "create_fn").expect("the parent's record");
    assert_eq!(parent["message"], json!("None"), "{parent}");
    assert_eq!(
        parent["subrefs"],
        json!(["create_fn/fn-a", "create_fn/fn-flaky"]),
        "{parent}"
    );
    assert_eq!(
        pending["status"]["create_fn/fn-a"],
        json!({"fn": "a"}),
        "{pending}"
    );
    for later in ["create_fn/named_step", "create_fn/item-i"] {
        assert!(record_of_id(pending, later).is_none(), "{later}: {pending}");
    }
}

/// When done: every function ran as a sub-handler (the named one under its name) and the
/// parent got past them once. `parent_calls`: Kopf's lifecycle runs one sub-handler per
/// cycle, so its parent runs more often.
fn assert_fns_done(done: &Value, calls: &std::collections::BTreeMap<String, usize>, parent_calls: usize) {
    assert_eq!(progress_annotations(done), Vec::<String>::new(), "{done}");
    assert_eq!(
        done["status"]["create_fn/fn-flaky"],
        json!({"fn": "flaky"}),
        "{done}"
    );
    assert_eq!(
        done["status"]["create_fn/named_step"],
        json!({"named": true}),
        "{done}"
    );
    assert_eq!(done["status"]["create_fn/item-i"], json!({"item": "i"}), "{done}");
    let expected = [
        ("create_fn", parent_calls),
        ("create_fn/fn-a", 1),
        ("create_fn/fn-flaky", 2),
        ("create_fn/named_step", 1),
        ("create_fn#after-fns", 1),
        ("create_fn/item-i", 1),
    ];
    for (id, n) in expected {
        assert_eq!(calls.get(id), Some(&n), "{id}: {calls:?}");
    }
}

/// The pending state: `fn-flaky` failed once.
fn fns_pending(o: Option<&Value>) -> Option<Value> {
    let o = o?;
    let flaky = record_of_id(o, "create_fn/fn-flaky")?;
    (flaky["retries"] == json!(1)).then(|| o.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_fns_runs_functions_as_subhandlers_and_the_parent_past_them_once() {
    let (cluster, record, kopf) = start_with_fixture().await;
    create_with_fns(&cluster, "kex-fns").await;
    let pending = cluster
        .wait_obj("kex-fns", "the pending fn's record", Some(&kopf), fns_pending)
        .await;
    assert_fns_pending(&pending);
    let done = wait_handled(&cluster, "kex-fns", &kopf).await;
    assert_fns_done(&done, &calls(&record), 2);
    drop(kopf);
    cluster.emu.shutdown().await;
}

/// The same object and the twin operator in Python Kopf (`await kopf.execute(fns=...)`):
/// the same ids, records and results. Needs Python Kopf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kopfs_execute_fns_gives_the_same_ids_and_records() {
    if !kopf_e2e::python_kopf_available() {
        return;
    }
    let cluster = Cluster::start().await;
    let (record, log) = (cluster.path("py.txt"), cluster.path("py.log"));
    let mut python = spawn_python_kopf(&cluster, &record, &log);
    create_with_fns(&cluster, "kex-py-fns").await;
    let pending = cluster
        .wait_obj("kex-py-fns", "Python Kopf's pending fn", None, fns_pending)
        .await;
    let done = cluster
        .wait_obj("kex-py-fns", "Python Kopf done", None, |o| {
            let o = o?;
            (last_handled(o).is_some() && o["status"].get("create_fn").is_some()).then(|| o.clone())
        })
        .await;
    let _ = python.kill();
    let _ = python.wait();
    assert_fns_pending(&pending);
    let calls = calls(&record);
    let parent_calls = calls.get("create_fn").copied().unwrap_or(0);
    assert!(parent_calls >= 2, "{calls:?}");
    assert_fns_done(&done, &calls, parent_calls);
    cluster.emu.shutdown().await;
}
