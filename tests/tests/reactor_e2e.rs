//! End-to-end: the real `kopf` binary and a real plugin (`fixture-lifecycle-multi`)
//! against the emulator, driven through `kubectl`: statuses, annotations, finalizers,
//! events and deletion, and each handler run exactly once.

mod reactor_common;

use std::process::Command;

use reactor_common::{
    Cluster, DEADLINE, fixture, has_finalizer, last_handled, progress_annotations, read_records,
};
use serde_json::{Value, json};

fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let out = tokio::task::block_in_place(|| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(args)
            .output()
    })
    .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // split under issue 19
async fn kubectl_driven_lifecycle() {
    let cluster = Cluster::start().await;
    let record = cluster.path("record.txt");
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-lifecycle-multi"),
        &[("KOPF_LIFECYCLE_RECORD", record.display().to_string())],
    );
    let name = "kex-e2e";
    let manifest = cluster.path("obj.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: kopf.dev/v1\nkind: KopfExample\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  field: v1\n"
        ),
    )
    .unwrap();
    kubectl(&cluster, &["apply", "-f", manifest.to_str().unwrap()]);

    cluster
        .wait_obj(name, "all create handlers done", Some(&kopf), |o| {
            let o = o?;
            (o.pointer("/status/create_gated").is_some() && last_handled(o).is_some()).then_some(())
        })
        .await;
    let obj: Value = serde_json::from_str(&kubectl(&cluster, &["get", "kex", name, "-o", "json"])).unwrap();
    assert_eq!(
        obj.pointer("/status/create_fn"),
        Some(&json!({"created": true})),
        "{obj}"
    );
    assert_eq!(
        obj.pointer("/status/create_more"),
        Some(&json!({"more": true})),
        "{obj}"
    );
    assert_eq!(
        obj.pointer("/status/create_gated"),
        Some(&json!({"gated": true})),
        "{obj}"
    );
    assert_eq!(
        obj.pointer("/status/field_fn~1spec.field/new"),
        Some(&json!("v1")),
        "{obj}"
    );
    assert!(has_finalizer(&obj), "{obj}");
    assert_eq!(progress_annotations(&obj), Vec::<String>::new(), "{obj}");
    let base = last_handled(&obj).unwrap();
    assert_eq!(base.get("spec"), Some(&json!({"field": "v1"})), "{base}");
    assert!(base.get("status").is_none(), "{base}");

    // The handler's event, seen through kubectl.
    let start = std::time::Instant::now();
    loop {
        let events: Value = serde_json::from_str(&kubectl(
            &cluster,
            &["get", "events", "-n", "default", "-o", "json"],
        ))
        .unwrap();
        let found = events["items"].as_array().unwrap().iter().any(|e| {
            e["reason"] == "CreateMore"
                && e["involvedObject"]["name"] == name
                && e["involvedObject"]["kind"] == "KopfExample"
                && e["type"] == "Normal"
        });
        if found {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "no CreateMore event: {events}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    kubectl(
        &cluster,
        &[
            "patch",
            "kex",
            name,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"field":"v2"}}"#,
        ],
    );
    let updated = cluster
        .wait_obj(name, "update handlers done", Some(&kopf), |o| {
            let o = o?;
            (last_handled(o).and_then(|b| b.pointer("/spec/field").cloned()) == Some(json!("v2")))
                .then(|| o.clone())
        })
        .await;
    assert_eq!(
        updated.pointer("/status/update_fn"),
        Some(&json!({"updated": true})),
        "{updated}"
    );
    assert_eq!(
        updated.pointer("/status/field_fn~1spec.field"),
        Some(&json!({"old": "v1", "new": "v2"})),
        "{updated}"
    );
    assert!(has_finalizer(&updated), "{updated}");

    // kubectl waits for the deletion to finish (the operator releases its finalizer).
    kubectl(&cluster, &["delete", "kex", name, "--timeout=60s"]);
    assert!(cluster.get(name).is_none(), "the object is still there");

    let runs: Vec<(String, String, usize)> = read_records(&record)
        .into_iter()
        .map(|((id, _, _, reason), n)| (id, reason, n))
        .collect();
    let expected: Vec<(String, String, usize)> = [
        ("create_fn", "create"),
        ("create_gated", "create"),
        ("create_more", "create"),
        ("delete_fn", "delete"),
        ("field_fn/spec.field", "create"),
        ("field_fn/spec.field", "update"),
        ("update_fn", "update"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string(), 1))
    .collect();
    assert_eq!(runs, expected, "each handler exactly once");
    let mut kopf = kopf;
    kopf.signal("INT").unwrap();
    let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
    assert!(status.success(), "kopf exited with {status} after SIGINT");
    cluster.emu.shutdown().await;
}
