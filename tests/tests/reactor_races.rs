//! End-to-end: changes that land while handlers run, i.e. between the operator's read of
//! the object and its patch. The patch response then carries someone else's change, and
//! the echo of that patch is the last event the operator sees: the change must still be
//! handled (Kopf processes every event, so it does).
//!
//! The handlers of `fixture-lifecycle-basic` are held at a gate (`KOPF_LIFECYCLE_HOLD`)
//! until the test has made its change, so the race is forced, not hoped for.

mod reactor_common;

use std::path::Path;

use kopf_testing::{FaultKind, FaultMatch};
use reactor_common::{
    Cluster, DEADLINE, fixture, has_finalizer, last_handled, progress_annotations, read_records,
};
use serde_json::json;

/// Starts the operator with the gate at `dir`, creates `name`, and waits until a create
/// handler is held at the gate (the finalizer is on by then).
async fn create_and_hold(cluster: &Cluster, name: &str, dir: &Path) -> kopf_e2e::KopfProcess {
    std::fs::create_dir_all(dir).unwrap();
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-lifecycle-basic"),
        &[
            ("KOPF_LIFECYCLE_HOLD", dir.display().to_string()),
            (
                "KOPF_LIFECYCLE_RECORD",
                cluster.path("record.txt").display().to_string(),
            ),
        ],
    );
    cluster.create(name, "one").await;
    cluster
        .wait_until("a create handler held at the gate", DEADLINE, || {
            dir.join("started").exists()
        })
        .await;
    kopf
}

/// Handler runs per (id, reason), for `name`.
fn runs(cluster: &Cluster) -> Vec<(String, String, usize)> {
    read_records(&cluster.path("record.txt"))
        .into_iter()
        .map(|((id, _, _, reason), n)| (id, reason, n))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_during_the_handlers_is_handled_after_them() {
    let cluster = Cluster::start().await;
    let gate = cluster.path("gate");
    let kopf = create_and_hold(&cluster, "kex-race", &gate).await;

    cluster.set_field("kex-race", "two").await;
    std::fs::write(gate.join("release"), b"").unwrap();

    let obj = cluster
        .wait_obj("kex-race", "the change to be handled", Some(&kopf), |o| {
            let o = o?;
            (last_handled(o).and_then(|b| b.pointer("/spec/field").cloned()) == Some(json!("two")))
                .then(|| o.clone())
        })
        .await;
    assert_eq!(
        obj.pointer("/status/field_fn~1spec.field"),
        Some(&json!({"old": "one", "new": "two"})),
        "{obj}"
    );
    assert_eq!(
        obj.pointer("/status/update_fn"),
        Some(&json!({"updated": true})),
        "{obj}"
    );
    let expected: Vec<(String, String, usize)> = [
        ("create_fn", "create"),
        ("field_fn/spec.field", "create"),
        ("field_fn/spec.field", "update"),
        ("update_fn", "update"),
    ]
    .iter()
    .map(|(id, reason)| (id.to_string(), reason.to_string(), 1))
    .collect();
    assert_eq!(runs(&cluster), expected, "each handler exactly once");
    drop(kopf);
    cluster.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_during_the_handlers_is_handled_after_them() {
    let cluster = Cluster::start().await;
    let gate = cluster.path("gate");
    let kopf = create_and_hold(&cluster, "kex-race", &gate).await;

    cluster.delete("kex-race").await;
    let held = cluster.get("kex-race").expect("the finalizer holds the object");
    assert!(has_finalizer(&held), "{held}");
    std::fs::write(gate.join("release"), b"").unwrap();

    wait_released(&cluster, "kex-race", &kopf).await;
    let expected: Vec<(String, String, usize)> = [
        ("create_fn", "create"),
        ("delete_fn", "delete"),
        ("field_fn/spec.field", "create"),
    ]
    .iter()
    .map(|(id, reason)| (id.to_string(), reason.to_string(), 1))
    .collect();
    assert_eq!(runs(&cluster), expected, "each handler exactly once");
    drop(kopf);
    cluster.emu.shutdown().await;
}

/// Starts the operator (no gate), creates `name` and waits until its creation is fully
/// handled: after that, the operator sends nothing until the object changes.
async fn create_and_settle(cluster: &Cluster, name: &str) -> kopf_e2e::KopfProcess {
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-lifecycle-basic"),
        &[(
            "KOPF_LIFECYCLE_RECORD",
            cluster.path("record.txt").display().to_string(),
        )],
    );
    cluster.create(name, "one").await;
    cluster
        .wait_obj(name, "the creation to be handled", Some(&kopf), |o| {
            let o = o?;
            (last_handled(o).is_some() && has_finalizer(o) && progress_annotations(o).is_empty())
                .then_some(())
        })
        .await;
    kopf
}

/// Refuses the next `n` patches of the object as a failed `test` of its resourceVersion
/// does (the API server answers 422; 409 for a stale `resourceVersion` in the body).
fn refuse_patches(cluster: &Cluster, name: &str, n: usize, code: u16) {
    let matcher = FaultMatch {
        verb: Some("patch".into()),
        resource: Some("kopfexamples".into()),
        name: Some(name.into()),
        ..FaultMatch::default()
    };
    cluster
        .emu
        .expect_emulator("refusing patches")
        .faults()
        .fail_next(n, matcher, FaultKind::Status(code));
}

async fn wait_released(cluster: &Cluster, name: &str, kopf: &kopf_e2e::KopfProcess) {
    cluster
        .wait_obj(name, "the object to be released and gone", Some(kopf), |o| {
            o.is_none().then_some(())
        })
        .await;
}

fn patch_count(cluster: &Cluster) -> u64 {
    cluster.emu.counters().get("patch", "kopfexamples")
}

fn delete_runs(cluster: &Cluster) -> usize {
    runs(cluster)
        .into_iter()
        .filter(|(id, reason, _)| id == "delete_fn" && reason == "delete")
        .map(|(_, _, n)| n)
        .sum()
}

// The finalizer's removal is the only request of a deletion (nothing else is written on an
// object that vanishes with it). Refused because the object changed meanwhile (a timer's
// status patch, another controller), it must be decided again on the re-read object at
// once: the echoes up to that state count as our own, so no later event would bring the
// object back, and it stayed undeleted for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_finalizer_removal_is_decided_again_on_the_fresh_object() {
    // Emulator-only: refusals are injected faults.
    let cluster = Cluster::start_emulator().await;
    let kopf = create_and_settle(&cluster, "kex-refused").await;
    let patches_before = patch_count(&cluster);

    refuse_patches(&cluster, "kex-refused", 1, 409);
    cluster.delete("kex-refused").await;
    wait_released(&cluster, "kex-refused", &kopf).await;

    let patches = patch_count(&cluster) - patches_before;
    assert_eq!(patches, 2, "the refused removal and its repetition, nothing else");
    // The delete cause's record went with the refused request: its handler runs again,
    // at least once as after any failed write.
    assert_eq!(delete_runs(&cluster), 2);
    drop(kopf);
    cluster.emu.shutdown().await;
}

