//! Kopf idioms end to end, with the real `kopf` binary and the `fixture-fidelity` plugin
//! (`tests/fixtures/fidelity`): one function under stacked attributes, the timing options
//! of timers against the clock, indices under a worker limit smaller than the number of
//! indexed objects, live bodies of daemons, orphaned daemons, the patching-inconsistency
//! warning and the forced exit after `process.ultimate_exiting_timeout`.
//!
//! The fixture appends a line per handler run (`<handler> <name> <reason> <unix ms>`) to a
//! record file, so the tests know exactly what ran, and when.

mod reactor_common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kopf_e2e::KopfProcess;
use reactor_common::{Cluster, DEADLINE, NS, fixture, last_handled, progress_annotations};
use serde_json::{Value, json};

const PLUGIN: &str = "fixture-fidelity";

/// One handler run: (handler, object name, reason, unix ms at its start).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    handler: String,
    name: String,
    reason: String,
    at_ms: u64,
}

fn runs(path: &Path, handler: &str, name: &str) -> Vec<Run> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| match line.split(' ').collect::<Vec<_>>()[..] {
            [handler, name, reason, ms] => Run {
                handler: handler.to_owned(),
                name: name.to_owned(),
                reason: reason.to_owned(),
                at_ms: ms
                    .parse()
                    .unwrap_or_else(|_| panic!("a malformed record line: {line:?}")),
            },
            _ => panic!("a malformed record line: {line:?}"),
        })
        .filter(|r| r.handler == handler && r.name == name)
        .collect()
}

