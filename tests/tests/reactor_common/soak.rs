//! The soak workload shared by `soak_faults.rs` and `soak_kill.rs`: many KopfExamples
//! through create → update → delete with the `lifecycle-multi` fixture (every handler
//! success is a line in a record file), while the emulator injects random faults
//! (500/503, 429 with Retry-After, dropped connections, patches refused with 409 as after
//! a concurrent change, added latency), a chaos driver
//! closes watch streams and expires the history (forcing 410 relists), and optionally the
//! operator is killed with SIGKILL and restarted (also across a peering hand-over).
//!
//! What is checked at the end ([`Soak::verify`]):
//! - every object converged: each handler of each cause succeeded, the object is gone
//!   (so no finalizer was left behind);
//! - at-least-once only where a handler was interrupted: re-runs of an object's handlers
//!   are at most [`RERUNS_PER_FAILED_WRITE`] per failed write of that object plus one per
//!   kill;
//! - no crash: the operators stay up until SIGTERM and exit with success, no panics logged;
//! - no busy loop: the requests for one object stay within [`REQUESTS_PER_OBJECT`] plus
//!   [`REQUESTS_PER_FAULT`] per fault injected on that object (plus
//!   [`REQUESTS_PER_KILL_PER_OBJECT`] per kill), and the object-less requests (lists,
//!   watches, peering, discovery) within [`BACKGROUND_REQUESTS_PER_SECOND`] per second
//!   per operator process;
//! - Retry-After is honoured: no request repeats a request answered with 429 before its
//!   Retry-After elapsed (within one operator process; resource requests only, and not
//!   with two replicas, which share a User-Agent the log cannot tell apart).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kopf_e2e::KopfProcess;
use kopf_testing::{Chaos, ChaosPlan, FaultKind, FaultMatch, RequestRecord, retry_after_violations};
use serde_json::Value;

use super::{Cluster, DEADLINE, LIFECYCLE_MULTI, Rng, created, fixture, read_records, updated};

/// A handler may re-run when a write of its results failed: all handlers of one cause
/// (up to 4 in `lifecycle-multi`) share one status and one body patch.
pub const RERUNS_PER_FAILED_WRITE: usize = 4;
/// Requests naming one object in a fault-free lifecycle are about 8 (finalizer, results
/// and diff-base, update results, deletion results and finalizer removal, event posts are
/// not counted here); the bound leaves room for the conflict re-reads of a loaded machine.
pub const REQUESTS_PER_OBJECT: usize = 20;
/// Extra requests naming an object allowed per fault injected on that object's requests
/// (the retry, plus a re-read and a repeated patch of the re-run).
pub const REQUESTS_PER_FAULT: usize = 4;
/// Extra requests naming an object allowed per kill (the restarted operator re-checks it).
pub const REQUESTS_PER_KILL_PER_OBJECT: usize = 4;
/// Object-less requests (list, watch, discovery, peering) per second per operator.
pub const BACKGROUND_REQUESTS_PER_SECOND: f64 = 10.0;

/// What to throw at the operator.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How many objects go through the lifecycle.
    pub objects: usize,
    /// Random API faults, latency and the chaos driver.
    pub faults: bool,
    /// SIGKILL + restart this many times per phase (create, update, delete).
    pub kills_per_phase: usize,
    /// Two replicas with peering; every kill hits the active one, which comes back with
    /// the lowest priority (so each kill is a hand-over).
    pub peering: bool,
    /// `KOPF_LIFECYCLE_SLEEP_MS` of the handlers.
    pub handler_sleep_ms: u64,
    /// The environment variable to reproduce a run's randomness with.
    pub seed_env: &'static str,
}

struct Replica {
    priority: u32,
    identity: String,
    process: Option<KopfProcess>,
    /// Processes started for this replica (for unique identities).
    generation: usize,
}

/// Figures of one soak run.
#[derive(Debug, Default)]
pub struct SoakReport {
    /// Objects that went through the lifecycle.
    pub objects: usize,
    /// Operators killed.
    pub kills: usize,
    /// Handler successes recorded, and how many of them were re-runs.
    pub successes: usize,
    /// Re-runs among the successes.
    pub reruns: usize,
    /// All requests (all clients; the test's own are not HTTP).
    pub requests: usize,
    /// Requests answered with an injected fault (or a real error), by status (0 = dropped).
    pub failed_by_status: BTreeMap<u16, usize>,
    /// Watch closes and history expiries done by the chaos driver.
    pub watch_closes: u64,
    /// History expiries done by the chaos driver.
    pub history_expiries: u64,
    /// 429 answers (with Retry-After) the operator got.
    pub throttled: usize,
    /// The most requests naming one object.
    pub max_requests_per_object: usize,
    /// Wall time of the lifecycle.
    pub elapsed: Duration,
}

