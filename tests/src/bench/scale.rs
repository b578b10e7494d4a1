//! The scale scenario: `objects` objects spread over `namespaces` namespaces exist before
//! the operator starts; `kopf run -A` with a plugin holding one cheap event handler
//! (`fixture-scale-events`) lists and watches them all. Measured: the time from the
//! process start to "The operator is ready" and to the handler having seen every object
//! (fully listed), the steady-state RSS after that, and the CPU used while idle over a
//! window (nothing changes in the cluster meanwhile), plus the API requests in that window.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kopf_testing::Emulator;
use serde_json::json;

use super::{Guard, cpu_seconds, peak_rss_mib, rss_mib};
use crate::workspace_root;

/// The figures of a scale run.
#[derive(Debug, Clone)]
pub struct ScaleFigures {
    /// Objects watched.
    pub objects: usize,
    /// Namespaces they are spread over.
    pub namespaces: usize,
    /// Seconds from spawning to "The operator is ready".
    pub ready_s: f64,
    /// Seconds from spawning to the event handler having seen every object.
    pub listed_s: f64,
    /// CPU seconds used until fully listed.
    pub startup_cpu_s: f64,
    /// RSS (`VmRSS`) in MiB at the end of the idle window.
    pub rss_mib: f64,
    /// Peak RSS (`VmHWM`) in MiB.
    pub peak_rss_mib: f64,
    /// CPU used while idle, in percent of one core.
    pub idle_cpu_percent: f64,
    /// The idle window in seconds.
    pub window_s: f64,
    /// API requests during the idle window.
    pub idle_requests: u64,
}

impl ScaleFigures {
    /// The Markdown table (header included) with the targets.
    pub fn markdown_table(&self) -> String {
        format!(
            "| objects | namespaces | start → ready s | start → fully listed s | CPU s to listed | steady RSS MiB (target < 100) | peak RSS MiB | idle CPU % of a core (target < 1) | idle window s | API requests while idle |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.0} | {} |\n",
            self.objects,
            self.namespaces,
            self.ready_s,
            self.listed_s,
            self.startup_cpu_s,
            self.rss_mib,
            self.peak_rss_mib,
            self.idle_cpu_percent,
            self.window_s,
            self.idle_requests,
        )
    }
}

/// Runs the scenario with the `kopf` binary and the `fixture-scale-events` plugin.
pub async fn run(
    objects: usize,
    namespaces: usize,
    window: Duration,
    kopf: &Path,
    plugin: &Path,
) -> Result<ScaleFigures> {
    if namespaces == 0 || objects == 0 || !objects.is_multiple_of(1000) {
        bail!("need at least one namespace and a positive multiple of 1,000 objects");
    }
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let log_path = dir.path().join("operator.log");
    let emu = Emulator::builder().start().await?;
    emu.write_kubeconfig(&kubeconfig)?;
    emu.apply_yaml(&std::fs::read_to_string(
        workspace_root().join("examples/crd.yaml"),
    )?)
    .await?;
    for n in 0..namespaces {
        emu.create_object(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": format!("scale-{n:03}")},
        }))
        .await?;
    }
    for i in 0..objects {
        emu.create_object(json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {
                "name": format!("kex-{i:05}"),
                "namespace": format!("scale-{:03}", i % namespaces),
                "labels": {"bench": "scale"},
            },
            "spec": {"field": "value", "items": ["a", "b", "c"]},
        }))
        .await?;
    }

    let log = std::fs::File::create(&log_path)?;
    let started = Instant::now();
    let mut child = Guard(
        Command::new(kopf)
            .args(["run", "--standalone", "-A"])
            .arg(plugin)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("RUST_LOG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let pid = child.0.id();
    let all_seen = format!("scale-events: {objects} events");
    let mut ready_s = None;
    let listed_s = loop {
        if let Some(status) = child.0.try_wait()? {
            bail!(
                "the operator exited ({status}):\n{}",
                std::fs::read_to_string(&log_path)?
            );
        }
        let text = std::fs::read_to_string(&log_path)?;
        if ready_s.is_none() && text.contains("The operator is ready") {
            ready_s = Some(started.elapsed().as_secs_f64());
        }
        if text.contains(&all_seen) {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("not fully listed after 600 s:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let startup_cpu_s = cpu_seconds(pid)?;
    // Let the start-up's last work (e.g. deferred frees) settle before the idle window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    emu.reset_counters();
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu1 = cpu_seconds(pid)?;
    let window_s = t0.elapsed().as_secs_f64();
    let figures = ScaleFigures {
        objects,
        namespaces,
        ready_s: ready_s.unwrap_or(listed_s),
        listed_s,
        startup_cpu_s,
        rss_mib: rss_mib(pid)?,
        peak_rss_mib: peak_rss_mib(pid)?,
        idle_cpu_percent: 100.0 * (cpu1 - cpu0) / window_s,
        window_s,
        idle_requests: emu.counters().total,
    };
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let stop = Instant::now();
    while child.0.try_wait()?.is_none() && stop.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(child);
    emu.shutdown().await;
    Ok(figures)
}
