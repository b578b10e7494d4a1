//! Scale-out end to end (`kopf run --sharding`): real `kopf` replicas against the
//! emulator, with the `fixture-scale-out` plugin recording the start and end of every
//! handler call per object and replica (`$KOPF_SCALE_OUT_RECORDS/$POD_ID.log`).
//!
//! What is asserted comes from those records (who ran which object's handlers, when) and
//! from the objects (each change's result in its status).
//!
//! CI sizes; `KOPF_SCALE_OUT_OBJECTS` sets the number of objects (e.g. 3000). On the
//! real-apiserver lane (`tests/apiserver/lane`) only the server-side sharding test runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kopf_e2e::cluster::{TestCluster, kopfexamples};
use kopf_e2e::{KopfProcess, plugin_path, wait_for, workspace_root};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;

/// Generous: a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(120);
/// The ring's Lease duration (seconds): quick hand-overs.
const LEASE_SECONDS: &str = "2";

fn objects(default: usize) -> usize {
    setting("KOPF_SCALE_OUT_OBJECTS", default)
}

/// A size from the environment (for runs at full size), else the CI size.
fn setting(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One handler call as the fixture recorded it.
#[derive(Debug, Clone)]
struct Call {
    replica: String,
    object: String,
    handler: String,
    value: String,
    start: u128,
    /// None if the replica died during the call.
    end: Option<u128>,
    /// The engine cancelled the call (`end` is when).
    cut: bool,
}

/// The emulator on its own runtime, the kubeconfig and the records' directory.
struct Ring {
    runtime: tokio::runtime::Runtime,
    emu: TestCluster,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    records: PathBuf,
    /// How long the fixture's sync handler `slow_fn` blocks (objects labelled `slow`).
    slow_ms: &'static str,
}

impl Ring {
    /// On the emulator.
    fn start() -> Self {
        Self::start_with(TestCluster::start_emulator)
    }

    /// On the cluster `KOPF_TEST_CLUSTER` asks for (the emulator, or a real API server).
    fn start_on_any() -> Self {
        Self::start_with(TestCluster::start)
    }

    fn start_with<F: std::future::Future<Output = anyhow::Result<TestCluster>>>(
        cluster: impl FnOnce() -> F,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emu = runtime.block_on(cluster()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig).unwrap();
        let records = dir.path().join("records");
        std::fs::create_dir(&records).unwrap();
        let crd = std::fs::read_to_string(workspace_root().join("examples/crd.yaml")).unwrap();
        runtime.block_on(emu.apply_yaml(&crd)).unwrap();
        Self {
            runtime,
            emu,
            _dir: dir,
            kubeconfig,
            records,
            slow_ms: "200",
        }
    }

    /// Starts a replica of the ring `default/scale` as `identity`, ready, with quick
    /// hand-overs (a short Lease).
    fn replica(&self, identity: &str) -> KopfProcess {
        self.replica_with(identity, LEASE_SECONDS)
    }

    /// [`Self::replica`] with a Lease duration of `lease_seconds`.
    fn replica_with(&self, identity: &str, lease_seconds: &str) -> KopfProcess {
        let plugin = plugin_path("fixture-scale-out").unwrap();
        let args = [
            "run".to_owned(),
            "-v".to_owned(),
            "-A".to_owned(),
            "--standalone".to_owned(),
            "--sharding".to_owned(),
            "default/scale".to_owned(),
            plugin.display().to_string(),
        ];
        let envs = [
            ("KUBECONFIG", self.kubeconfig_of(identity).display().to_string()),
            ("POD_ID", identity.to_owned()),
            ("KOPF_LEASE_DURATION", lease_seconds.to_owned()),
            ("KOPF_SCALE_OUT_RECORDS", self.records.display().to_string()),
            ("KOPF_SCALE_OUT_SLOW_MS", self.slow_ms.to_owned()),
        ];
        let mut process = KopfProcess::spawn_with_env(args, envs).unwrap();
        process.wait_for_line("The operator is ready", DEADLINE).unwrap();
        process
    }

    /// The kubeconfig of a replica: on the emulator with a token of its own
    /// (`replica-IDENTITY`), so that the emulator counts what it sends to each replica.
    fn kubeconfig_of(&self, identity: &str) -> PathBuf {
        let Some(emu) = self.emu.emulator() else {
            return self.kubeconfig.clone();
        };
        let path = self.records.with_file_name(format!("kubeconfig-{identity}"));
        std::fs::write(
            &path,
            emu.kubeconfig_yaml_with_token(&format!("replica-{identity}")),
        )
        .unwrap();
        path
    }

    /// The ring's member Leases.
    fn member_leases(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        self.emu.list_objects(
            "coordination.k8s.io/v1",
            "leases",
            Some("default"),
            Some("kopf.dev/sharding=scale"),
        )
    }

    fn api(&self) -> Api<DynamicObject> {
        let client = self.runtime.block_on(self.emu.admin_client()).unwrap();
        Api::namespaced_with(client, "default", &kopfexamples())
    }

    fn create_all(&self, count: usize, value: &str) {
        self.create_all_with(count, value, |_| json!({}));
    }

    /// [`Self::create_all`] with the labels `labels(i)` on object `i`.
    fn create_all_with(&self, count: usize, value: &str, labels: impl Fn(usize) -> serde_json::Value) {
        self.runtime.block_on(async {
            for i in 0..count {
                let obj = json!({
                    "apiVersion": "kopf.dev/v1",
                    "kind": "KopfExample",
                    "metadata": {"name": name(i), "namespace": "default", "labels": labels(i)},
                    "spec": {"field": value},
                });
                self.emu.create_object(obj).await.unwrap();
            }
        });
    }

    /// Sets `spec.field` of every object (a merge patch: the operator's state stays).
    fn set_all(&self, count: usize, value: &str) {
        let api = self.api();
        self.runtime.block_on(async {
            for i in 0..count {
                let patch = Patch::Merge(json!({"spec": {"field": value}}));
                api.patch(&name(i), &PatchParams::default(), &patch)
                    .await
                    .unwrap();
            }
        });
    }

    /// Waits until every object's status holds the result of handling `value` (as
    /// `status.<handler>.field`, for any of `handlers`), i.e. it was handled and persisted.
    fn wait_all_handled(&self, replicas: &[&KopfProcess], count: usize, handlers: &[&str], value: &str) {
        let expected = json!(value);
        let is_done = |o: &serde_json::Value| {
            handlers
                .iter()
                .any(|h| o.pointer(&format!("/status/{h}/field")) == Some(&expected))
        };
        let done = || {
            let items = self
                .emu
                .list_objects("kopf.dev/v1", "kopfexamples", Some("default"), None)
                .ok()?;
            let handled = items.iter().filter(|o| is_done(o)).count();
            (handled == count).then_some(())
        };
        wait_for(DEADLINE, &format!("{count} objects handled at {value}"), done).unwrap_or_else(|e| {
            let items = self
                .emu
                .list_objects("kopf.dev/v1", "kopfexamples", Some("default"), None)
                .unwrap_or_default();
            let behind: Vec<String> = items
                .iter()
                .filter(|o| !is_done(o))
                .take(3)
                .map(|o| {
                    format!(
                        "{:#}",
                        json!({"metadata": o["metadata"], "spec": o["spec"], "status": o["status"]})
                    )
                })
                .collect();
            panic!(
                "{e}; calls: {}; replicas' logs: {}; behind: {}",
                self.calls().len(),
                dump_logs(replicas).display(),
                behind.join("\n")
            )
        });
    }

    /// Every recorded call of every replica.
    fn calls(&self) -> Vec<Call> {
        let mut calls = Vec::new();
        for entry in std::fs::read_dir(&self.records).unwrap() {
            let path = entry.unwrap().path();
            let replica = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            calls.extend(parse_calls(&replica, &text));
        }
        calls
    }
}

/// Writes the replicas' logs into a directory that outlives the test, for the diagnosis
/// of a failure; returns it.
fn dump_logs(replicas: &[&KopfProcess]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kopf-scale-out-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    for (i, replica) in replicas.iter().enumerate() {
        let _ = std::fs::write(dir.join(format!("replica-{i}.log")), replica.lines().join("\n"));
    }
    dir
}

fn name(i: usize) -> String {
    format!("so-{i}")
}

/// Pairs each `start` with the next `end` or `cut` of the same handler and object (such
/// calls are serial within a replica); a start without either is a call a kill cut
/// short. A torn last line (a kill during the write) is ignored.
fn parse_calls(replica: &str, text: &str) -> Vec<Call> {
    let mut open: BTreeMap<(String, String), Call> = BTreeMap::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [what, object, value, nanos, handler] = parts.as_slice() else {
            continue;
        };
        let Ok(nanos) = nanos.parse::<u128>() else {
            continue;
        };
        let key = ((*object).to_owned(), (*handler).to_owned());
        match *what {
            "start" => {
                let call = Call {
                    replica: replica.to_owned(),
                    object: (*object).to_owned(),
                    handler: (*handler).to_owned(),
                    value: (*value).to_owned(),
                    start: nanos,
                    end: None,
                    cut: false,
                };
                if let Some(cut) = open.insert(key, call) {
                    calls.push(cut);
                }
            }
            "end" | "cut" => {
                if let Some(mut call) = open.remove(&key) {
                    call.end = Some(nanos);
                    call.cut = *what == "cut";
                    calls.push(call);
                }
            }
            _ => {}
        }
    }
    calls.extend(open.into_values());
    calls
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// Waits until `process` has logged `needle` at least `times` times.
fn wait_lines(process: &KopfProcess, needle: &str, times: usize) {
    wait_for(DEADLINE, &format!("{times}x {needle:?}"), || {
        let seen = process.lines().iter().filter(|l| l.contains(needle)).count();
        (seen >= times).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}:\n{}", process.lines().join("\n")));
}

/// Asserts that no two replicas ran handlers of one object at once. A call cut short
/// by a kill ends at the kill (`killed`: the replicas and when).
fn assert_no_overlap(calls: &[Call], killed: &[(String, u128)]) {
    let mut by_object: BTreeMap<&str, Vec<(u128, u128, &str)>> = BTreeMap::new();
    for call in calls {
        let kill = killed.iter().find(|(replica, _)| *replica == call.replica);
        let end = match (call.end, kill) {
            (Some(end), _) => end,
            (None, Some((_, at))) => *at,
            (None, None) => u128::MAX,
        };
        by_object
            .entry(&call.object)
            .or_default()
            .push((call.start, end, &call.replica));
    }
    for (object, mut spans) in by_object {
        spans.sort();
        // The latest end of each replica's calls so far: a replica's own calls of one
        // object may nest (handlers of one cycle), another's must start after them all.
        let mut latest: BTreeMap<&str, u128> = BTreeMap::new();
        for (start, end, replica) in spans {
            for (other, until) in &latest {
                assert!(
                    *other == replica || *until <= start,
                    "{object}: {other} ran until {until}, {replica} started at {start}"
                );
            }
            let until = latest.entry(replica).or_default();
            *until = (*until).max(end);
        }
    }
}

#[test]
fn three_replicas_handle_each_change_exactly_once_and_share_the_load() {
    if kopf_e2e::cluster::emulator_only("counts requests with the emulator's counters") {
        return;
    }
    let count = objects(600);
    let ring = Ring::start();
    // The default Lease (15 s): at 3,000 objects on a loaded machine a 2 s Lease's renewals
    // can stall past its duration, and the ring re-forms (a hand-over the soak covers).
    let replicas: Vec<KopfProcess> = ["r1", "r2", "r3"]
        .iter()
        .map(|id| ring.replica_with(id, "15"))
        .collect();
    let refs: Vec<&KopfProcess> = replicas.iter().collect();
    for replica in &replicas {
        wait_lines(replica, "share of 3 members", 1);
    }
    ring.create_all(count, "v1");
    ring.wait_all_handled(&refs, count, &["create_fn"], "v1");
    ring.set_all(count, "v2");
    ring.wait_all_handled(&refs, count, &["update_fn"], "v2");
    if let Some(dir) = std::env::var_os("KOPF_SCALE_OUT_LOGS") {
        keep_logs(&PathBuf::from(dir), &ring, &refs);
    }
    let calls = ring.calls();
    let mut per_change: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for call in &calls {
        assert!(call.end.is_some(), "a call never ended: {call:?}");
        per_change
            .entry((&call.object, &call.value))
            .or_default()
            .push(&call.replica);
    }
    assert_eq!(per_change.len(), 2 * count, "changes handled");
    for ((object, value), replicas) in &per_change {
        assert_eq!(replicas.len(), 1, "{object} at {value} handled by {replicas:?}");
    }
    // Each object stays with one replica while the ring does not change.
    let mut per_replica: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..count {
        let object = format!("default/{}", name(i));
        let v1 = &per_change[&(object.as_str(), "\"v1\"")];
        let v2 = &per_change[&(object.as_str(), "\"v2\"")];
        assert_eq!(v1, v2, "{object} moved without a ring change");
        *per_replica.entry(v1[0]).or_default() += 1;
    }
    let busiest = per_replica.values().copied().max().unwrap_or(0);
    let average = count as f64 / 3.0;
    eprintln!(
        "objects per replica: {per_replica:?}; busiest/average = {:.3}",
        busiest as f64 / average
    );
    assert_eq!(per_replica.len(), 3, "a replica got nothing: {per_replica:?}");
    assert!(busiest as f64 <= 1.25 * average, "unbalanced: {per_replica:?}");
    assert_no_overlap(&calls, &[]);
    // Sharding adds no per-object writes: each object costs what it costs one operator
    // (its finalizer, then per change the diff-base in the body and the result in the
    // status), and the ring's own requests (Lease lists and renewals) do not grow with
    // the objects.
    let counters = ring.emu.counters();
    let patches = counters.get("patch", "kopfexamples") + counters.get("patch", "kopfexamples/status");
    let leases: u64 = counters
        .by_verb_resource
        .iter()
        .filter(|(k, _)| k.ends_with(" leases"))
        .map(|(_, n)| n)
        .sum();
    eprintln!("{patches} object patches for {count} objects x 2 changes; {leases} Lease requests");
    assert!(
        patches <= 5 * count as u64,
        "{patches} patches: {:?}",
        counters.by_verb_resource
    );
    assert!(leases < count as u64, "{leases} Lease requests");
}

/// The live replicas of the soak, oldest first, and what happened to the others.
struct Members<'r> {
    ring: &'r Ring,
    live: Vec<(String, KopfProcess)>,
    started: usize,
    /// Replicas killed with `kill -9`, and when.
    killed: Vec<(String, u128)>,
    /// Graceful exits that waited for handler calls still running in the plugin.
    exits_waited: usize,
}

impl<'r> Members<'r> {
    /// No replicas yet.
    fn of(ring: &'r Ring) -> Self {
        Self {
            ring,
            live: Vec::new(),
            started: 0,
            killed: Vec::new(),
            exits_waited: 0,
        }
    }

    fn processes(&self) -> Vec<&KopfProcess> {
        self.live.iter().map(|(_, p)| p).collect()
    }

    /// How many times each live replica has taken up a view so far.
    fn take_ups(&self) -> Vec<usize> {
        self.live
            .iter()
            .map(|(_, p)| p.lines().iter().filter(|l| l.contains(TAKE_UP)).count())
            .collect()
    }

    /// Waits until every live replica has taken up a view after `before` (from
    /// [`Self::take_ups`]; new replicas count from zero), of all live members.
    fn wait_formed(&self, before: &[usize]) {
        let members = format!("share of {} members", self.live.len());
        for (i, (_, process)) in self.live.iter().enumerate() {
            let from = before.get(i).copied().unwrap_or(0);
            wait_for(DEADLINE, &format!("a view of {members}"), || {
                let lines = process.lines();
                let taken: Vec<&String> = lines.iter().filter(|l| l.contains(TAKE_UP)).collect();
                (taken.len() > from && taken.last().is_some_and(|l| l.contains(&members))).then_some(())
            })
            .unwrap_or_else(|e| panic!("{e}; logs: {}", dump_logs(&self.processes()).display()));
        }
    }

    fn join(&mut self) {
        let before = self.take_ups();
        self.started += 1;
        let name = format!("r{}", self.started);
        let process = self.ring.replica(&name);
        self.live.push((name, process));
        self.wait_formed(&before);
    }

    fn kill_oldest(&mut self) {
        let (name, process) = self.live.remove(0);
        let before = self.take_ups();
        process.signal("KILL").unwrap();
        self.killed.push((name, now_nanos()));
        drop(process);
        self.wait_formed(&before);
    }

    fn stop_oldest(&mut self) {
        self.stop(0);
    }

    /// Stops the live replica at `index` with SIGTERM; the others re-form without it.
    fn stop(&mut self, index: usize) -> KopfProcess {
        let (_, mut process) = self.live.remove(index);
        let before = self.take_ups();
        leave_gracefully(&mut process);
        let waited = process.lines().iter().any(|l| l.contains(EXIT_WAIT));
        self.exits_waited += usize::from(waited);
        self.wait_formed(&before);
        process
    }
}

/// Stops a replica with SIGTERM: it exits successfully, after leaving the ring.
fn leave_gracefully(process: &mut KopfProcess) {
    process.signal("TERM").unwrap();
    assert!(process.wait_exit(DEADLINE).unwrap().success());
    // Its last lines may still be on their way from the pipe's reader after the exit.
    let said =
        |l: &String| l.contains("Left the sharding ring") || l.contains("Cannot leave the sharding ring");
    wait_for(DEADLINE, "the replica's last words", || {
        process.lines().iter().any(said).then_some(())
    })
    .unwrap();
    let lines = process.lines();
    assert!(
        lines.iter().any(|l| l.contains("Left the sharding ring")),
        "{}",
        lines.join("\n")
    );
}

/// What an exiting replica logs when handler calls still run in the plugin.
const EXIT_WAIT: &str = "still running in the plugins before handing the objects over";

/// What a replica logs when it starts working under a view.
const TAKE_UP: &str = "working on this replica's share of";

/// The soak: objects change all the time while replicas join, are killed with `kill -9`
/// and exit gracefully, cycle after cycle. No two replicas ever run one object's handlers
/// at once (from the start and end of every call recorded by `fixture-scale-out`), and no
/// change is left unhandled. CI: 2 replicas, 150 objects, 1 cycle; full size on demand:
/// `KOPF_SCALE_OUT_OBJECTS=3000 KOPF_SCALE_OUT_REPLICAS=3 KOPF_SCALE_OUT_CYCLES=3`.
#[test]
fn hand_overs_on_join_kill9_and_exit_never_overlap_and_lose_no_change() {
    if kopf_e2e::cluster::emulator_only("the soak runs on the emulator (the lane's time)") {
        return;
    }
    let count = objects(150);
    let replicas = setting("KOPF_SCALE_OUT_REPLICAS", 2).max(2);
    let cycles = setting("KOPF_SCALE_OUT_CYCLES", 1);
    let ring = Ring::start();
    let mut members = Members::of(&ring);
    for _ in 0..replicas {
        members.join();
    }
    // Every other object has a sync update handler (200 ms) instead of the async one:
    // calls that a stopping worker abandons run on in the plugin, and pauses and exits
    // must wait for them.
    ring.create_all_with(count, "v0", |i| {
        if i % 2 == 0 {
            json!({"slow": "yes"})
        } else {
            json!({})
        }
    });
    // Objects change all the time from now on, in rounds v1, v2, ...
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let changer = {
        let (stop, rounds, api) = (stop.clone(), rounds.clone(), ring.api());
        ring.runtime.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let round = rounds.load(Ordering::SeqCst) + 1;
                for i in 0..count {
                    let patch = Patch::Merge(json!({"spec": {"field": format!("v{round}")}}));
                    api.patch(&name(i), &PatchParams::default(), &patch)
                        .await
                        .unwrap();
                }
                rounds.store(round, Ordering::SeqCst);
            }
        })
    };
    let wait_rounds = |more: usize| {
        let from = rounds.load(Ordering::SeqCst);
        wait_for(DEADLINE, "a round of changes", || {
            (rounds.load(Ordering::SeqCst) >= from + more).then_some(())
        })
        .unwrap();
    };
    wait_rounds(1);
    for _ in 0..cycles {
        // A replica joins, the oldest dies without a word (the others count it out after
        // its Lease expired), the next oldest exits gracefully (its Lease goes at once),
        // another joins: each while objects change.
        members.join();
        wait_rounds(1);
        members.kill_oldest();
        wait_rounds(1);
        members.stop_oldest();
        wait_rounds(1);
        members.join();
        wait_rounds(1);
    }
    stop.store(true, Ordering::SeqCst);
    ring.runtime.block_on(changer).unwrap();
    let last = format!("v{}", rounds.load(Ordering::SeqCst));
    // An object whose creation was processed only after its last change has no update.
    let updates = ["update_fn", "slow_fn"];
    ring.wait_all_handled(
        &members.processes(),
        count,
        &["create_fn", updates[0], updates[1]],
        &last,
    );
    ring.set_all(count, "final");
    ring.wait_all_handled(&members.processes(), count, &updates, "final");
    if let Some(dir) = std::env::var_os("KOPF_SCALE_OUT_LOGS") {
        keep_logs(&PathBuf::from(dir), &ring, &members.processes());
    }

    check_soak(
        &ring,
        &members,
        count,
        &format!("{cycles} cycles, change rounds {last}"),
    );
}

