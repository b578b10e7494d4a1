//! Fault soak: many objects through create → update → delete while the emulator answers
//! 5% of the requests with 500/503, 1% with 429 + Retry-After, drops 1% of the
//! connections, adds 2–10 ms of latency, closes every watch stream every 2 s and expires
//! the history every 3 s (so watches resume into 410 Gone and re-list).
//!
//! Asserted (see `reactor_common/soak.rs`): every object converges (each handler succeeded,
//! re-runs only where a write of that object failed), no finalizer is left behind, the
//! operator neither crashes nor busy-loops (requests per object and per second bounded),
//! and no throttled request is repeated before its Retry-After.
//!
//! Size: `KOPF_SOAK_OBJECTS` (default 150; 1000 is the full soak), reproduce with
//! `KOPF_SOAK_SEED`.

mod reactor_common;

use reactor_common::env_usize;
use reactor_common::soak::{Soak, SoakOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_converges_under_random_api_faults_and_watch_chaos() {
    let mut soak = Soak::start(SoakOptions {
        objects: env_usize("KOPF_SOAK_OBJECTS", 150),
        faults: true,
        kills_per_phase: 0,
        peering: false,
        handler_sleep_ms: 0,
        seed_env: "KOPF_SOAK_SEED",
    })
    .await;
    soak.run_lifecycle().await;
    let report = soak.verify().await;
    // The faults really happened (the soak is not vacuous).
    assert!(report.failed_by_status.values().sum::<usize>() > 0, "{report:?}");
    assert!(
        report.watch_closes > 0 && report.history_expiries > 0,
        "{report:?}"
    );
}
