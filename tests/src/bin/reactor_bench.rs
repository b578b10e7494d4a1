//! The reactor benchmark: one object lifecycle (create → update → delete, with create,
//! update, delete and a `spec.field` handler, each returning a dict, on a CRD with a
//! status subresource) for many objects, run by kopf and by Python Kopf against the same
//! in-process API emulator, side by side.
//!
//! ```text
//! cargo run --release -p kopf-e2e --bin reactor_bench -- [--objects 1000] [--only kopf|python]
//! ```
//!
//! Reported per operator: CPU time (user + system, from `/proc/<pid>/stat`) per object
//! from readiness to the last deletion, peak RSS (`VmHWM`), p50/p95 latency from an
//! object's creation to its `status.create_fn` being stored (seen by an admission hook
//! in the emulator), API requests and PATCH requests per object (emulator counters, reset
//! at readiness, so discovery and start-up are not counted), and the wall time. kopf
//! runs as a release build with the `fixture-lifecycle-basic` plugin; Python Kopf runs
//! `tests/python/lifecycle_basic_operator.py` (same handler ids and results).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kopf_e2e::{Profile, plugin_path_with, target_dir, workspace_root};
use kopf_testing::{AdmissionDecision, AdmissionHook, AdmissionRequest, Emulator, EmulatorHandle};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// When each object got its `status.create_fn`.
#[derive(Default)]
struct Latencies {
    stored: Mutex<HashMap<String, Instant>>,
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
            self.stored
                .lock()
                .entry(request.name)
                .or_insert_with(Instant::now);
        }
        Box::pin(async { AdmissionDecision::Allow })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Which {
    Kopf,
    Python,
}

struct Figures {
    name: &'static str,
    objects: usize,
    cpu_ms_per_object: f64,
    peak_rss_mib: f64,
    p50_ms: f64,
    p95_ms: f64,
    requests_per_object: f64,
    patches_per_object: f64,
    wall_s: f64,
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

/// Peak resident set size in MiB.
fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kib: f64 = line.split_whitespace().nth(1).context("bad VmHWM")?.parse()?;
    Ok(kib / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn wait_all(
    emu: &EmulatorHandle,
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

async fn run(which: Which, objects: usize, kopf: &Path, plugin: &Path) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let log = dir.path().join("operator.log");
    let emu = Emulator::builder().start().await?;
    emu.write_kubeconfig(&kubeconfig)?;
    emu.apply_yaml(&std::fs::read_to_string(
        workspace_root().join("examples/crd.yaml"),
    )?)
    .await?;
    let latencies = Arc::new(Latencies::default());
    emu.add_admission_hook(latencies.clone());

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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    emu.reset_counters();
    let cpu_start = cpu_seconds(pid)?;
    let wall = Instant::now();
    let timeout = Duration::from_secs(600);

    let mut created_at: HashMap<String, Instant> = HashMap::new();
    for i in 0..objects {
        let name = format!("kex-bench-{i:05}");
        created_at.insert(name.clone(), Instant::now());
        emu.create_object(json!({
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfExample",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"field": "v1"},
        }))
        .await?;
    }
    wait_all(&emu, "all creations handled", timeout, |all| {
        all.len() == objects
            && all.iter().all(|o| {
                o.pointer("/status/create_fn").is_some()
                    && diff_base_field(o).as_deref() == Some("v1")
                    && no_progress(o)
            })
    })
    .await?;
    for mut o in emu.list_objects("kopf.dev/v1", "kopfexamples", Some("default"), None)? {
        o["spec"]["field"] = json!("v2");
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        if let Some(obj) = o.as_object_mut() {
            obj.remove("status");
        }
        emu.apply_object(o).await?;
    }
    wait_all(&emu, "all updates handled", timeout, |all| {
        all.iter().all(|o| {
            o.pointer("/status/update_fn").is_some()
                && diff_base_field(o).as_deref() == Some("v2")
                && no_progress(o)
        })
    })
    .await?;
    for i in 0..objects {
        emu.delete_object(
            "kopf.dev/v1",
            "kopfexamples",
            Some("default"),
            &format!("kex-bench-{i:05}"),
        )
        .await?;
    }
    wait_all(&emu, "all deletions handled", timeout, |all| all.is_empty()).await?;
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
    emu.shutdown().await;
    let patches = counters.get("patch", "kopfexamples") + counters.get("patch", "kopfexamples/status");
    Ok(Figures {
        name: match which {
            Which::Kopf => "kopf (Rust)",
            Which::Python => "Python Kopf 1.45",
        },
        objects,
        cpu_ms_per_object: cpu * 1000.0 / objects as f64,
        peak_rss_mib: rss,
        p50_ms: percentile(&lat, 0.50),
        p95_ms: percentile(&lat, 0.95),
        requests_per_object: counters.total as f64 / objects as f64,
        patches_per_object: patches as f64 / objects as f64,
        wall_s,
    })
}

fn python_kopf_version() -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import kopf, importlib.metadata as m; print(m.version('kopf'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn release_kopf() -> Result<PathBuf> {
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "-p", "kopf-cli", "--bin", "kopf"])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .status()?;
    if !status.success() {
        bail!("cannot build the release kopf binary");
    }
    Ok(target_dir().join("release").join("kopf"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut objects = 1000usize;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--objects" => objects = args.next().context("--objects N")?.parse()?,
            "--only" => only = Some(args.next().context("--only kopf|python")?),
            "--help" | "-h" => {
                println!("reactor_bench [--objects N] [--only kopf|python]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let mut rows = Vec::new();
    if only.as_deref() != Some("python") {
        let kopf = release_kopf()?;
        let plugin = plugin_path_with("fixture-lifecycle-basic", Profile::Release)?;
        eprintln!("running kopf with {objects} objects...");
        rows.push(run(Which::Kopf, objects, &kopf, &plugin).await?);
    }
    if only.as_deref() != Some("kopf") {
        match python_kopf_version() {
            Some(version) => {
                eprintln!("running Python Kopf {version} with {objects} objects...");
                rows.push(run(Which::Python, objects, Path::new(""), Path::new("")).await?);
            }
            None => eprintln!("Python Kopf is not installed (pip install kopf): skipped"),
        }
    }
    println!(
        "| operator | objects | CPU ms/object | peak RSS MiB | p50 create→status ms | p95 ms | requests/object | PATCH/object | wall s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.2} | {:.1} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} |",
            r.name,
            r.objects,
            r.cpu_ms_per_object,
            r.peak_rss_mib,
            r.p50_ms,
            r.p95_ms,
            r.requests_per_object,
            r.patches_per_object,
            r.wall_s
        );
    }
    if let [k, p] = &rows[..] {
        println!(
            "\nkopf vs Python Kopf: {:.1}x less CPU per object, {:.1}% of the peak RSS, {:.2} vs {:.2} PATCH requests per object.",
            p.cpu_ms_per_object / k.cpu_ms_per_object,
            100.0 * k.peak_rss_mib / p.peak_rss_mib,
            k.patches_per_object,
            p.patches_per_object
        );
    }
    Ok(())
}
