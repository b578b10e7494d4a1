//! End-to-end: Kopf's `patch.fns` (Kopf 1.44) with the real `kopf` binary and the
//! `fixture-patch-fns` plugin against the emulator: a handler's body transformation is
//! applied by its plugin on the freshest body after the merge patch and sent as JSON
//! patches (body and `/status` apart) guarded by a `test` of the resourceVersion; when the
//! object changed in between (422), it is applied again on the re-read object. Python Kopf
//! runs the twin operator on the same emulator for comparison.

mod reactor_common;

use reactor_common::{Cluster, DEADLINE, NS, fixture, last_handled};
use serde_json::{Value, json};

async fn create(cluster: &Cluster, name: &str) {
    cluster
        .emu
        .create_object(json!({
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfExample",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"items": ["a"], "field": "initial"},
        }))
        .await
        .unwrap();
}

/// Waits until the transformation landed and the diff-base took it in (the cycle after it).
async fn wait_transformed(cluster: &Cluster, name: &str, kopf: &kopf_e2e::KopfProcess) -> Value {
    cluster
        .wait_obj(name, "the transformation and its diff-base", Some(kopf), |o| {
            let o = o?;
            let base = last_handled(o)?;
            (o["status"]["appended"] == json!(2) && base["spec"]["items"] == json!(["a", "added"]))
                .then(|| o.clone())
        })
        .await
}

/// How often the fixture's functions ran: `transform` (the create handler's) or `tick`
/// (the timer's).
fn calls(path: &std::path::Path, which: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| *line == which)
        .count()
}

fn transform_calls(path: &std::path::Path) -> usize {
    calls(path, "transform")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_patch_fns_go_as_json_patches_after_the_merge_patch() {
    let cluster = Cluster::start().await;
    let record = cluster.path("record.txt");
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-patch-fns"),
        &[("KOPF_PATCH_FNS_RECORD", record.display().to_string())],
    );
    create(&cluster, "kex-fns").await;
    let done = wait_transformed(&cluster, "kex-fns", &kopf).await;
    assert_eq!(done["spec"]["items"], json!(["a", "added"]), "{done}");
    assert_eq!(transform_calls(&record), 1);
    if !cluster.emu.is_real() {
        // Body: the merge patch (diff-base), the JSON patch (spec.items), and the next
        // cycle's diff-base (the spec changed); /status: the JSON patch alone.
        let counters = cluster.emu.counters();
        assert_eq!(counters.get("patch", "kopfexamples"), 3, "{counters:?}");
        assert_eq!(counters.get("patch", "kopfexamples/status"), 1, "{counters:?}");
        assert_eq!(counters.status(422), 0, "{counters:?}");
    }
    drop(kopf);
    cluster.emu.shutdown().await;
}

/// Python Kopf (PyPI 1.45) with the twin operator (`tests/python/patch_fns_operator.py`):
/// the same object and the same PATCH requests as kopf's. Needs Python Kopf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kopfs_patch_fns_make_the_same_object() {
    if !kopf_e2e::python_kopf_available() {
        return;
    }
    let cluster = Cluster::start().await;
    let (record, log) = (cluster.path("record.txt"), cluster.path("py.log"));
    let mut python = cluster.spawn_python_kopf(
        "patch_fns_operator.py",
        &[("KOPF_PATCH_FNS_RECORD", &record)],
        &log,
    );
    create(&cluster, "kex-py").await;
    let done = cluster
        .wait_obj(
            "kex-py",
            "Python Kopf's transformation and diff-base",
            None,
            |o| {
                let o = o?;
                let base = last_handled(o)?;
                (o["status"]["appended"] == json!(2) && base["spec"]["items"] == json!(["a", "added"]))
                    .then(|| o.clone())
            },
        )
        .await;
    let counters = cluster.emu.counters();
    let _ = python.kill();
    let _ = python.wait();
    assert_eq!(done["spec"]["items"], json!(["a", "added"]), "{done}");
    assert_eq!(transform_calls(&record), 1);
    if !cluster.emu.is_real() {
        // As kopf: the merge patch, the JSON patch, the next cycle's diff-base; /status: the
        // JSON patch alone.
        assert_eq!(counters.get("patch", "kopfexamples"), 3, "{counters:?}");
        assert_eq!(counters.get("patch", "kopfexamples/status"), 1, "{counters:?}");
        assert_eq!(counters.status(422), 0, "{counters:?}");
    }
    cluster.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_fns_refused_for_a_changed_object_are_applied_again_on_the_fresh_one() {
    let cluster = Cluster::start().await;
    let (record, gate) = (cluster.path("record.txt"), cluster.path("gate"));
    std::fs::create_dir_all(&gate).unwrap();
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-patch-fns"),
        &[
            ("KOPF_PATCH_FNS_RECORD", record.display().to_string()),
            ("KOPF_PATCH_FNS_GATE", gate.display().to_string()),
        ],
    );
    create(&cluster, "kex-race").await;
    // The transformation is running: the merge patch is done, the JSON patch not yet.
    cluster
        .wait_until("the transformation to start", DEADLINE, || {
            gate.join("called").exists()
        })
        .await;
    cluster.set_field("kex-race", "changed meanwhile").await;
    std::fs::write(gate.join("go"), b"").unwrap();

    let done = wait_transformed(&cluster, "kex-race", &kopf).await;
    assert_eq!(
        done["spec"],
        json!({"items": ["a", "added"], "field": "changed meanwhile"}),
        "applied once, on the changed object: {done}"
    );
    assert_eq!(transform_calls(&record), 2, "refused once, then applied again");
    if !cluster.emu.is_real() {
        let counters = cluster.emu.counters();
        assert_eq!(
            counters.status(422),
            1,
            "the test of the resourceVersion failed once: {counters:?}"
        );
    }
    drop(kopf);
    cluster.emu.shutdown().await;
}