/// One soak run (see the module docs).
pub struct Soak {
    /// The emulator and files.
    pub cluster: Cluster,
    opts: SoakOptions,
    plugin: PathBuf,
    record: PathBuf,
    rng: Rng,
    replicas: Vec<Replica>,
    kills: Vec<Instant>,
    chaos: Option<Chaos>,
    names: Vec<String>,
    uids: BTreeMap<String, String>,
    started: Instant,
    elapsed: Duration,
    processes_started: usize,
}

/// The deadline of one phase: generous, growing with the number of objects.
fn phase_deadline(objects: usize, kills: usize) -> Duration {
    DEADLINE * 2 + Duration::from_millis(300) * objects as u32 + Duration::from_secs(15) * kills as u32
}

impl Soak {
    /// Starts the emulator (with the faults, if asked) and the operator(s).
    pub async fn start(opts: SoakOptions) -> Self {
        let cluster = Cluster::start_emulator().await;
        if opts.peering {
            for file in ["deploy/peering-crds.yaml", "deploy/peering-objects.yaml"] {
                let text = std::fs::read_to_string(kopf_e2e::workspace_root().join(file)).unwrap();
                cluster.emu.apply_yaml(&text).await.unwrap();
            }
        }
        let mut rng = Rng::from_env(opts.seed_env);
        let faults = cluster.emu.expect_emulator("fault injection").faults();
        faults.seed(rng.range(0, u64::MAX));
        faults.record_requests(true);
        let chaos = opts.faults.then(|| {
            // 5% server errors, 1% throttling with Retry-After, 1% dropped connections.
            faults.fail_ratio(0.025, FaultMatch::any(), FaultKind::Status(500));
            faults.fail_ratio(0.025, FaultMatch::any(), FaultKind::Status(503));
            faults.fail_ratio(
                0.01,
                FaultMatch::any(),
                FaultKind::TooManyRequests { retry_after_secs: 3 },
            );
            faults.fail_ratio(0.01, FaultMatch::any(), FaultKind::DropConnection);
            // 1% of patches refused as if the object had changed since it was read.
            faults.fail_ratio(
                0.01,
                FaultMatch {
                    verb: Some("patch".into()),
                    ..FaultMatch::default()
                },
                FaultKind::Status(409),
            );
            faults.set_latency(Duration::from_millis(2));
            faults.set_latency_jitter(Duration::from_millis(8));
            Chaos::start(
                cluster.emu.expect_emulator("chaos"),
                ChaosPlan {
                    close_watches_every: Some(Duration::from_secs(2)),
                    expire_history_every: Some(Duration::from_secs(3)),
                },
            )
        });
        let record = cluster.path("record.txt");
        let priorities: &[u32] = if opts.peering { &[200, 100] } else { &[0] };
        let replicas = priorities
            .iter()
            .enumerate()
            .map(|(i, priority)| Replica {
                priority: *priority,
                identity: format!("soak-{i}"),
                process: None,
                generation: 0,
            })
            .collect();
        let mut soak = Self {
            cluster,
            opts,
            plugin: fixture("fixture-lifecycle-multi"),
            record,
            rng,
            replicas,
            kills: Vec::new(),
            chaos,
            names: Vec::new(),
            uids: BTreeMap::new(),
            started: Instant::now(),
            elapsed: Duration::ZERO,
            processes_started: 0,
        };
        for i in 0..soak.replicas.len() {
            soak.spawn(i);
        }
        soak
    }

