//! The embedding API end to end: `examples/12-embedded`, an application binary that runs
//! the operator in a side thread with in-process handlers, against the emulator.

mod reactor_common;

use kopf_e2e::{KopfProcess, binary_path};
use reactor_common::{Cluster, DEADLINE};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_operator_handles_objects_and_stops_cleanly() {
    let cluster = Cluster::start().await;
    let app =
        tokio::task::block_in_place(|| binary_path("example-12-embedded", "example-12-embedded")).unwrap();
    let mut process = tokio::task::block_in_place(|| {
        KopfProcess::spawn_program(
            app,
            std::iter::empty::<&str>(),
            [
                ("KUBECONFIG", cluster.kubeconfig.display().to_string()),
                ("KOPF_EMBEDDED_NAMESPACE", "default".to_owned()),
            ],
        )
    })
    .unwrap();
    tokio::task::block_in_place(|| {
        process.wait_for_line("The application sees the operator ready", DEADLINE)
    })
    .unwrap();

    cluster.create("kex-embedded", "value").await;
    let result = cluster
        .wait_obj(
            "kex-embedded",
            "the in-process create handler's result",
            Some(&process),
            |o| o?.pointer("/status/create_fn").cloned(),
        )
        .await;
    assert_eq!(
        result,
        json!({"message": "hello from the embedded operator", "count": 1})
    );
    // The application sees the handlers' work through the memo's shared value.
    tokio::task::block_in_place(|| {
        process.wait_for_line("The application counts 1 created object(s)", DEADLINE)
    })
    .unwrap();

    process.signal("TERM").unwrap();
    let status = tokio::task::block_in_place(|| process.wait_exit(DEADLINE)).unwrap();
    let log = process.lines().join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("The application got SIGTERM: stopping the operator"),
        "{log}"
    );
    assert!(
        log.contains("The embedded operator is cleaning up"),
        "cleanup handlers run: {log}"
    );
    assert!(
        log.contains("The operator has stopped; the application exits"),
        "{log}"
    );
}