/// The soak's verdict from the records: no overlap, the final change handled by live
/// replicas, every replica did some work; the figures on stderr.
fn check_soak(ring: &Ring, members: &Members, count: usize, run: &str) {
    // The Leases of killed replicas are deleted by a live member in time (graceful
    // exits delete their own): one Lease per live replica remains.
    wait_for(DEADLINE, "the Leases of killed replicas to go", || {
        let leases = ring.member_leases().ok()?;
        (leases.len() == members.live.len()).then_some(())
    })
    .unwrap();
    let mut calls = ring.calls();
    calls.sort_by_key(|c| c.start);
    assert_no_overlap(&calls, &members.killed);
    let mut per_change: BTreeMap<(&str, &str), Vec<&Call>> = BTreeMap::new();
    for call in &calls {
        per_change
            .entry((&call.object, &call.value))
            .or_default()
            .push(call);
    }
    // A change is handled again by the next owner when a hand-over cut its call short
    // (a kill, or a pause's exit_timeout that abandoned the worker before its result was
    // persisted): at least once, never at once (checked above).
    let again = per_change.values().filter(|c| c.len() > 1).count();
    let cut = calls.iter().filter(|c| c.cut || c.end.is_none()).count();
    let live: Vec<&str> = members.live.iter().map(|(n, _)| n.as_str()).collect();
    for i in 0..count {
        let object = format!("default/{}", name(i));
        let finals = &per_change[&(object.as_str(), "\"final\"")];
        assert!(
            finals.iter().all(|c| live.contains(&c.replica.as_str())),
            "{object}: the final change was handled by a replica that had gone: {finals:?}"
        );
    }
    let mut by_replica: BTreeMap<&str, usize> = BTreeMap::new();
    for call in &calls {
        *by_replica.entry(&call.replica).or_default() += 1;
    }
    eprintln!(
        "{count} objects, {run}: calls per replica {by_replica:?}; \
         changes handled more than once {again}; calls cut short {cut}; graceful exits that \
         waited for running calls {}",
        members.exits_waited
    );
    assert!(
        by_replica.len() == members.started,
        "a replica handled nothing: {by_replica:?}"
    );
}

