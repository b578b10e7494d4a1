//! Memos end to end: the real `kopf` binary with the `memo-counter` fixture plugin. The
//! fixture counts its handler calls in the object's memo and writes the count, the seed
//! it found (put into the operator memo by a startup handler) and the number of objects
//! with a memo into `status.memo`.

mod reactor_common;

use reactor_common::{Cluster, DEADLINE, fixture};
use serde_json::Value;

fn memo_of(obj: Option<&Value>) -> Option<(u64, String, u64)> {
    let memo = obj?.pointer("/status/memo")?;
    Some((
        memo.get("hits")?.as_u64()?,
        memo.get("seed")?.as_str()?.to_owned(),
        memo.get("objects")?.as_u64()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memos_persist_per_object_and_are_dropped_with_the_object() {
    let cluster = Cluster::start().await;
    let plugin = fixture("fixture-memo-counter");
    let mut kopf = cluster.spawn_kopf(&plugin, &[("KOPF_RUN_VERBOSE", "1".into())]);

    // First sight: a fresh memo, seeded from the operator memo of the startup handler.
    let a1 = cluster.create("kex-a", "one").await;
    let uid_a1 = a1["metadata"]["uid"].as_str().unwrap().to_owned();
    let first = cluster
        .wait_obj("kex-a", "the create handler's memo report", Some(&kopf), |o| {
            memo_of(o)
        })
        .await;
    assert_eq!(first, (1, "from-startup".to_owned(), 1));

    // The same object's next handler call sees the same memo.
    cluster.set_field("kex-a", "two").await;
    let second = cluster
        .wait_obj("kex-a", "the update handler's memo report", Some(&kopf), |o| {
            memo_of(o).filter(|m| m.0 >= 2)
        })
        .await;
    assert_eq!(
        second,
        (2, "from-startup".to_owned(), 1),
        "values persist across calls"
    );

    // Another object has its own memo.
    cluster.create("kex-b", "one").await;
    let b = cluster
        .wait_obj("kex-b", "kex-b's memo report", Some(&kopf), memo_of)
        .await;
    assert_eq!(
        b,
        (1, "from-startup".to_owned(), 2),
        "objects do not share counters"
    );

    // Deleting kex-a drops its memo in the plugin.
    cluster.delete("kex-a").await;
    let needle = format!("Forgot the memo of {uid_a1}");
    tokio::task::block_in_place(|| kopf.wait_for_line(&needle, DEADLINE)).unwrap();
    cluster.set_field("kex-b", "two").await;
    let b = cluster
        .wait_obj("kex-b", "kex-b's second memo report", Some(&kopf), |o| {
            memo_of(o).filter(|m| m.0 >= 2)
        })
        .await;
    assert_eq!(b, (2, "from-startup".to_owned(), 1), "kex-a's memo is gone");

    // A recreated object with the same name starts with a fresh memo.
    let a2 = cluster.create("kex-a", "one").await;
    assert_ne!(a2["metadata"]["uid"].as_str(), Some(uid_a1.as_str()));
    let again = cluster
        .wait_obj("kex-a", "the recreated object's memo report", Some(&kopf), |o| {
            memo_of(o)
        })
        .await;
    assert_eq!(again, (1, "from-startup".to_owned(), 2));

    kopf.signal("TERM").unwrap();
    let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
    assert_eq!(status.code(), Some(0), "{}", kopf.lines().join("\n"));
}
