//! Settings the engine reads, set by a startup handler (the `settings-probe` fixture
//! merges `KOPF_FIXTURE_SETTINGS` into Kopf's settings), observed end to end.

mod reactor_common;

use kopf_e2e::KopfProcess;
use reactor_common::{Cluster, DEADLINE, fixture};
use serde_json::Value;

fn run(cluster: &Cluster, settings: &str, sleep_ms: u64) -> KopfProcess {
    let plugin = fixture("fixture-settings-probe");
    cluster.spawn_kopf(
        &plugin,
        &[
            ("KOPF_FIXTURE_SETTINGS", settings.to_owned()),
            ("KOPF_FIXTURE_SLEEP_MS", sleep_ms.to_string()),
        ],
    )
}

fn stop(mut kopf: KopfProcess) {
    kopf.signal("TERM").unwrap();
    let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
    assert_eq!(status.code(), Some(0), "{}", kopf.lines().join("\n"));
}

/// Creates `names` at once and returns each one's `status.slow.concurrent`.
async fn concurrency(cluster: &Cluster, kopf: &KopfProcess, names: &[&str]) -> Vec<u64> {
    for name in names {
        cluster.create(name, "x").await;
    }
    let mut seen = Vec::new();
    for name in names {
        let n = cluster
            .wait_obj(name, "the slow handler's report", Some(kopf), |o| {
                o?.pointer("/status/slow/concurrent").and_then(Value::as_u64)
            })
            .await;
        seen.push(n);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_max_workers_limits_sync_handlers_at_once() {
    // Without a limit, the objects' handlers overlap (and CRDs are observed).
    let cluster = Cluster::start().await;
    let kopf = run(&cluster, "{}", 1500);
    let free = concurrency(&cluster, &kopf, &["kex-a", "kex-b", "kex-c"]).await;
    assert!(
        free.iter().any(|&n| n > 1),
        "handlers overlap without a limit: {free:?}"
    );
    let counters = cluster.emu.counters();
    assert!(
        counters.get("watch", "customresourcedefinitions") > 0,
        "{counters:?}"
    );
    stop(kopf);

    let cluster = Cluster::start().await;
    let kopf = run(&cluster, r#"{"execution": {"max_workers": 1}}"#, 300);
    let limited = concurrency(&cluster, &kopf, &["kex-a", "kex-b", "kex-c"]).await;
    assert_eq!(limited, vec![1, 1, 1], "one sync handler at a time");
    stop(kopf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanning_disabled_observes_no_crds() {
    let cluster = Cluster::start().await;
    let kopf = run(&cluster, r#"{"scanning": {"disabled": true}}"#, 0);
    concurrency(&cluster, &kopf, &["kex-a"]).await;
    let counters = cluster.emu.counters();
    assert_eq!(
        counters.get("list", "customresourcedefinitions"),
        0,
        "{counters:?}"
    );
    assert_eq!(
        counters.get("watch", "customresourcedefinitions"),
        0,
        "{counters:?}"
    );
    assert!(kopf.lines().iter().any(|l| l.contains("Scanning is disabled")));
    stop(kopf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_client_timeout_ends_and_renews_watch_requests() {
    let cluster = Cluster::start().await;
    let kopf = run(&cluster, r#"{"watching": {"client_timeout": 1.0}}"#, 0);
    cluster
        .wait_until("three watch requests on kopfexamples", DEADLINE, || {
            cluster.emu.counters().get("watch", "kopfexamples") >= 3
        })
        .await;
    // Reconnections resume from the last position: objects are still handled.
    concurrency(&cluster, &kopf, &["kex-a"]).await;
    stop(kopf);
}