// A patch refused again and again (an object changing all the time, or a 422 that is no
// conflict) is not re-sent in a tight loop: after a few immediate repetitions the object is
// throttled like after any failed patch, longer each time (Kopf's error delays 1, 1, 2, ...
// s), and handled once the refusals stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_refused_again_and_again_is_throttled_longer_each_time() {
    // Emulator-only: refusals are injected faults.
    let cluster = Cluster::start_emulator().await;
    let mut kopf = create_and_settle(&cluster, "kex-refused").await;
    let patches_before = patch_count(&cluster);
    let reads_before = cluster.emu.counters().get("get", "kopfexamples");

    // 3 processing runs of 4 refusals each (the last one throttled for 2 s), then 2 more.
    refuse_patches(&cluster, "kex-refused", 14, 422);
    cluster.delete("kex-refused").await;
    tokio::task::block_in_place(|| {
        kopf.wait_for_line("the patch was refused 4 times in a row", DEADLINE)?;
        kopf.wait_for_line("throttling for 1s", DEADLINE)?;
        kopf.wait_for_line("throttling for 2s", DEADLINE)
    })
    .expect("throttled after 4 refusals, longer the third time");
    wait_released(&cluster, "kex-refused", &kopf).await;

    let patches = patch_count(&cluster) - patches_before;
    assert_eq!(patches, 15, "14 refused, then the removal");
    let reads = cluster.emu.counters().get("get", "kopfexamples") - reads_before;
    assert_eq!(
        reads, 14,
        "one re-read per refusal, none more before a throttled retry"
    );
    drop(kopf);
    cluster.emu.shutdown().await;
}