    fn spawn(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        replica.generation += 1;
        let pod_id = format!("{}-{}", replica.identity, replica.generation);
        let envs = vec![
            ("KOPF_LIFECYCLE_RECORD", self.record.display().to_string()),
            ("KOPF_LIFECYCLE_SLEEP_MS", self.opts.handler_sleep_ms.to_string()),
            ("POD_ID", pod_id),
            ("KOPF_PEERING_LIFETIME", "4".to_string()),
        ];
        let priority = replica.priority.to_string();
        let mut args: Vec<&str> = if self.opts.peering {
            vec!["--priority", &priority]
        } else {
            vec!["--standalone"]
        };
        // Debug logs of the operator(s) in failure messages, when asked.
        if std::env::var_os("KOPF_SOAK_DEBUG").is_some() {
            args.push("--debug");
        }
        let process = self.cluster.spawn_kopf_with(&args, &self.plugin, &envs);
        self.replicas[index].process = Some(process);
        self.processes_started += 1;
    }

    /// The replica doing the work: the highest priority among the running ones.
    fn active(&self) -> usize {
        (0..self.replicas.len())
            .filter(|i| self.replicas[*i].process.is_some())
            .max_by_key(|i| self.replicas[*i].priority)
            .expect("a running replica")
    }

    /// Waits a random moment, kills the active operator with SIGKILL and starts it again
    /// (with peering: with the lowest priority, so that the other one takes over).
    async fn kill_and_restart(&mut self, lo_ms: u64, hi_ms: u64) {
        // A random kill moment (not a synchronisation).
        tokio::time::sleep(Duration::from_millis(self.rng.range(lo_ms, hi_ms))).await;
        let index = self.active();
        let mut process = self.replicas[index].process.take().expect("a running operator");
        process.signal("KILL").unwrap();
        tokio::task::block_in_place(|| process.wait_exit(DEADLINE)).unwrap();
        self.kills.push(Instant::now());
        if self.opts.peering {
            let lowest = self.replicas.iter().map(|r| r.priority).min().unwrap_or(100);
            self.replicas[index].priority = lowest.saturating_sub(1);
        }
        self.spawn(index);
    }

    async fn kills(&mut self, lo_ms: u64, hi_ms: u64) {
        for _ in 0..self.opts.kills_per_phase {
            self.kill_and_restart(lo_ms, hi_ms).await;
        }
    }

