//! Kopf's callable resource selectors end to end: the real `kopf` binary asks the
//! `callable-selectors` fixture's functions, per discovered resource, which resources its
//! handlers serve (never events, as in Kopf).

mod reactor_common;

use reactor_common::{Cluster, DEADLINE, NS, fixture};
use serde_json::json;

fn records(cluster: &Cluster) -> Vec<String> {
    std::fs::read_to_string(cluster.path("record"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn configmap(cluster: &Cluster, name: &str) {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}});
    cluster.emu.create_object(body).await.unwrap();
}

/// A function selecting kopfexamples serves them (its create handler runs, with the
/// resource it was asked about); one that says no serves nothing; a closure selecting
/// configmaps and events serves configmaps, and events are never offered to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callables_select_the_resources_they_accept() {
    let cluster = Cluster::start().await;
    let plugin = fixture("fixture-callable-selectors");
    let record = cluster.path("record").display().to_string();
    let kopf = cluster.spawn_kopf_with(
        &["--standalone", "--verbose"],
        &plugin,
        &[("KOPF_SELECTORS_RECORD", record)],
    );
    cluster.create("chosen", "a").await;
    let obj = cluster
        .wait_obj("chosen", "the created handler's result", Some(&kopf), |o| {
            let o = o?;
            o.pointer("/status/created").map(|_| o.clone())
        })
        .await;
    assert_eq!(
        obj["status"]["created"],
        json!({"plural": "kopfexamples"}),
        "{obj}"
    );
    assert!(obj.pointer("/status/never").is_none(), "{obj}");

    configmap(&cluster, "cm-1").await;
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "ev-1", "namespace": NS},
        "involvedObject": {"kind": "ConfigMap", "name": "cm-1", "namespace": NS},
        "reason": "Test", "message": "not for handlers",
    });
    cluster.emu.create_object(event).await.unwrap();
    // Anything about the event would come before this configmap's record on the same
    // operator; the event stream is separate, so the record is waited for with a deadline.
    configmap(&cluster, "cm-2").await;
    cluster
        .wait_until("both configmaps seen", DEADLINE, || {
            let lines = records(&cluster);
            lines.iter().any(|l| l == "configmaps cm-1") && lines.iter().any(|l| l == "configmaps cm-2")
        })
        .await;
    let lines = kopf.lines();
    let serving = |plural: &str| lines.iter().any(|l| l.contains(&format!("Serving {plural}.")));
    assert!(
        serving("configmaps") && serving("kopfexamples"),
        "{}",
        lines.join("\n")
    );
    assert!(
        !serving("events"),
        "events are never offered: {}",
        lines.join("\n")
    );
    assert!(
        !records(&cluster).iter().any(|l| l.starts_with("events ")),
        "{:?}",
        records(&cluster)
    );
    let mut kopf = kopf;
    tokio::task::block_in_place(|| kopf.stop_gracefully(DEADLINE)).unwrap();
}
