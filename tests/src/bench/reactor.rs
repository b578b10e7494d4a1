//! The reactor scenario: one object lifecycle (create → update → delete, with create,
//! update, delete and a `spec.field` handler, each returning a dict, on a CRD with a
//! status subresource) for many objects, run by kopf or by Python Kopf against an
//! in-process API emulator or a real kube-apiserver ([`Backend`]).
//!
//! Figures per operator: CPU time (user + system) per object from readiness to the last
//! deletion, peak RSS (`VmHWM`), every object's latency from its creation to its
//! `status.create_fn` being stored (seen by an admission hook in the emulator, by a watch on
//! a real server), API and PATCH requests per object (the emulator's counters, or the real
//! server's audit log of the operator's user; reset at readiness), and the wall time.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::{StreamExt, TryStreamExt};
use kopf_testing::{AdmissionDecision, AdmissionHook, AdmissionRequest};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::{Guard, cpu_seconds, peak_rss_mib, percentile};
use crate::cluster::{Backend, TestCluster};
use crate::workspace_root;

/// When each object got its `status.create_fn`.
#[derive(Default)]
struct Latencies {
    stored: Mutex<HashMap<String, Instant>>,
    /// Woken at each first store (the one-by-one pace waits for each object's).
    changed: tokio::sync::Notify,
}

impl Latencies {
    fn stored(&self, name: String) {
        if let std::collections::hash_map::Entry::Vacant(entry) = self.stored.lock().entry(name) {
            entry.insert(Instant::now());
            self.changed.notify_waiters();
        }
    }

    /// Waits until `name`'s status is stored, up to `timeout`.
    async fn wait_stored(&self, name: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a store between the two is not missed.
            let changed = self.changed.notified();
            if self.stored.lock().contains_key(name) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!("{name}: no status.create_fn within {timeout:?}");
            }
        }
    }
}

/// On a real server: a watch of the test's own sees each object's `status.create_fn`.
async fn watch_latencies(client: kube::Client, latencies: Arc<Latencies>) {
    let resource = crate::cluster::kopfexamples();
    let api = kube::Api::<kube::api::DynamicObject>::namespaced_with(client, "default", &resource);
    let stream = kube::runtime::watcher(api, kube::runtime::watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Ok(kube::runtime::watcher::Event::Apply(obj) | kube::runtime::watcher::Event::InitApply(obj)) =
            event
            && obj.data.pointer("/status/create_fn").is_some()
            && let Some(name) = obj.metadata.name
        {
            latencies.stored(name);
        }
    }
}

impl AdmissionHook for Latencies {
    fn admit(
        &self,
        request: AdmissionRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = AdmissionDecision> + Send + '_>> {
        if request.resource == "kopfexamples"
            && request
                .object
                .as_ref()
                .is_some_and(|o| o.pointer("/status/create_fn").is_some())
        {
            self.stored(request.name);
        }
        Box::pin(async { AdmissionDecision::Allow })
    }
}

/// How fast the emulator answers (a real server answers as it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSpeed {
    /// At once.
    Fast,
    /// After 1–5 ms per request ([`SLOW_LATENCY`] plus up to [`SLOW_JITTER`]), as a
    /// loaded or remote API server does: events trickle in one by one.
    Slow,
}

/// The fixed part of a slow server's delay per request.
pub const SLOW_LATENCY: Duration = Duration::from_millis(1);

/// The random part of a slow server's delay per request.
pub const SLOW_JITTER: Duration = Duration::from_millis(4);

/// How the objects are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// All at once: the latencies include the queueing of a burst.
    Burst,
    /// One at a time, each after the previous one's status was stored: every latency is
    /// one object's reaction alone (the updates and deletions still go out at once).
    OneByOne,
}