/// A replica that exits gracefully while a sync handler of one of its objects runs (its
/// stopping worker abandons the call at `exit_timeout`, but a plugin thread cannot be
/// stopped) leaves the ring only after that call returned: the object's next owner never
/// runs its handlers while the old call still runs. Without the wait, the replica left
/// at once and its process ended the call half-way (no `end`) while the new owner ran it.
#[test]
fn a_replica_exiting_during_a_sync_call_leaves_the_ring_only_after_it_returned() {
    if kopf_e2e::cluster::emulator_only("the ring's hand-overs run on the emulator") {
        return;
    }
    let mut ring = Ring::start();
    // Longer than the stopping worker's exit_timeout (2 s): the call is abandoned.
    ring.slow_ms = "5000";
    let mut members = Members::of(&ring);
    members.join();
    members.join();
    let object = format!("default/{}", name(0));
    ring.create_all_with(1, "v1", |_| json!({"slow": "yes"}));
    ring.wait_all_handled(&members.processes(), 1, &["create_fn"], "v1");
    ring.set_all(1, "v2");
    let slow_at_v2 = |calls: Vec<Call>| -> Vec<Call> {
        calls
            .into_iter()
            .filter(|c| c.object == object && c.handler == "slow_fn" && c.value == "\"v2\"")
            .collect()
    };
    let owner = wait_for(DEADLINE, "the slow call to start", || {
        slow_at_v2(ring.calls()).first().map(|c| c.replica.clone())
    })
    .unwrap();
    let index = members.live.iter().position(|(n, _)| *n == owner).unwrap();
    let left = members.stop(index);
    let heir = members.processes();
    ring.wait_all_handled(&heir, 1, &["slow_fn"], "v2");
    let calls = ring.calls();
    let slow = slow_at_v2(calls.clone());
    assert!(
        slow.iter()
            .any(|c| c.replica == owner && c.end.is_some() && !c.cut),
        "the exiting replica's call did not return: {slow:?}"
    );
    assert!(
        slow.iter().any(|c| c.replica != owner),
        "the next owner did not run the abandoned call again: {slow:?}"
    );
    assert_no_overlap(&calls, &[]);
    assert_eq!(members.exits_waited, 1, "the exit did not wait for the call");
    let lines = left.lines();
    let position = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{}", lines.join("\n")))
    };
    assert!(position("The handler calls still running have returned") < position("Left the sharding ring"));
}

