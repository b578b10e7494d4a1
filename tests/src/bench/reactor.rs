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
}

impl Latencies {
    fn stored(&self, name: String) {
        self.stored.lock().entry(name).or_insert_with(Instant::now);
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
            "| {} | {} | {:.2} | {:.1} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {:.0} |\n",
            r.name,
            r.objects,
            r.cpu_ms_per_object,
            r.peak_rss_mib,
            r.p50_ms(),
            r.p95_ms(),
            r.requests_per_object,
            r.patches_per_object,
            r.wall_s,
            r.start_to_watch_ms
        ));
    }
    out
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

/// Runs the scenario with `objects` objects on a fresh cluster of `backend`. `kopf` and
/// `plugin` are only used for [`Which::Kopf`]; `kopf` is the peer's binary for
/// [`Which::KubeRs`].
#[allow(clippy::too_many_lines)] // split under issue 19
pub async fn run(
    backend: Backend,
    server: ServerSpeed,
    which: Which,
    objects: usize,
    kopf: &Path,
    plugin: &Path,
) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let log = dir.path().join("operator.log");
    let emu = match backend {
        Backend::Emulator => TestCluster::start_emulator().await?,
        Backend::ApiServer => TestCluster::start_apiserver().await?,
    };
    emu.write_kubeconfig(&kubeconfig)?;
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

    let mut child = Guard(spawn(which, &kubeconfig, &log, kopf, plugin)?);
    let pid = child.0.id();
    let start = Instant::now();
    while emu.counters().get("watch", "kopfexamples") == 0 {
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
    let start_to_watch_ms = start.elapsed().as_secs_f64() * 1000.0;
    emu.reset_counters();
    let cpu_start = cpu_seconds(pid)?;
    let wall = Instant::now();
    let timeout = Duration::from_secs(600);

    // The emulator is in this process: its writes are immediate, one after the other. Over
    // HTTP to a real server, one at a time would trickle the objects in (a round trip each):
    // the benchmark's writes go out concurrently, as a burst, there too.
    let concurrency = if emu.is_real() { 32 } else { 1 };
    let emu = &emu;
    let created_at: HashMap<String, Instant> = futures::stream::iter(0..objects)
        .map(|i| async move {
            let name = format!("kex-bench-{i:05}");
            let t0 = Instant::now();
            emu.create_object(json!({
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfExample",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"field": "v1"},
            }))
            .await?;
            Ok::<_, anyhow::Error>((name, t0))
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    wait_all(emu, "all creations handled", timeout, |all| {
        all.len() == objects
            && all.iter().all(|o| {
                o.pointer("/status/create_fn").is_some()
                    && diff_base_field(o).as_deref() == Some("v1")
                    && no_progress(o)
            })
    })
    .await?;
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
    .await?;
    futures::stream::iter(0..objects)
        .map(|i| async move {
            emu.delete_object(
                "kopf.dev/v1",
                "kopfexamples",
                Some("default"),
                &format!("kex-bench-{i:05}"),
            )
            .await
        })
        .buffer_unordered(concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    wait_all(emu, "all deletions handled", timeout, |all| all.is_empty()).await?;
    let wall_s = wall.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_start;
    let rss = peak_rss_mib(pid)?;
    let counters = emu.counters();

    let stored = latencies.stored.lock().clone();
    let mut lat: Vec<f64> = created_at
        .iter()
        .filter_map(|(name, t0)| {
            stored
                .get(name)
                .map(|t1| t1.saturating_duration_since(*t0).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let stop = Instant::now();
    while child.0.try_wait()?.is_none() && stop.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(child);
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    emu.shutdown().await;
    let patches = counters.get("patch", "kopfexamples") + counters.get("patch", "kopfexamples/status");
    Ok(Figures {
        name: display_name(which),
        objects,
        cpu_ms_per_object: cpu * 1000.0 / objects as f64,
        peak_rss_mib: rss,
        latencies_ms: lat,
        requests_per_object: counters.total as f64 / objects as f64,
        patches_per_object: patches as f64 / objects as f64,
        wall_s,
        start_to_watch_ms,
    })
}
