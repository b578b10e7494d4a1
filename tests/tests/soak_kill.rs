//! Kill soak: the fault soak's workload (see `soak_faults.rs`) while the operator is
//! killed with SIGKILL and restarted at random moments of every phase; and the same with
//! two peering replicas where every kill hits the active one (a hand-over each time).
//!
//! Asserted as in the fault soak (see `reactor_common/soak.rs`), with one handler re-run
//! per object allowed per kill on top of the re-runs the failed writes allow.
//!
//! Size: `KOPF_SOAK_OBJECTS` (default 100; 1000 is the full soak), kills per phase
//! `KOPF_SOAK_KILLS` (default 2), reproduce with `KOPF_SOAK_SEED`.

mod reactor_common;

use reactor_common::env_usize;
use reactor_common::soak::{Soak, SoakOptions};

fn options(peering: bool) -> SoakOptions {
    SoakOptions {
        objects: env_usize("KOPF_SOAK_OBJECTS", 100),
        faults: true,
        kills_per_phase: env_usize("KOPF_SOAK_KILLS", 2),
        peering,
        // Handlers take a while, so that kills land mid-handler, and longer than the
        // reactor's batch window: only then is one re-run per object per kill the
        // guarantee (a faster batch may re-run all handlers that finished within the
        // window; see the header of kopf-cli/src/reactor/processing.rs).
        handler_sleep_ms: 250,
        seed_env: "KOPF_SOAK_SEED",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_converges_across_kill_9_restarts_under_faults() {
    let mut soak = Soak::start(options(false)).await;
    soak.run_lifecycle().await;
    let report = soak.verify().await;
    assert_eq!(report.kills, 3 * env_usize("KOPF_SOAK_KILLS", 2), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_converges_when_the_active_peer_is_killed_repeatedly() {
    let mut soak = Soak::start(options(true)).await;
    soak.run_lifecycle().await;
    let report = soak.verify().await;
    assert_eq!(report.kills, 3 * env_usize("KOPF_SOAK_KILLS", 2), "{report:?}");
}