/// Keeps the replicas' logs and the call records in `dir` (`KOPF_SCALE_OUT_LOGS`).
fn keep_logs(dir: &std::path::Path, ring: &Ring, replicas: &[&KopfProcess]) {
    let _ = std::fs::create_dir_all(dir);
    for (i, replica) in replicas.iter().enumerate() {
        let _ = std::fs::write(dir.join(format!("replica-{i}.log")), replica.lines().join("\n"));
    }
    for entry in std::fs::read_dir(&ring.records).unwrap() {
        let path = entry.unwrap().path();
        let _ = std::fs::copy(&path, dir.join(path.file_name().unwrap()));
    }
}

/// What a replica's streams received, how much of it was its own and how much other
/// replicas', summed over its stream runs (from the `Stream ...: N objects and events
/// received, M of them this replica's, K other replicas'.` lines; the rest arrived while
/// handing over, when the gate keeps nothing).
fn received_mine_theirs(process: &KopfProcess) -> (u64, u64, u64) {
    let mut sums = (0, 0, 0);
    for line in process.lines() {
        let Some((head, tail)) = line.split_once(" objects and events received, ") else {
            continue;
        };
        let received = head.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok());
        let words: Vec<&str> = tail.split(' ').collect();
        let number = |i: usize| words.get(i).and_then(|n| n.parse::<u64>().ok());
        if let (Some(received), Some(mine), Some(theirs)) = (received, number(0), number(5)) {
            sums.0 += received;
            sums.1 += mine;
            sums.2 += theirs;
        }
    }
    sums
}