    /// Waits until `ready` holds for every object; reports the laggards otherwise.
    async fn wait_all(&self, what: &str, ready: impl Fn(Option<&Value>) -> bool) {
        let deadline = phase_deadline(self.names.len(), self.opts.kills_per_phase);
        let start = Instant::now();
        loop {
            let pending: Vec<(&String, Option<Value>)> = self
                .names
                .iter()
                .map(|n| (n, self.cluster.get(n)))
                .filter(|(_, o)| !ready(o.as_ref()))
                .collect();
            if pending.is_empty() {
                return;
            }
            if start.elapsed() > deadline {
                let name = pending[0].0;
                panic!(
                    "timed out after {deadline:?} waiting for {what}: {} objects pending, e.g. {}\nits requests:\n{}\n{}",
                    pending.len(),
                    serde_json::to_string_pretty(&pending[0].1).unwrap_or_default(),
                    self.requests_of(name),
                    self.logs_of(name)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operators' log lines about `name`, and the last lines of each.
    fn logs_of(&self, name: &str) -> String {
        let mut text = String::new();
        for r in &self.replicas {
            if let Some(p) = &r.process {
                let lines = p.lines();
                let about: Vec<&str> = lines
                    .iter()
                    .filter(|l| l.contains(name))
                    .map(String::as_str)
                    .collect();
                let tail = &lines[lines.len().saturating_sub(50)..];
                text += &format!(
                    "--- kopf {id} about {name}:\n{}\n--- kopf {id} (last {} lines):\n{}\n",
                    about.join("\n"),
                    tail.len(),
                    tail.join("\n"),
                    id = r.identity,
                );
            }
        }
        text
    }

    /// The recorded requests naming `name`, one per line, with times since the start.
    fn requests_of(&self, name: &str) -> String {
        self.requests_in(
            &self
                .cluster
                .emu
                .expect_emulator("fault injection")
                .faults()
                .requests(),
            name,
        )
    }

    /// The requests naming `name` in `log`, one per line, with times since the start.
    fn requests_in(&self, log: &[RequestRecord], name: &str) -> String {
        log.iter()
            .filter(|r| r.name.as_deref() == Some(name))
            .map(|r| {
                format!(
                    "  {:>8.3}s {} {} -> {}",
                    r.arrived.saturating_duration_since(self.started).as_secs_f64(),
                    r.user_agent,
                    r.describe(),
                    r.status
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// With faults: strands every watch behind a history compaction (advance the
    /// resourceVersion, expire the history, close the streams), so that the phase that
    /// follows is only seen by an operator that re-lists on 410 Gone.
    async fn force_relist(&self) {
        if !self.opts.faults {
            return;
        }
        let tick = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "soak-tick", "namespace": super::NS},
            "data": {"at": format!("{:?}", self.started.elapsed())},
        });
        self.cluster.emu.apply_object(tick).await.unwrap();
        self.cluster
            .emu
            .expect_emulator("fault injection")
            .faults()
            .expire_history();
        self.cluster
            .emu
            .expect_emulator("fault injection")
            .faults()
            .close_watches();
    }

    /// Creation, update and deletion of all objects, with kills during each phase.
    pub async fn run_lifecycle(&mut self) {
        self.started = Instant::now();
        self.names = (0..self.opts.objects)
            .map(|i| format!("kex-soak-{i:04}"))
            .collect();
        self.force_relist().await;
        for name in self.names.clone() {
            let obj = self.cluster.create(&name, "v1").await;
            let uid = obj["metadata"]["uid"].as_str().unwrap().to_owned();
            self.uids.insert(name, uid);
        }
        self.kills(300, 2000).await;
        self.wait_all("all create handlers done", created).await;

        self.force_relist().await;
        for name in self.names.clone() {
            self.cluster.set_field(&name, "v2").await;
        }
        self.kills(100, 1200).await;
        self.wait_all("all update handlers done", updated).await;

        self.force_relist().await;
        for name in self.names.clone() {
            self.cluster.delete(&name).await;
        }
        self.kills(100, 800).await;
        self.wait_all("all objects gone (no finalizer left)", |o| o.is_none())
            .await;
        self.elapsed = self.started.elapsed();
    }

    /// Stops the chaos, checks the operators are alive, stops them with SIGTERM, and
    /// checks everything listed in the module docs. Panics with all failures at once.
    #[allow(clippy::too_many_lines)] // split under issue 19
    pub async fn verify(mut self) -> SoakReport {
        let chaos = self.chaos.take().map(Chaos::stop).unwrap_or_default();
        let faults = self.cluster.emu.expect_emulator("fault injection").faults();
        faults.clear();
        let log = faults.requests();
        faults.record_requests(false);
        let mut failures = Vec::new();
        let mut operator_lines: Vec<String> = Vec::new();

        // No crash: alive until told to stop, a clean exit, no panic.
        for replica in &mut self.replicas {
            let Some(mut process) = replica.process.take() else {
                continue;
            };
            if let Err(e) = process.signal("TERM") {
                failures.push(format!(
                    "kopf {} was not running at the end: {e}",
                    replica.identity
                ));
            }
            match tokio::task::block_in_place(|| process.wait_exit(DEADLINE)) {
                Ok(status) if status.success() => {}
                Ok(status) => failures.push(format!("kopf {} exited with {status}", replica.identity)),
                Err(e) => failures.push(format!("kopf {} did not exit: {e}", replica.identity)),
            }
            let lines = process.lines();
            if let Some(line) = lines.iter().find(|l| l.contains("panicked")) {
                failures.push(format!("kopf {} panicked: {line}", replica.identity));
            }
            operator_lines.extend(lines);
        }

        // The requests of each operator process, split at the kills (a new process does
        // not know an old one's Retry-After).
        let kopf_log: Vec<&RequestRecord> =
            log.iter().filter(|r| r.user_agent.starts_with("kopf/")).collect();
        let mut segments: Vec<Vec<RequestRecord>> = vec![Vec::new(); self.kills.len() + 1];
        // Non-resource paths (discovery) all look alike in the log, and two replicas share
        // one User-Agent: check only resource requests, and only with a single replica.
        let checkable = kopf_log
            .iter()
            .filter(|r| !r.resource.is_empty() && self.replicas.len() == 1);
        for r in checkable {
            let segment = self.kills.iter().filter(|k| **k <= r.arrived).count();
            segments[segment].push((*r).clone());
        }
        let violations: Vec<String> = segments.iter().flat_map(|s| retry_after_violations(s)).collect();
        if !violations.is_empty() {
            failures.push(format!(
                "{} requests ignored Retry-After, e.g.:\n  {}",
                violations.len(),
                violations[..violations.len().min(10)].join("\n  ")
            ));
        }

        // Requests per object, and faults per object.
        let kills = self.kills.len();
        let mut per_object: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut background = 0usize;
        for r in &kopf_log {
            match (r.resource.as_str(), r.name.as_deref()) {
                ("kopfexamples", Some(name)) => {
                    let entry = per_object.entry(name).or_default();
                    entry.0 += 1;
                    if !(200..300).contains(&r.status) {
                        entry.1 += 1;
                    }
                }
                ("events", _) => {}
                _ => background += 1,
            }
        }
        for (name, (requests, failed)) in &per_object {
            let bound =
                REQUESTS_PER_OBJECT + REQUESTS_PER_FAULT * failed + REQUESTS_PER_KILL_PER_OBJECT * kills;
            if *requests > bound {
                failures.push(format!(
                    "{name}: {requests} requests (bound {bound} with {failed} failed and {kills} kills): a busy loop?"
                ));
            }
        }
        let seconds = self.started.elapsed().as_secs_f64().max(1.0);
        let background_bound = (BACKGROUND_REQUESTS_PER_SECOND * seconds * self.replicas.len() as f64)
            as usize
            + 100 * self.processes_started;
        if background > background_bound {
            failures.push(format!(
                "{background} object-less requests in {seconds:.0}s (bound {background_bound}): a busy loop?"
            ));
        }

        // What really ran.
        let records = read_records(&self.record);
        let mut successes = 0;
        let mut reruns_total = 0;
        for name in &self.names {
            let uid = &self.uids[name];
            let obj = format!("{}/{name}", super::NS);
            let mut reruns = 0;
            for (id, reason) in LIFECYCLE_MULTI {
                let key = (id.to_string(), obj.clone(), uid.clone(), reason.to_string());
                match records.get(&key).copied().unwrap_or(0) {
                    0 => failures.push(format!("{obj}: {id} ({reason}) never succeeded")),
                    n => {
                        successes += n;
                        reruns += n - 1;
                    }
                }
            }
            let failed = per_object.get(name.as_str()).map(|(_, f)| *f).unwrap_or(0);
            let allowed = RERUNS_PER_FAILED_WRITE * failed + kills;
            if reruns > allowed {
                let detail: Vec<String> = LIFECYCLE_MULTI
                    .iter()
                    .map(|(id, reason)| {
                        let key = (id.to_string(), obj.clone(), uid.clone(), reason.to_string());
                        format!("{id}/{reason}={}", records.get(&key).copied().unwrap_or(0))
                    })
                    .collect();
                // The first few in full: the object's requests and the operators' lines about it.
                let history = if failures.len() < 3 {
                    let about: Vec<&str> = operator_lines
                        .iter()
                        .filter(|l| l.contains(name.as_str()))
                        .map(String::as_str)
                        .collect();
                    format!(
                        "\n its requests:\n{}\n its log lines:\n{}",
                        self.requests_in(&log, name),
                        about.join("\n")
                    )
                } else {
                    String::new()
                };
                failures.push(format!(
                    "{obj}: {reruns} handler re-runs with {failed} failed requests and {kills} kills (at most {allowed} allowed) {detail:?}{history}"
                ));
            }
            reruns_total += reruns;
        }
        let unexpected: Vec<_> = records
            .keys()
            .filter(|(id, _, _, reason)| !LIFECYCLE_MULTI.contains(&(id.as_str(), reason.as_str())))
            .collect();
        if !unexpected.is_empty() {
            failures.push(format!("unexpected handler runs: {unexpected:?}"));
        }

        let mut failed_by_status = BTreeMap::new();
        for r in &kopf_log {
            if !(200..300).contains(&r.status) {
                *failed_by_status.entry(r.status).or_default() += 1;
            }
        }
        let report = SoakReport {
            objects: self.names.len(),
            kills,
            successes,
            reruns: reruns_total,
            requests: log.len(),
            throttled: kopf_log.iter().filter(|r| r.retry_after.is_some()).count(),
            failed_by_status,
            watch_closes: chaos.watch_closes,
            history_expiries: chaos.history_expiries,
            max_requests_per_object: per_object.values().map(|(n, _)| *n).max().unwrap_or(0),
            elapsed: self.elapsed,
        };
        eprintln!("soak report: {report:#?}");
        assert!(
            failures.is_empty(),
            "{} soak failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        self.cluster.emu.shutdown().await;
        report
    }
}