/// Which operator runs the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The `kopf` binary with the `fixture-lifecycle-basic` plugin.
    Kopf,
    /// Python Kopf with `tests/python/lifecycle_basic_operator.py`.
    Python,
    /// The hand-written kube-rs controller `src/bin/kube_rs_peer.rs` (its path is the
    /// `kopf` argument of [`run`]).
    KubeRs,
    /// No operator logic: a task in the benchmark's own process that watches the objects
    /// and answers each creation with the two writes a create costs at least (the
    /// finalizer, then the status), over HTTP like the others. Its latency is the server's
    /// floor; it handles creations only, and its CPU and memory are not measured.
    Floor,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Figures {
    /// The operator's display name.
    pub name: &'static str,
    /// Objects in the run.
    pub objects: usize,
    /// CPU milliseconds per object.
    pub cpu_ms_per_object: f64,
    /// Peak RSS in MiB.
    pub peak_rss_mib: f64,
    /// Every object's creation → `status.create_fn` latency in ms, sorted.
    pub latencies_ms: Vec<f64>,
    /// API requests per object.
    pub requests_per_object: f64,
    /// PATCH requests per object.
    pub patches_per_object: f64,
    /// Wall seconds from the first creation to the last deletion.
    pub wall_s: f64,
    /// Milliseconds from the process start to its first watch request of the resource.
    pub start_to_watch_ms: f64,
}

impl Figures {
    /// Median latency in ms.
    pub fn p50_ms(&self) -> f64 {
        percentile(&self.latencies_ms, 0.50)
    }

    /// 95th percentile latency in ms.
    pub fn p95_ms(&self) -> f64 {
        percentile(&self.latencies_ms, 0.95)
    }

    /// 99th percentile latency in ms.
    pub fn p99_ms(&self) -> f64 {
        percentile(&self.latencies_ms, 0.99)
    }
}

/// The Markdown table of several runs (header included).
pub fn markdown_table(rows: &[Figures]) -> String {
    let mut out = String::from(
        "| operator | objects | CPU ms/object | peak RSS MiB | p50 create→status ms | p95 ms | requests/object | PATCH/object | wall s | start→watching ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} | {} |\n",
            r.name,
            r.objects,
            measured(r.cpu_ms_per_object, 2),
            measured(r.peak_rss_mib, 1),
            r.p50_ms(),
            r.p95_ms(),
            r.requests_per_object,
            r.patches_per_object,
            r.wall_s,
            measured(r.start_to_watch_ms, 0)
        ));
    }
    out
}

/// A figure with `precision` decimals, or a dash where it was not measured.
fn measured(value: f64, precision: usize) -> String {
    if value.is_nan() {
        "–".to_owned()
    } else {
        format!("{value:.precision$}")
    }
}

/// The one-line comparison of a kopf run and a Python Kopf run.
pub fn comparison(kopf: &Figures, python: &Figures) -> String {
    format!(
        "kopf vs Python Kopf: {:.1}x less CPU per object, {:.1}% of the peak RSS, {:.2} vs {:.2} PATCH requests per object.",
        python.cpu_ms_per_object / kopf.cpu_ms_per_object,
        100.0 * kopf.peak_rss_mib / python.peak_rss_mib,
        kopf.patches_per_object,
        python.patches_per_object
    )
}

/// The comparison lines of a set of runs: kopf against each peer present.
pub fn comparisons(rows: &[Figures]) -> String {
    let find = |which: Which| rows.iter().find(|r| r.name == display_name(which));
    let Some(kopf) = find(Which::Kopf) else {
        return String::new();
    };
    let mut out = String::new();
    if let Some(python) = find(Which::Python) {
        out.push_str(&comparison(kopf, python));
        out.push('\n');
    }
    if let Some(peer) = find(Which::KubeRs) {
        out.push_str(&format!(
            "kopf vs hand-written kube-rs: {:.2}x its CPU per object, {:.2}x its peak RSS, \
             p50 create→status {:.0} vs {:.0} ms, p95 {:.0} vs {:.0} ms, {:.2} vs {:.2} requests per object.\n",
            kopf.cpu_ms_per_object / peer.cpu_ms_per_object,
            kopf.peak_rss_mib / peer.peak_rss_mib,
            kopf.p50_ms(),
            peer.p50_ms(),
            kopf.p95_ms(),
            peer.p95_ms(),
            kopf.requests_per_object,
            peer.requests_per_object
        ));
    }
    out
}