/// A timer's refused transformation goes again with its next tick (Kopf carries a
/// daemon's or timer's remaining patch over); the timer asks for it on its first tick only,
/// so without the carry-over the item never appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timers_refused_patch_fns_go_again_with_its_next_tick() {
    let cluster = Cluster::start().await;
    let (record, gate) = (cluster.path("record.txt"), cluster.path("tick-gate"));
    std::fs::create_dir_all(&gate).unwrap();
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-patch-fns"),
        &[
            ("KOPF_PATCH_FNS_RECORD", record.display().to_string()),
            ("KOPF_PATCH_FNS_TICK_GATE", gate.display().to_string()),
        ],
    );
    cluster
        .emu
        .create_object(json!({
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfExample",
            "metadata": {"name": "kex-tick", "namespace": NS, "labels": {"timer": "yes"}},
            "spec": {"items": ["a"], "field": "initial"},
        }))
        .await
        .unwrap();
    // The first tick's transformation runs: change the object under it.
    cluster
        .wait_until("the timer's transformation to start", DEADLINE, || {
            gate.join("called").exists()
        })
        .await;
    cluster.set_field("kex-tick", "changed meanwhile").await;
    std::fs::write(gate.join("go"), b"").unwrap();

    let done = cluster
        .wait_obj("kex-tick", "the timer's item", Some(&kopf), |o| {
            let o = o?;
            o["spec"]["items"]
                .as_array()?
                .contains(&json!("ticked"))
                .then(|| o.clone())
        })
        .await;
    let items = done["spec"]["items"].as_array().unwrap();
    assert_eq!(
        items.iter().filter(|i| **i == json!("ticked")).count(),
        1,
        "applied once: {done}"
    );
    assert_eq!(done["spec"]["field"], "changed meanwhile", "{done}");
    assert!(calls(&record, "tick") >= 2, "refused, then run again: {done}");
    if !cluster.emu.is_real() {
        let counters = cluster.emu.counters();
        assert!(counters.status(422) >= 1, "the refused JSON patch: {counters:?}");
    }
    drop(kopf);
    cluster.emu.shutdown().await;
}

/// The operator's own writes (here the create handler's JSON patch of `status.appended`,
/// whose echo the reactor skips) reach a timer's live body, as Kopf's live body follows
/// every event; nothing else changes the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timers_body_follows_the_operators_own_writes() {
    let cluster = Cluster::start().await;
    let record = cluster.path("record.txt");
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-patch-fns"),
        &[("KOPF_PATCH_FNS_RECORD", record.display().to_string())],
    );
    cluster
        .emu
        .create_object(json!({
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfExample",
            "metadata": {"name": "kex-live", "namespace": NS, "labels": {"timer": "yes"}},
            "spec": {"items": ["a"], "field": "initial"},
        }))
        .await
        .unwrap();
    wait_transformed(&cluster, "kex-live", &kopf).await;
    // The ticks after the write landed (the first may have begun before) see it.
    let ticks = |r: &std::path::Path| calls(r, "sees-appended") + calls(r, "not-appended");
    let before = ticks(&record);
    cluster
        .wait_until("three more ticks", DEADLINE, || ticks(&record) >= before + 3)
        .await;
    let lines: Vec<String> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with("appended"))
        .map(str::to_owned)
        .collect();
    assert!(
        lines[before + 1..].iter().all(|l| l == "sees-appended"),
        "ticks after the operator's write still saw the body before it: {lines:?}"
    );
    drop(kopf);
    cluster.emu.shutdown().await;
}
