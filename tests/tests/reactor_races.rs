//! End-to-end: changes that land while handlers run, i.e. between the operator's read of
//! the object and its patch. The patch response then carries someone else's change, and
//! the echo of that patch is the last event the operator sees: the change must still be
//! handled (Kopf processes every event, so it does).
//!
//! The handlers of `fixture-lifecycle-basic` are held at a gate (`KOPF_LIFECYCLE_HOLD`)
//! until the test has made its change, so the race is forced, not hoped for.

mod reactor_common;

use std::path::Path;

use reactor_common::{Cluster, DEADLINE, fixture, has_finalizer, last_handled, read_records};
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

    cluster
        .wait_obj(
            "kex-race",
            "the object to be released and gone",
            Some(&kopf),
            |o| o.is_none().then_some(()),
        )
        .await;
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