/// Sums a Prometheus sample family's values whose labels contain all of `labels`.
fn metric_sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// KEP-5866: with `--sharding`, each replica asks the API server for its share only (a
/// `shardSelector` of its slots' hash ranges). A server with the `ShardedListAndWatch`
/// gate (the real-apiserver lane enables it) sends each replica only its objects:
/// nothing is dropped client-side. One without it (the emulator) sends everything, and
/// each replica's gate keeps its share. Either way each change is handled once.
#[test]
fn each_replica_receives_only_its_share_where_the_server_selects_shards() {
    let count = objects(300);
    let ring = Ring::start_on_any();
    let server_side = ring.emu.is_real();
    let mut replicas: Vec<KopfProcess> = ["r1", "r2", "r3"].iter().map(|id| ring.replica(id)).collect();
    for replica in &replicas {
        wait_lines(replica, "share of 3 members", 1);
    }
    let refs: Vec<&KopfProcess> = replicas.iter().collect();
    ring.create_all(count, "v1");
    ring.wait_all_handled(&refs, count, &["create_fn"], "v1");
    ring.set_all(count, "v2");
    ring.wait_all_handled(&refs, count, &["update_fn"], "v2");
    for replica in &mut replicas {
        replica.stop_gracefully(DEADLINE).unwrap();
    }
    let mut per_change: BTreeMap<(String, String), usize> = BTreeMap::new();
    for call in ring.calls() {
        *per_change.entry((call.object, call.value)).or_default() += 1;
    }
    assert_eq!(per_change.len(), 2 * count);
    assert!(per_change.values().all(|n| *n == 1), "a change handled twice");
    let figures: Vec<(u64, u64, u64)> = replicas.iter().map(received_mine_theirs).collect();
    // On the emulator: the bytes of lists and watch events sent to each replica (its own
    // token), counted as they stream.
    let sent: Vec<(u64, u64)> = ring.emu.emulator().map_or_else(Vec::new, |emu| {
        let counters = emu.counters();
        ["r1", "r2", "r3"]
            .iter()
            .map(|id| {
                let user = format!("replica-{id}");
                (
                    counters.bytes_of(&user, "list", "kopfexamples"),
                    counters.bytes_of(&user, "watch", "kopfexamples"),
                )
            })
            .collect()
    });
    let mine: u64 = figures.iter().map(|f| f.1).sum();
    let bytes = ring.emu.metrics_text().map(|text| {
        let resource = "resource=\"kopfexamples\"";
        (
            metric_sum(
                &text,
                "apiserver_response_sizes_sum",
                &[resource, "verb=\"LIST\""],
            ),
            metric_sum(&text, "apiserver_watch_events_sizes_sum", &[resource]),
        )
    });
    eprintln!(
        "{count} objects, server-side selection {server_side}: (received, this replica's, other replicas') \
         per replica {figures:?}; server bytes (LIST responses, watch events) {bytes:?}; \
         bytes sent per replica (lists, watch events) {sent:?}"
    );
    if !server_side {
        // Client-side filtering: every replica receives every object and event, about
        // the same bytes each (not a third each).
        let totals: Vec<u64> = sent.iter().map(|(list, watch)| list + watch).collect();
        let (least, most) = (totals.iter().min(), totals.iter().max());
        assert!(
            least.zip(most).is_some_and(|(l, m)| *l > 0 && l * 10 >= m * 8),
            "{sent:?}"
        );
    }
    for (_, kept, others) in &figures {
        assert!(*kept > 0, "{figures:?}");
        if server_side {
            assert_eq!(*others, 0, "the server sent other replicas' objects: {figures:?}");
        } else {
            // Everything reaches everybody: each replica receives the others' shares too.
            assert!((*kept + *others) * 10 >= mine * 9, "{figures:?}");
        }
    }
}

