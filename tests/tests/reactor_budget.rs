//! API budget of the reactor, asserted with the emulator's request counters.
//!
//! One object's create → update → delete lifecycle with create, update, delete and a
//! `spec.field` handler, each returning a dict, on a CRD with a status subresource.
//! Python Kopf 1.45 spends 11 PATCH requests on it; kopf must spend at most 6, and more
//! handlers of the same cause must not add requests when they all succeed at once.
//!
//! The test drives the object through the emulator's in-process API (not counted), so
//! every counted request is the operator's.

mod reactor_common;

use reactor_common::{Cluster, FINALIZER, has_finalizer, last_handled};
use serde_json::json;

/// PATCH requests (body, status) the operator spent on one lifecycle of `plugin`.
async fn lifecycle_patches(plugin: &str) -> (u64, u64) {
    let cluster = Cluster::start().await;
    // On a real server, /metrics counts every user's PATCHes; the test itself only creates,
    // replaces and deletes, so its PATCH count must equal the operator's from the audit log.
    let metric_patches = |c: &Cluster| {
        Some(
            c.emu.metrics_request_total("PATCH", "kopfexamples", "")?
                + c.emu.metrics_request_total("PATCH", "kopfexamples", "status")?,
        )
    };
    let metric_patches_before = metric_patches(&cluster);
    let kopf = cluster.spawn_kopf(&reactor_common::fixture(plugin), &[]);
    let name = "kex-budget";
    cluster.create(name, "v1").await;
    let created = cluster
        .wait_obj(
            name,
            "create results, finalizer and diff-base",
            Some(&kopf),
            |o| {
                let o = o?;
                (o.pointer("/status/create_fn") == Some(&json!({"created": true}))
                    && o.pointer("/status/field_fn~1spec.field/new") == Some(&json!("v1"))
                    && has_finalizer(o)
                    && last_handled(o).and_then(|b| b.pointer("/spec/field").cloned()) == Some(json!("v1")))
                .then(|| o.clone())
            },
        )
        .await;
    assert!(created.pointer("/status/update_fn").is_none(), "{created}");

    cluster.set_field(name, "v2").await;
    let updated = cluster
        .wait_obj(name, "update results and the new diff-base", Some(&kopf), |o| {
            let o = o?;
            (o.pointer("/status/update_fn") == Some(&json!({"updated": true}))
                && o.pointer("/status/field_fn~1spec.field") == Some(&json!({"old": "v1", "new": "v2"}))
                && last_handled(o).and_then(|b| b.pointer("/spec/field").cloned()) == Some(json!("v2")))
            .then(|| o.clone())
        })
        .await;
    assert!(has_finalizer(&updated), "{updated}");

    cluster.delete(name).await;
    cluster
        .wait_obj(name, "the object to be gone", Some(&kopf), |o| {
            o.is_none().then_some(())
        })
        .await;

    let counters = cluster.emu.counters();
    if let (Some(before), Some(after)) = (metric_patches_before, metric_patches(&cluster)) {
        assert_eq!(
            after - before,
            counters.get("patch", "kopfexamples") + counters.get("patch", "kopfexamples/status"),
            "PATCHes in the server's /metrics vs the operator's in its audit log: {counters:?}"
        );
    }
    if cluster.emu.is_real() {
        // Aggregated discovery: everything in the requests for /api and /apis.
        let discovery: u64 = counters
            .by_verb_resource
            .iter()
            .filter(|(key, _)| key.starts_with("get /api"))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(discovery, 2, "discovery requests: {counters:?}");
    }
    eprintln!("{plugin}: operator requests after one lifecycle:");
    for (k, n) in &counters.by_verb_resource {
        eprintln!("  {n:>5}  {k}");
    }
    // No touch-dummy writes, and (all handlers succeeding at once) no progress records:
    // the records Kopf would write and purge cancel out. (The emulator records every
    // written body; on a real server the request counts below are the check.)
    if !cluster.emu.is_real() {
        assert_no_touch_or_progress(&cluster);
    }
    assert_eq!(counters.status(409), 0, "conflicts: {counters:?}");
    let _ = FINALIZER;
    drop(kopf);
    cluster.emu.shutdown().await;
    (
        counters.get("patch", "kopfexamples"),
        counters.get("patch", "kopfexamples/status"),
    )
}

fn assert_no_touch_or_progress(cluster: &Cluster) {
    assert!(
        !cluster.writes.any_annotation_ending("/touch-dummy"),
        "a touch-dummy annotation was written"
    );
    for id in ["create_fn", "update_fn", "delete_fn", "create_more"] {
        assert!(
            !cluster
                .writes
                .any_annotation_ending(&format!("kopf.zalando.org/{id}")),
            "a progress record of {id} was written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lifecycle_costs_at_most_six_patches() {
    let (body, status) = lifecycle_patches("fixture-lifecycle-basic").await;
    eprintln!(
        "PATCH requests: {body} body + {status} status = {}",
        body + status
    );
    // finalizer; create results + diff-base; update results + diff-base; finalizer release.
    assert!(
        body + status <= 6,
        "{body} body + {status} status PATCH requests (Kopf: 11)"
    );
    assert!(status >= 2, "results must land in /status: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_handlers_of_a_cause_add_no_requests() {
    let basic = lifecycle_patches("fixture-lifecycle-basic").await;
    let multi = lifecycle_patches("fixture-lifecycle-multi").await;
    assert_eq!(
        multi, basic,
        "two more create handlers changed the PATCH requests (body, status)"
    );
}