fn display_name(which: Which) -> &'static str {
    match which {
        Which::Kopf => "kopf (Rust)",
        Which::Python => "Python Kopf 1.45",
        Which::KubeRs => "hand-written kube-rs",
        Which::Floor => "floor (watch + 2 PATCHes, no logic)",
    }
}

async fn wait_all(
    emu: &TestCluster,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&[Value]) -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let objects = emu.list_objects("kopf.dev/v1", "kopfexamples", Some("default"), None)?;
        if ready(&objects) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn diff_base_field(o: &Value) -> Option<String> {
    let text = o
        .pointer("/metadata/annotations/kopf.zalando.org~1last-handled-configuration")?
        .as_str()?;
    let base: Value = serde_json::from_str(text).ok()?;
    base.pointer("/spec/field")?.as_str().map(str::to_owned)
}

fn no_progress(o: &Value) -> bool {
    o.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_none_or(|a| {
            a.keys()
                .all(|k| !k.starts_with("kopf.zalando.org/") || k.ends_with("last-handled-configuration"))
        })
}

fn spawn(which: Which, kubeconfig: &Path, log: &Path, kopf: &Path, plugin: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let mut cmd = match which {
        Which::Kopf => {
            let mut cmd = Command::new(kopf);
            cmd.args(["run", "--standalone", "-A"]).arg(plugin);
            cmd
        }
        Which::KubeRs => Command::new(kopf),
        Which::Python => {
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "kopf", "run", "--standalone", "--namespace", "default"])
                .arg(workspace_root().join("tests/python/lifecycle_basic_operator.py"));
            cmd
        }
        Which::Floor => bail!("the floor runs in the benchmark's process"),
    };
    Ok(cmd
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()?)
}

/// The finalizer the floor adds (Kopf's).
const FLOOR_FINALIZER: &str = "kopf.zalando.org/KopfFinalizerMarker";

/// [`Which::Floor`]: every created object gets its finalizer, then its status, at once.
async fn floor_operator(client: kube::Client) -> Result<()> {
    use kube::api::{Patch, PatchParams, WatchEvent, WatchParams};
    let api = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        client,
        "default",
        &crate::cluster::kopfexamples(),
    );
    let version = api
        .list_metadata(&Default::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut events = api.watch(&WatchParams::default(), &version).await?.boxed();
    while let Some(event) = events.try_next().await? {
        let WatchEvent::Added(obj) = event else { continue };
        let Some(name) = obj.metadata.name else { continue };
        let api = api.clone();
        tokio::spawn(async move {
            let params = PatchParams::default();
            let finalizer = json!({"metadata": {"finalizers": [FLOOR_FINALIZER]}});
            api.patch(&name, &params, &Patch::Merge(finalizer)).await?;
            let status = json!({"status": {"create_fn": {"message": "created"}}});
            api.patch_status(&name, &params, &Patch::Merge(status)).await?;
            Ok::<_, kube::Error>(())
        });
    }
    Ok(())
}

/// A fresh cluster with the CRD, watched for the latencies, and a kubeconfig for it.
struct Bench {
    dir: tempfile::TempDir,
    emu: TestCluster,
    latencies: Arc<Latencies>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Bench {
    async fn start(backend: Backend, server: ServerSpeed) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let emu = match backend {
            Backend::Emulator => TestCluster::start_emulator().await?,
            Backend::ApiServer => TestCluster::start_apiserver().await?,
        };
        emu.write_kubeconfig(dir.path().join("kubeconfig"))?;
        emu.apply_yaml(&std::fs::read_to_string(
            workspace_root().join("examples/crd.yaml"),
        )?)
        .await?;
        let latencies = Arc::new(Latencies::default());
        let watcher = match emu.emulator() {
            Some(emulator) => {
                emulator.add_admission_hook(latencies.clone());
                if server == ServerSpeed::Slow {
                    emulator.faults().set_latency(SLOW_LATENCY);
                    emulator.faults().set_latency_jitter(SLOW_JITTER);
                }
                None
            }
            None => Some(tokio::spawn(watch_latencies(
                emu.admin_client().await?,
                latencies.clone(),
            ))),
        };
        Ok(Self {
            dir,
            emu,
            latencies,
            watcher,
        })
    }

    fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("operator.log")
    }

    /// Starts the operator process and waits until it watches the resource; returns it
    /// and the milliseconds from its start to that watch request.
    async fn spawn_watching(&self, which: Which, kopf: &Path, plugin: &Path) -> Result<(Guard, f64)> {
        let log = self.log();
        let mut child = Guard(spawn(which, &self.kubeconfig(), &log, kopf, plugin)?);
        let start = Instant::now();
        while self.emu.counters().get("watch", "kopfexamples") == 0 {
            if let Some(status) = child.0.try_wait()? {
                bail!(
                    "the operator exited ({status}):\n{}",
                    std::fs::read_to_string(&log)?
                );
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the operator did not start watching:\n{}",
                    std::fs::read_to_string(&log)?
                );
            }
            // Polled finely: this wait is also the start → watching figure.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok((child, start.elapsed().as_secs_f64() * 1000.0))
    }

    /// Creates the objects at `pace`; returns when each creation was sent.
    async fn create_all(&self, objects: usize, pace: Pace) -> Result<HashMap<String, Instant>> {
        let object = |i: usize| {
            let name = format!("kex-bench-{i:05}");
            let body = json!({
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfExample",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"field": "v1"},
            });
            (name, body)
        };
        let emu = &self.emu;
        if pace == Pace::OneByOne {
            let mut created_at = HashMap::new();
            for i in 0..objects {
                let (name, body) = object(i);
                let t0 = Instant::now();
                emu.create_object(body).await?;
                self.latencies.wait_stored(&name, Duration::from_secs(60)).await?;
                created_at.insert(name, t0);
            }
            return Ok(created_at);
        }
        // The emulator is in this process: its writes are immediate, one after the other.
        // Over HTTP to a real server, one at a time would trickle the objects in (a round
        // trip each): the benchmark's writes go out concurrently, as a burst, there too.
        let concurrency = if emu.is_real() { 32 } else { 1 };
        futures::stream::iter(0..objects)
            .map(|i| async move {
                let (name, body) = object(i);
                let t0 = Instant::now();
                emu.create_object(body).await?;
                Ok::<_, anyhow::Error>((name, t0))
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await
    }

    /// Updates every object's `spec.field` to `v2` and waits until all are handled.
    async fn update_all(&self, timeout: Duration) -> Result<()> {
        let emu = &self.emu;
        let concurrency = if emu.is_real() { 32 } else { 1 };
        let updates = emu
            .list_objects("kopf.dev/v1", "kopfexamples", Some("default"), None)?
            .into_iter()
            .map(|mut o| {
                o["spec"]["field"] = json!("v2");
                if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("resourceVersion");
                }
                if let Some(obj) = o.as_object_mut() {
                    obj.remove("status");
                }
                emu.apply_object(o)
            });
        futures::stream::iter(updates)
            .buffer_unordered(concurrency)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        wait_all(emu, "all updates handled", timeout, |all| {
            all.iter().all(|o| {
                o.pointer("/status/update_fn").is_some()
                    && diff_base_field(o).as_deref() == Some("v2")
                    && no_progress(o)
            })
        })
        .await
    }

    /// Deletes every object and waits until all are gone.
    async fn delete_all(&self, objects: usize, timeout: Duration) -> Result<()> {
        let emu = &self.emu;
        let concurrency = if emu.is_real() { 32 } else { 1 };
        futures::stream::iter(0..objects)
            .map(|i| async move {
                let name = format!("kex-bench-{i:05}");
                emu.delete_object("kopf.dev/v1", "kopfexamples", Some("default"), &name)
                    .await
            })
            .buffer_unordered(concurrency)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        wait_all(emu, "all deletions handled", timeout, |all| all.is_empty()).await
    }

    /// Every object's creation → status latency in ms, sorted.
    fn latencies_ms(&self, created_at: &HashMap<String, Instant>) -> Vec<f64> {
        let stored = self.latencies.stored.lock();
        let mut lat: Vec<f64> = created_at
            .iter()
            .filter_map(|(name, t0)| {
                stored
                    .get(name)
                    .map(|t1| t1.saturating_duration_since(*t0).as_secs_f64() * 1000.0)
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        lat
    }

    async fn shutdown(self) {
        if let Some(watcher) = self.watcher {
            watcher.abort();
        }
        self.emu.shutdown().await;
    }
}

/// Runs the scenario with `objects` objects created at once on a fresh cluster of
/// `backend`. `kopf` and `plugin` are only used for [`Which::Kopf`]; `kopf` is the peer's
/// binary for [`Which::KubeRs`].
pub async fn run(
    backend: Backend,
    server: ServerSpeed,
    which: Which,
    objects: usize,
    kopf: &Path,
    plugin: &Path,
) -> Result<Figures> {
    run_paced(backend, server, Pace::Burst, which, objects, kopf, plugin).await
}

/// [`run`], with the objects created at `pace`.
pub async fn run_paced(
    backend: Backend,
    server: ServerSpeed,
    pace: Pace,
    which: Which,
    objects: usize,
    kopf: &Path,
    plugin: &Path,
) -> Result<Figures> {
    let bench = Bench::start(backend, server).await?;
    if which == Which::Floor {
        return run_floor(bench, pace, objects).await;
    }
    let (mut child, start_to_watch_ms) = bench.spawn_watching(which, kopf, plugin).await?;
    let pid = child.0.id();
    bench.emu.reset_counters();
    let cpu_start = cpu_seconds(pid)?;
    let wall = Instant::now();
    let timeout = Duration::from_secs(600);

    let created_at = bench.create_all(objects, pace).await?;
    wait_all(&bench.emu, "all creations handled", timeout, |all| {
        all.len() == objects
            && all.iter().all(|o| {
                o.pointer("/status/create_fn").is_some()
                    && diff_base_field(o).as_deref() == Some("v1")
                    && no_progress(o)
            })
    })
    .await?;
    bench.update_all(timeout).await?;
    bench.delete_all(objects, timeout).await?;
    let wall_s = wall.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_start;
    let rss = peak_rss_mib(pid)?;
    let counters = bench.emu.counters();
    let latencies_ms = bench.latencies_ms(&created_at);

    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let stop = Instant::now();
    while child.0.try_wait()?.is_none() && stop.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(child);
    bench.shutdown().await;
    let patches = counters.get("patch", "kopfexamples") + counters.get("patch", "kopfexamples/status");
    Ok(Figures {
        name: display_name(which),
        objects,
        cpu_ms_per_object: cpu * 1000.0 / objects as f64,
        peak_rss_mib: rss,
        latencies_ms,
        requests_per_object: counters.total as f64 / objects as f64,
        patches_per_object: patches as f64 / objects as f64,
        wall_s,
        start_to_watch_ms,
    })
}

/// [`Which::Floor`]: the creations only, answered by [`floor_operator`].
async fn run_floor(bench: Bench, pace: Pace, objects: usize) -> Result<Figures> {
    let client = crate::cluster::client_from_yaml(&bench.emu.kubeconfig_yaml()).await?;
    let operator = tokio::spawn(floor_operator(client));
    while bench.emu.counters().get("watch", "kopfexamples") == 0 {
        if operator.is_finished() {
            bail!("the floor's watch ended: {:?}", operator.await);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bench.emu.reset_counters();
    let wall = Instant::now();
    let created_at = bench.create_all(objects, pace).await?;
    let timeout = Duration::from_secs(600);
    wait_all(&bench.emu, "all creations answered", timeout, |all| {
        all.len() == objects && all.iter().all(|o| o.pointer("/status/create_fn").is_some())
    })
    .await?;
    let wall_s = wall.elapsed().as_secs_f64();
    let counters = bench.emu.counters();
    let latencies_ms = bench.latencies_ms(&created_at);
    operator.abort();
    bench.shutdown().await;
    let patches = counters.get("patch", "kopfexamples") + counters.get("patch", "kopfexamples/status");
    Ok(Figures {
        name: display_name(Which::Floor),
        objects,
        cpu_ms_per_object: f64::NAN,
        peak_rss_mib: f64::NAN,
        latencies_ms,
        requests_per_object: counters.total as f64 / objects as f64,
        patches_per_object: patches as f64 / objects as f64,
        wall_s,
        start_to_watch_ms: f64::NAN,
    })
}