/// Runs `kopf ARGS...` to success and returns the YAML documents it printed.
fn kopf_yaml(args: &[&str]) -> Vec<serde_json::Value> {
    let out = kopf_e2e::run_kopf(args.iter().copied()).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    yaml_docs(&String::from_utf8_lossy(&out.stdout))
}

fn yaml_docs(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

/// `kopf rbac --sharding`: a sharded replica works, joins and leaves its ring with a
/// ServiceAccount token bound to exactly the generated rules (the emulator enforces
/// RBAC for such tokens): no request is forbidden.
#[test]
fn a_sharded_replica_works_with_exactly_the_generated_rbac() {
    if kopf_e2e::cluster::emulator_only("the emulator enforces RBAC for a ServiceAccount token") {
        return;
    }
    let plugin = plugin_path("fixture-scale-out").unwrap();
    let crd = workspace_root().join("examples/crd.yaml");
    let docs = kopf_yaml(&[
        "rbac",
        "-A",
        "--standalone",
        "--sharding",
        "default/scale",
        "-f",
        crd.to_str().unwrap(),
        plugin.to_str().unwrap(),
    ]);
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "kopf-operator-sharding")
        .unwrap_or_else(|| panic!("no sharding Role: {docs:#?}"));
    assert_eq!(role["metadata"]["namespace"], "default");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
            "verbs": ["list", "create", "update", "delete"]}])
    );
    let ring = Ring::start();
    let emu = ring.emu.expect_emulator("RBAC enforcement");
    ring.runtime.block_on(async {
        for doc in docs {
            emu.apply_object(doc).await.unwrap();
        }
    });
    emu.add_token("sa-token", "system:serviceaccount:default:kopf-operator");
    let kubeconfig = ring.records.with_file_name("sa-kubeconfig");
    std::fs::write(&kubeconfig, emu.kubeconfig_yaml_with_token("sa-token")).unwrap();
    let args = [
        "run",
        "-A",
        "--standalone",
        "--sharding",
        "default/scale",
        plugin.to_str().unwrap(),
    ];
    let envs = [
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("POD_ID", "rbac-1".to_owned()),
        ("KOPF_LEASE_DURATION", LEASE_SECONDS.to_owned()),
    ];
    let mut replica = KopfProcess::spawn_with_env(args, envs).unwrap();
    wait_lines(&replica, "share of 1 members", 1);
    ring.create_all(1, "rbac");
    ring.wait_all_handled(&[&replica], 1, &["create_fn"], "rbac");
    leave_gracefully(&mut replica);
    let counters = emu.counters();
    assert_eq!(
        counters.status(403),
        0,
        "forbidden: {counters:?}\n{}",
        replica.lines().join("\n")
    );
    assert!(
        counters.by_user.get("sa-token").copied().unwrap_or(0) > 0,
        "{counters:?}"
    );
    let left = ring.member_leases().unwrap();
    assert!(left.is_empty(), "the member's Lease stayed: {left:?}");
}