fn reasons(runs: &[Run]) -> Vec<&str> {
    runs.iter().map(|r| r.reason.as_str()).collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn create_labelled(cluster: &Cluster, name: &str, group: &str, field: &str) {
    let mut body = Cluster::example(name, field);
    body["metadata"]["labels"] = json!({"fidelity": group});
    cluster.emu.create_object(body).await.unwrap();
}

fn record_env(cluster: &Cluster) -> (std::path::PathBuf, Vec<(&'static str, String)>) {
    let record = cluster.path("record");
    let envs = vec![("KOPF_FIDELITY_RECORD", record.display().to_string())];
    (record, envs)
}

/// Stops the operator gracefully and waits for its exit.
fn stop(mut kopf: KopfProcess) {
    tokio::task::block_in_place(|| kopf.stop_gracefully(DEADLINE)).unwrap();
}

/// Waits until the object's last cycle is done: the diff-base holds `field` and no progress
/// record is left.
async fn wait_handled(cluster: &Cluster, name: &str, field: &str, kopf: &KopfProcess) -> Value {
    cluster
        .wait_obj(name, &format!("spec.field {field:?} handled"), Some(kopf), |o| {
            let o = o?;
            (last_handled(o)?.pointer("/spec/field") == Some(&json!(field))
                && progress_annotations(o).is_empty())
            .then(|| o.clone())
        })
        .await
}

/// `#[kopf::on::resume] #[kopf::on::create] #[kopf::on::update]` on one function, as Kopf's
/// decorators: one id (`reconcile`), one result in `status.reconcile`, and one run per cause
/// even when several of the attributes match it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacked_attributes_share_one_id_as_in_kopf() {
    let cluster = Cluster::start().await;
    let plugin = fixture(PLUGIN);
    let (record, envs) = record_env(&cluster);
    let name = "stacked-1";
    let reconcile = |expected: &[&str]| {
        let seen = runs(&record, "reconcile", name);
        assert_eq!(reasons(&seen), expected, "reconcile runs: {seen:?}");
    };

    // The three attributes are three handlers with one id.
    let inspect = tokio::task::block_in_place(|| {
        kopf_e2e::run_kopf(["inspect".as_ref(), "--json".as_ref(), plugin.as_os_str()])
    })
    .unwrap();
    let doc: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let kinds: Vec<&str> = doc[0]["description"]["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["id"] == "reconcile")
        .filter_map(|h| h["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["resume", "create", "update"], "{doc}");

    // Creation: the function runs once, as a create handler.
    let kopf = cluster.spawn_kopf(&plugin, &envs);
    create_labelled(&cluster, name, "stacked", "a").await;
    let obj = wait_handled(&cluster, name, "a", &kopf).await;
    assert_eq!(
        obj["status"]["reconcile"],
        json!({"reason": "create", "field": "a"})
    );
    reconcile(&["create"]);

    cluster.set_field(name, "b").await;
    let obj = wait_handled(&cluster, name, "b", &kopf).await;
    assert_eq!(
        obj["status"]["reconcile"],
        json!({"reason": "update", "field": "b"})
    );
    reconcile(&["create", "update"]);

    // Changed while the operator was down: on restart the update and the resume attribute
    // both match the object; with one id the function runs once.
    stop(kopf);
    cluster.set_field(name, "c").await;
    let kopf = cluster.spawn_kopf(&plugin, &envs);
    let obj = wait_handled(&cluster, name, "c", &kopf).await;
    assert_eq!(
        obj["status"]["reconcile"],
        json!({"reason": "update", "field": "c"})
    );
    reconcile(&["create", "update", "update"]);

    // Unchanged across a restart: only the resume attribute matches, and its result lands
    // in the same `status.reconcile`.
    stop(kopf);
    let kopf = cluster.spawn_kopf(&plugin, &envs);
    cluster
        .wait_obj(name, "the resume result", Some(&kopf), |o| {
            (o?.pointer("/status/reconcile/reason")? == "resume").then_some(())
        })
        .await;
    reconcile(&["create", "update", "update", "resume"]);

    // The `when` callback of the update attribute still decides for it (the operator asks
    // the plugin for the filters of the id).
    cluster.set_field(name, "skip").await;
    wait_handled(&cluster, name, "skip", &kopf).await;
    reconcile(&["create", "update", "update", "resume"]);
    stop(kopf);
}

/// A timer's `initial_delay`, `idle` and `sharp` against the clock, with tolerances that
/// still fail when an option is ignored: without `initial_delay` the first run comes at
/// once; without `idle` the 0.3 s timer runs while the object keeps changing; without
/// `sharp` a run of 1 s pushes the next start 3 s away instead of 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_options_hold_against_the_clock() {
    let cluster = Cluster::start().await;
    let plugin = fixture(PLUGIN);
    let (record, envs) = record_env(&cluster);
    let kopf = cluster.spawn_kopf(&plugin, &envs);

    let delay_created = now_ms();
    create_labelled(&cluster, "delay-1", "delay", "a").await;
    create_labelled(&cluster, "sharp-1", "sharp", "a").await;

    // The idle timer's object changes every 0.5 s for 4 s (the creation counts as a change).
    let mut changes: Vec<(u64, u64)> = Vec::new();
    let before = now_ms();
    create_labelled(&cluster, "idle-1", "idle", "v0").await;
    changes.push((before, now_ms()));
    for i in 1..=8 {
        // The pace of the changes is what the test is about, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = now_ms();
        cluster.set_field("idle-1", &format!("v{i}")).await;
        changes.push((before, now_ms()));
    }
    let (last_change, _) = *changes.last().unwrap();

    let wait_runs = |handler: &'static str, name: &'static str, count: usize, after: u64| {
        let record = record.clone();
        let kopf = &kopf;
        async move {
            let start = std::time::Instant::now();
            loop {
                let seen = runs(&record, handler, name);
                if seen.iter().filter(|r| r.at_ms >= after).count() >= count {
                    return seen;
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "timed out waiting for {count} runs of {handler} on {name}: {seen:?}\nkopf log:\n{}",
                    kopf.lines().join("\n")
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // initial_delay = 3: the first run no sooner than 3 s after the object appeared.
    let delayed = wait_runs("delayed", "delay-1", 1, 0).await;
    let first = delayed[0].at_ms - delay_created;
    assert!(
        (3_000..8_000).contains(&first),
        "the first run of a timer with initial_delay = 3 came {first} ms after the object"
    );

    // idle = 3: no run while a change seen less than 3 s ago (a change is seen no sooner
    // than its write starts, and surely within 1 s after it ended).
    let idle = wait_runs("idle", "idle-1", 1, last_change).await;
    for run in &idle {
        for &(started, ended) in &changes {
            let too_soon = run.at_ms >= ended + 1_000 && run.at_ms < started + 3_000;
            assert!(
                !too_soon,
                "an idle = 3 timer ran {} ms after a change: {run:?}, changes {changes:?}",
                run.at_ms - started
            );
        }
    }
    let after_last = idle.iter().find(|r| r.at_ms >= last_change).unwrap().at_ms - last_change;
    assert!(
        (3_000..9_000).contains(&after_last),
        "the idle = 3 timer first ran {after_last} ms after the last change"
    );

    // sharp, interval = 2: runs start 2 s apart although each takes 1 s.
    let sharp = wait_runs("sharp", "sharp-1", 4, 0).await;
    let gaps: Vec<u64> = sharp
        .windows(2)
        .map(|w| w[1].at_ms - w[0].at_ms)
        .take(3)
        .collect();
    assert!(
        gaps.iter().all(|g| (1_850..2_600).contains(g)),
        "a sharp timer of 2 s with 1 s runs started {gaps:?} ms apart"
    );
    stop(kopf);
}

/// Indices with a worker limit of 1 and six indexed objects listed at start: in Kopf the
/// one worker waits for the index while the other objects wait for the worker. Here every
/// object is handled, and every create handler sees the complete index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indices_do_not_deadlock_under_a_small_worker_limit() {
    let cluster = Cluster::start().await;
    let plugin = fixture(PLUGIN);
    let settings = fixture("fixture-settings-probe");
    let names: Vec<String> = (1..=6).map(|i| format!("indexed-{i}")).collect();
    for name in &names {
        create_labelled(&cluster, name, "index", "a").await;
    }
    let envs = vec![
        (
            "KOPF_FIXTURE_SETTINGS",
            json!({"queueing": {"worker_limit": 1}}).to_string(),
        ),
        ("KOPF_FIXTURE_SLEEP_MS", "300".to_owned()),
    ];
    let settings = settings.display().to_string();
    let kopf = cluster.spawn_kopf_with(&["--standalone", &settings], &plugin, &envs);
    let mut expected: Vec<Value> = names.iter().map(|n| json!(n)).collect();
    expected.sort_by_key(Value::to_string);
    for name in &names {
        let mut seen: Vec<Value> = cluster
            .wait_obj(name, "sees_index's result", Some(&kopf), |o| {
                o?.pointer("/status/sees_index/all")?.as_array().cloned()
            })
            .await;
        seen.sort_by_key(Value::to_string);
        assert_eq!(seen, expected, "{name} saw a partial index");
        // The settings fixture's handler counts its calls in flight: one at a time shows
        // that the limit applies.
        assert_eq!(
            cluster.get(name).unwrap().pointer("/status/slow/concurrent"),
            Some(&json!(1)),
            "{name}: the worker limit did not apply"
        );
    }
    stop(kopf);
}

/// `kopf::info` / `kopf::exception` post Events about other objects than the one handled
/// (Kopf's module-level `kopf.info(objs, ...)`), one per object of an array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_about_other_objects() {
    let cluster = Cluster::start().await;
    let kopf = cluster.spawn_kopf(&fixture(PLUGIN), &[]);
    create_labelled(&cluster, "teller", "events", "a").await;
    let about = |name: &str, reason: &str| {
        let events = cluster.emu.list_objects("v1", "events", Some(NS), None).unwrap();
        events
            .into_iter()
            .find(|e| e.pointer("/involvedObject/name") == Some(&json!(name)) && e["reason"] == reason)
    };
    let deadline = std::time::Instant::now() + DEADLINE;
    let found = loop {
        if let (Some(a), Some(b), Some(failed)) = (
            about("teller-a", "Noticed"),
            about("teller-b", "Noticed"),
            about("teller-a", "Failed"),
        ) {
            break [a, b, failed];
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the events about teller-a and teller-b:\n{}",
            kopf.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let [a, b, failed] = found;
    for (event, suffix) in [(&a, "a"), (&b, "b")] {
        assert_eq!(event["type"], "Normal", "{event}");
        assert_eq!(event["message"], "by teller", "{event}");
        assert_eq!(
            event["involvedObject"],
            json!({"apiVersion": "v1", "kind": "ConfigMap", "name": format!("teller-{suffix}"),
                   "namespace": NS, "uid": format!("uid-{suffix}")}),
            "{event}"
        );
    }
    assert_eq!(failed["type"], "Error", "{failed}");
    assert_eq!(failed["message"], "could not write: the disk is full", "{failed}");
    stop(kopf);
}

/// Kopf's mapping API on an index (`keys`, `len`, iteration, `contains`, each key's store):
/// five objects indexed under their `spec.field` (`a` ×3, `b` ×2), listed at start so that
/// every create handler sees all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_mapping_api() {
    let cluster = Cluster::start().await;
    let names = ["census-1", "census-2", "census-3", "census-4", "census-5"];
    for (name, field) in names.iter().zip(["a", "b", "a", "b", "a"]) {
        create_labelled(&cluster, name, "census", field).await;
    }
    let kopf = cluster.spawn_kopf(&fixture(PLUGIN), &[]);
    for name in names {
        let seen = cluster
            .wait_obj(name, "census's result", Some(&kopf), |o| {
                o?.pointer("/status/census").cloned()
            })
            .await;
        assert_eq!(
            seen,
            json!({"keys": ["a", "b"], "len": 2, "sizes": {"a": 3, "b": 2}, "has_a": true,
                   "has_none": false, "values": names}),
            "{name}"
        );
    }
    stop(kopf);
}

/// Kopf's daemons see a body that follows the object: a running daemon reads each change of
/// `spec.field` through `ctx.live_body()`, while `ctx.body()` stays the body it started with.
/// Also the deletion's stop ends it (the object goes away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_see_a_live_body() {
    let cluster = Cluster::start().await;
    let (record, envs) = record_env(&cluster);
    let kopf = cluster.spawn_kopf(&fixture(PLUGIN), &envs);
    let name = "live-1";
    let seen = |expected: &'static str| {
        let record = record.clone();
        move || {
            runs(&record, "follower", name)
                .iter()
                .any(|r| r.reason == expected)
        }
    };
    create_labelled(&cluster, name, "live", "a").await;
    cluster
        .wait_until("the daemon's first look", DEADLINE, seen("a/a"))
        .await;
    for field in ["b", "c"] {
        cluster.set_field(name, field).await;
        let expected: &'static str = if field == "b" { "a/b" } else { "a/c" };
        if tokio::time::timeout(DEADLINE, async {
            while !seen(expected)() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_err()
        {
            panic!(
                "the daemon never saw spec.field {field:?}: {:?}\nkopf log:\n{}",
                runs(&record, "follower", name),
                kopf.lines().join("\n")
            );
        }
    }
    // One daemon call saw all three states: it was never restarted.
    let start_fields: Vec<String> = runs(&record, "follower", name)
        .iter()
        .map(|r| r.reason.split('/').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(start_fields, ["a", "a", "a"], "{start_fields:?}");
    cluster.delete(name).await;
    cluster
        .wait_obj(name, "the object gone", Some(&kopf), |o| {
            o.is_none().then_some(())
        })
        .await;
    stop(kopf);
}

/// A daemon that does not exit within its `cancellation_timeout` after its object's
/// deletion is left orphaned, as in Kopf: it no longer holds the finalizer, so the object
/// is gone while the daemon still winds down (it takes 6 s; the timeout is 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_daemons_release_the_finalizer() {
    let cluster = Cluster::start().await;
    let (record, envs) = record_env(&cluster);
    let kopf = cluster.spawn_kopf(&fixture(PLUGIN), &envs);
    let name = "orphan-1";
    let lines = |what: &'static str| {
        let record = record.clone();
        move || runs(&record, "stubborn", name).iter().any(|r| r.reason == what)
    };
    create_labelled(&cluster, name, "orphan", "a").await;
    cluster
        .wait_until("the daemon started", DEADLINE, lines("started"))
        .await;
    cluster
        .wait_obj(name, "the finalizer", Some(&kopf), |o| {
            reactor_common::has_finalizer(o?).then_some(())
        })
        .await;
    cluster.delete(name).await;
    cluster
        .wait_obj(name, "the object released", Some(&kopf), |o| {
            o.is_none().then_some(())
        })
        .await;
    assert!(
        !lines("exited")(),
        "the object was released only after its daemon exited: {:?}",
        runs(&record, "stubborn", name)
    );
    assert!(
        kopf.lines().iter().any(
            |l| l.contains("\"stubborn\" did not exit in time. Leaving it orphaned.") && l.contains(name)
        ),
        "no orphaning warning:\n{}",
        kopf.lines().join("\n")
    );
    stop(kopf);
}

/// Kopf's check after merge-patching: a result that a CRD's structural schema prunes from
/// `status` does not come back, and the operator warns about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_results_are_warned_about() {
    let cluster = Cluster::start().await;
    let crd = std::fs::read_to_string(kopf_e2e::workspace_root().join("examples/crd.yaml")).unwrap();
    let open_status = "            status:\n              type: object\n              x-kubernetes-preserve-unknown-fields: true\n";
    assert!(
        crd.contains(open_status),
        "examples/crd.yaml changed its status schema"
    );
    let strict = crd.replace(
        open_status,
        "            status:\n              type: object\n              properties:\n                phase: {type: string}\n",
    );
    cluster.emu.apply_yaml(&strict).await.unwrap();
    let mut kopf = cluster.spawn_kopf(&fixture(PLUGIN), &[]);
    let name = "pruned-1";
    create_labelled(&cluster, name, "pruned", "a").await;
    let line = tokio::task::block_in_place(|| {
        kopf.wait_for_line("Merge-patching finished with inconsistencies", DEADLINE)
    })
    .unwrap();
    assert!(
        line.contains(&format!("[{NS}/{name}]")) && line.contains(r#""pruned_result"],{"lost":true},null]"#),
        "{line}"
    );
    let obj = cluster.get(name).unwrap();
    assert_eq!(obj.pointer("/status/pruned_result"), None, "{obj}");
    stop(kopf);
}

/// Kopf's `process.ultimate_exiting_timeout`: a graceful exit stuck in a 60 s cleanup
/// handler ends by force after the 1 s timeout, with exit status 137.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_exit_is_forced_after_the_ultimate_timeout() {
    let cluster = Cluster::start().await;
    let envs = [
        ("KOPF_FIDELITY_EXIT_TIMEOUT", "1".to_owned()),
        ("KOPF_FIDELITY_CLEANUP_SLEEP", "60".to_owned()),
    ];
    let mut kopf = cluster.spawn_kopf(&fixture(PLUGIN), &envs);
    kopf.signal("TERM").unwrap();
    let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
    assert_eq!(status.code(), Some(137), "{status}\n{}", kopf.lines().join("\n"));
    assert!(
        kopf.lines().iter().any(|l| l.contains("exiting by force")),
        "{}",
        kopf.lines().join("\n")
    );
}

const SELECTORS_PLUGIN: &str = "fixture-label-selectors";

/// A KopfExample with these labels.
async fn create_with_labels(cluster: &Cluster, name: &str, labels: Value) {
    let mut body = Cluster::example(name, "a");
    body["metadata"]["labels"] = labels;
    cluster.emu.create_object(body).await.unwrap();
}

/// Replaces an object's labels (not counted).
async fn relabel(cluster: &Cluster, name: &str, labels: Value) {
    let mut obj = cluster.get(name).expect("the object to relabel exists");
    obj["metadata"]["labels"] = labels;
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    obj.as_object_mut().unwrap().remove("status");
    cluster.emu.apply_object(obj).await.unwrap();
}

/// Label filters go to the API server (Kopf #1311): the handlers of `fixture-label-selectors`
/// all require `app` to be `web` or `db`, so kopf lists and watches with `app in (db,web)`
/// and never receives the unrelated objects, nor their changes (counted by the emulator);
/// the filters the handlers do not share (`tier`) and callbacks (`size`) still decide
/// client-side. An object that leaves the selection (the server says `DELETED`) is let go
/// of: its finalizer comes off, as for an object that no longer matches any handler; also
/// when it left while the watch was down (it is missing from the re-listing: re-read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_filters_are_sent_to_the_server() {
    let cluster = Cluster::start().await;
    let plugin = fixture(SELECTORS_PLUGIN);
    const OTHERS: usize = 20;
    for i in 0..OTHERS {
        let labels = if i % 2 == 0 {
            json!({"app": "other"})
        } else {
            json!({})
        };
        create_with_labels(&cluster, &format!("other-{i}"), labels).await;
    }
    for name in ["web-1", "web-2", "web-3"] {
        create_with_labels(&cluster, name, json!({"app": "web", "tier": "front"})).await;
    }
    create_with_labels(&cluster, "db-big", json!({"app": "db", "size": "big"})).await;
    create_with_labels(&cluster, "db-small", json!({"app": "db", "size": "small"})).await;
    cluster.emu.reset_counters();

    let mut kopf = cluster.spawn_kopf_with(&["--standalone", "--verbose"], &plugin, &[]);
    tokio::task::block_in_place(|| kopf.wait_for_line("with the label selector app in (db,web)", DEADLINE))
        .unwrap();
    for name in ["web-1", "web-2", "web-3"] {
        cluster
            .wait_obj(name, "the web handler's result", Some(&kopf), |o| {
                (o?.pointer("/status/web")? == &json!({"app": "web"})).then_some(())
            })
            .await;
    }
    let big = cluster
        .wait_obj("db-big", "the db handlers' results", Some(&kopf), |o| {
            let o = o?;
            (o.pointer("/status/db").is_some() && o.pointer("/status/db_big").is_some()).then(|| o.clone())
        })
        .await;
    assert_eq!(big["status"]["db_big"], json!({"size": "big"}), "{big}");
    let small = cluster
        .wait_obj("db-small", "the db handler's result", Some(&kopf), |o| {
            let o = o?;
            o.pointer("/status/db").map(|_| o.clone())
        })
        .await;
    assert_eq!(
        small.pointer("/status/db_big"),
        None,
        "the size callback ruled it out: {small}"
    );
    for i in 0..OTHERS {
        let other = cluster.get(&format!("other-{i}")).unwrap();
        assert!(
            other.pointer("/status").is_none() && !reactor_common::has_finalizer(&other),
            "{other}"
        );
    }

    // Changes of the unrelated objects never reach the operator: the change of a web object
    // made after them is handled, and the objects sent to it meanwhile are that one's events.
    let counted = !cluster.emu.is_real();
    let before = cluster.emu.counters().objects("kopfexamples");
    for i in 0..OTHERS {
        cluster.set_field(&format!("other-{i}"), "b").await;
    }
    cluster.set_field("web-1", "b").await;
    cluster
        .wait_obj("web-1", "the update handled", Some(&kopf), |o| {
            (o?.pointer("/status/web_updated/field")? == "b").then_some(())
        })
        .await;
    if counted {
        // The operator may see the change through a re-read before its watch event is
        // written; the stream is in order, so the unrelated changes would come before it.
        let sent = || cluster.emu.counters().objects("kopfexamples") - before;
        cluster
            .wait_until("the update's watch event", DEADLINE, || sent() >= 1)
            .await;
        let sent = sent();
        assert!(
            (1..OTHERS as u64).contains(&sent),
            "{sent} objects sent for 1 relevant and {OTHERS} unrelated changes"
        );
    }

    lets_go_of_objects_leaving_the_selection(&cluster, &kopf).await;
    // A real deletion of a selected object still runs its deletion handler and ends.
    cluster.delete("web-3").await;
    cluster
        .wait_obj("web-3", "the object deleted", Some(&kopf), |o| {
            o.is_none().then_some(())
        })
        .await;
    stop(kopf);
}

/// An object leaving the selection (`web-2` live, `web-1` while the watch is down) has its
/// finalizer released.
async fn lets_go_of_objects_leaving_the_selection(cluster: &Cluster, kopf: &KopfProcess) {
    // Leaving the selection: the server says DELETED, the object lives on without a
    // handler that matches it, so its finalizer comes off.
    assert!(reactor_common::has_finalizer(&cluster.get("web-2").unwrap()));
    relabel(cluster, "web-2", json!({"app": "gone", "tier": "front"})).await;
    cluster
        .wait_obj("web-2", "the finalizer released", Some(kopf), |o| {
            (!reactor_common::has_finalizer(o?)).then_some(())
        })
        .await;
    // Leaving the selection while the watch is down: the re-listing (after 410 Gone) lacks
    // the object; it is re-read, lives on, and is let go of as well (emulator faults).
    if let Some(emulator) = cluster.emu.emulator() {
        let faults = emulator.faults();
        let watches = kopf_testing::FaultMatch::verb_resource("watch", "kopfexamples");
        faults.fail_next(1_000, watches, kopf_testing::FaultKind::Status { code: 500 });
        let refused = cluster.emu.counters().status(500);
        faults.close_watches();
        // The watch is closed once its reconnection is refused.
        cluster
            .wait_until("a refused watch", DEADLINE, || {
                cluster.emu.counters().status(500) > refused
            })
            .await;
        relabel(cluster, "web-1", json!({"tier": "front"})).await;
        faults.expire_history();
        faults.clear();
        cluster
            .wait_obj(
                "web-1",
                "the finalizer released after a re-listing",
                Some(kopf),
                |o| (!reactor_common::has_finalizer(o?)).then_some(()),
            )
            .await;
    }
}

/// Kopf's callable `initial_delay` of daemons: a function of the object (here its
/// `spec.delay`), asked when the daemon starts. Without it both daemons start at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callable_initial_delay_is_asked_per_object() {
    let cluster = Cluster::start().await;
    let (record, envs) = record_env(&cluster);
    let kopf = cluster.spawn_kopf(&fixture(PLUGIN), &envs);
    let created_ms = now_ms();
    for (name, delay) in [("late-0", 0.0), ("late-3", 3.0)] {
        let mut body = Cluster::example(name, "a");
        body["metadata"]["labels"] = json!({"fidelity": "late"});
        body["spec"]["delay"] = json!(delay);
        cluster.emu.create_object(body).await.unwrap();
    }
    let started = |name: &'static str| {
        let record = record.clone();
        move || !runs(&record, "late", name).is_empty()
    };
    cluster
        .wait_until("the undelayed daemon started", DEADLINE, started("late-0"))
        .await;
    cluster
        .wait_until("the delayed daemon started", DEADLINE, started("late-3"))
        .await;
    let (prompt, late) = (
        runs(&record, "late", "late-0")[0].at_ms,
        runs(&record, "late", "late-3")[0].at_ms,
    );
    assert!(
        late >= created_ms + 3_000,
        "the 3 s daemon started {} ms after its creation",
        late - created_ms
    );
    assert!(
        prompt < late,
        "the undelayed daemon started after the delayed one"
    );
    stop(kopf);
}
