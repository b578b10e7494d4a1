//! Restart safety: `kill -9` the operator at random moments of a multi-handler lifecycle
//! over many objects, restart it, and check what really ran (the fixture handlers append
//! a line per success to a record file, with fsync).
//!
//! The guarantee checked (see the header of `kopf-cli/src/reactor/processing.rs`): with
//! handlers slower than the batch window, every handler succeeds exactly once per cause
//! except that each kill may re-run at most one handler per object (the one in flight);
//! nothing is skipped; no progress record, no stale finalizer remains; deleted objects go.
//!
//! Scale it up with `KOPF_RESTART_OBJECTS` (default 30), `KOPF_RESTART_KILLS` (kills per
//! phase, default 2) and reproduce with `KOPF_RESTART_SEED`.

mod reactor_common;

use std::collections::BTreeMap;
use std::time::Duration;

use kopf_e2e::KopfProcess;
use reactor_common::{
    Cluster, DEADLINE, LIFECYCLE_MULTI, Rng, created, env_usize, fixture, read_records, updated,
};
use serde_json::Value;

/// Handler sleep: longer than the reactor's 200 ms batch window.
const SLEEP_MS: &str = "300";

struct Run<'a> {
    cluster: &'a Cluster,
    plugin: std::path::PathBuf,
    envs: Vec<(&'static str, String)>,
    kopf: Option<KopfProcess>,
    rng: Rng,
    kills: usize,
}

impl Run<'_> {
    fn start(&mut self) {
        self.kopf = Some(self.cluster.spawn_kopf(&self.plugin, &self.envs));
    }

    /// Waits a random moment, kills the operator with SIGKILL, and starts it again.
    async fn kill_and_restart(&mut self, lo_ms: u64, hi_ms: u64) {
        // A random kill moment (not a synchronisation).
        tokio::time::sleep(Duration::from_millis(self.rng.range(lo_ms, hi_ms))).await;
        let mut kopf = self.kopf.take().expect("a running operator");
        kopf.signal("KILL").unwrap();
        tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
        self.kills += 1;
        self.start();
    }

    /// Waits until `ready` holds for every object named; reports the laggards otherwise.
    async fn wait_all(&self, names: &[String], what: &str, ready: impl Fn(Option<&Value>) -> bool) {
        let start = std::time::Instant::now();
        loop {
            let pending: Vec<(&String, Option<Value>)> = names
                .iter()
                .map(|n| (n, self.cluster.get(n)))
                .filter(|(_, o)| !ready(o.as_ref()))
                .collect();
            if pending.is_empty() {
                return;
            }
            if start.elapsed() > DEADLINE * 2 {
                let log = self
                    .kopf
                    .as_ref()
                    .map(|k| k.lines().join("\n"))
                    .unwrap_or_default();
                panic!(
                    "timed out waiting for {what}: {} objects pending, e.g. {}\nkopf log:\n{log}",
                    pending.len(),
                    serde_json::to_string_pretty(&pending[0].1).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_reruns_at_most_the_handler_in_flight() {
    let objects = env_usize("KOPF_RESTART_OBJECTS", 30);
    let kills_per_phase = env_usize("KOPF_RESTART_KILLS", 2);
    let cluster = Cluster::start().await;
    let record = cluster.path("record.txt");
    let mut run = Run {
        cluster: &cluster,
        plugin: fixture("fixture-lifecycle-multi"),
        envs: vec![
            ("KOPF_LIFECYCLE_RECORD", record.display().to_string()),
            ("KOPF_LIFECYCLE_SLEEP_MS", SLEEP_MS.into()),
        ],
        kopf: None,
        rng: Rng::from_env("KOPF_RESTART_SEED"),
        kills: 0,
    };
    let names: Vec<String> = (0..objects).map(|i| format!("kex-restart-{i:03}")).collect();
    let mut uids: BTreeMap<String, String> = BTreeMap::new();
    for name in &names {
        let obj = cluster.create(name, "v1").await;
        uids.insert(name.clone(), obj["metadata"]["uid"].as_str().unwrap().to_owned());
    }

    // Creation: 4 handlers of 300 ms each per object; kills land anywhere in it.
    run.start();
    for _ in 0..kills_per_phase {
        run.kill_and_restart(300, 2000).await;
    }
    run.wait_all(&names, "all create handlers done", created).await;

    // Update: 2 handlers per object.
    for name in &names {
        cluster.set_field(name, "v2").await;
    }
    for _ in 0..kills_per_phase {
        run.kill_and_restart(100, 1200).await;
    }
    run.wait_all(&names, "all update handlers done", updated).await;

    // Deletion: 1 handler per object, then the finalizer goes.
    for name in &names {
        cluster.delete(name).await;
    }
    for _ in 0..kills_per_phase {
        run.kill_and_restart(100, 800).await;
    }
    run.wait_all(&names, "all objects gone", |o| o.is_none()).await;
    let mut kopf = run.kopf.take().unwrap();
    kopf.signal("TERM").unwrap();
    let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
    assert!(status.success(), "kopf exited with {status} after SIGTERM");

    // What really ran.
    let records = read_records(&record);
    let expected = LIFECYCLE_MULTI;
    let kills = run.kills;
    let mut reruns_total = 0;
    let mut failures = Vec::new();
    for name in &names {
        let uid = &uids[name];
        let obj = format!("default/{name}");
        let mut reruns = 0;
        for (id, reason) in &expected {
            let key = (id.to_string(), obj.clone(), uid.clone(), reason.to_string());
            match records.get(&key).copied().unwrap_or(0) {
                0 => failures.push(format!("{obj}: {id} ({reason}) never succeeded")),
                n => reruns += n - 1,
            }
        }
        if reruns > kills {
            failures.push(format!(
                "{obj}: {reruns} handler re-runs after {kills} kills (at most one per kill allowed)"
            ));
        }
        reruns_total += reruns;
    }
    let unexpected: Vec<_> = records
        .keys()
        .filter(|(id, _, _, reason)| !expected.contains(&(id.as_str(), reason.as_str())))
        .collect();
    assert!(unexpected.is_empty(), "unexpected handler runs: {unexpected:?}");
    eprintln!(
        "{objects} objects, {kills} kills: {reruns_total} handler re-runs in total ({} handler successes expected)",
        objects * expected.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cluster.emu.shutdown().await;
}