/// `deploy-overlays/sharded` renders three replicas of one ring and exactly the Role
/// `kopf rbac --sharding` generates for it.
#[test]
fn the_sharded_overlay_runs_three_replicas_with_the_generated_lease_rules() {
    if kopf_e2e::cluster::emulator_only("needs no cluster: run once, in the emulator lane") {
        return;
    }
    if !kopf_e2e::kubectl_available() {
        return;
    }
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(workspace_root().join("deploy-overlays/sharded"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout));
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    let deployment = find("Deployment", "kopf-operator");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container["args"].to_string();
    assert!(
        args.contains("--sharding=kopf-operator") && !args.contains("--lease"),
        "{args}"
    );
    let env = container["env"].to_string();
    assert!(env.contains("POD_ID") && env.contains("POD_NAMESPACE"), "{env}");
    let role = find("Role", "kopf-operator-sharding");
    assert_eq!(role["metadata"]["namespace"], "kopf-system");
    let plugin = plugin_path("fixture-scale-out").unwrap();
    let crd = workspace_root().join("examples/crd.yaml");
    let generated = kopf_yaml(&[
        "rbac",
        "-A",
        "--sharding",
        "kopf-system/kopf-operator",
        "-f",
        crd.to_str().unwrap(),
        plugin.to_str().unwrap(),
    ]);
    let expected = generated
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "kopf-operator-sharding")
        .unwrap();
    assert_eq!(role["rules"], expected["rules"]);
    let binding = find("RoleBinding", "kopf-operator-sharding");
    assert_eq!(binding["subjects"][0]["namespace"], "kopf-system");
}
