//! Benchmark scenarios shared by the `reactor_bench`, `scale_bench` and `bench_report`
//! binaries: process figures from `/proc`, release builds of the operator, the reactor
//! lifecycle scenario (kopf vs Python Kopf), the scale scenario, and the Markdown/SVG report.

pub mod reactor;
pub mod report;
pub mod scale;

use std::path::PathBuf;
use std::process::{Child, Command};

use anyhow::{Context, Result, bail};

use crate::{target_dir, workspace_root};

/// Kills and reaps a child process when dropped.
#[derive(Debug)]
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if unknown).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process (`/proc/<pid>/stat`).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

fn status_kib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("bad {field}"))?
        .parse()?)
}

/// Peak resident set size in MiB (`VmHWM`).
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    Ok(status_kib(pid, "VmHWM:")? / 1024.0)
}

/// Current resident set size in MiB (`VmRSS`).
pub fn rss_mib(pid: u32) -> Result<f64> {
    Ok(status_kib(pid, "VmRSS:")? / 1024.0)
}

/// The `p` quantile (0..=1) of sorted values (nearest rank; NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Builds the release `kopf` binary and returns its path (or `$KOPF_BENCH_KOPF`, unbuilt).
pub fn release_kopf() -> Result<PathBuf> {
    // Another binary or a wrapper (e.g. `heaptrack` around a glibc build), for profiling.
    if let Some(path) = std::env::var_os("KOPF_BENCH_KOPF") {
        return Ok(PathBuf::from(path));
    }
    let status = crate::cargo_command()
        .args(["build", "--release", "-p", "kopf-cli", "--bin", "kopf"])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .status()?;
    if !status.success() {
        bail!("cannot build the release kopf binary");
    }
    Ok(target_dir().join("release").join("kopf"))
}

/// The benchmarks' hand-written kube-rs controller (`src/bin/kube_rs_peer.rs`), built
/// for release.
pub fn release_kube_rs_peer() -> Result<PathBuf> {
    let status = crate::cargo_command()
        .args(["build", "--release", "-p", "kopf-e2e", "--bin", "kube_rs_peer"])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .status()?;
    if !status.success() {
        bail!("cannot build the release kube-rs peer");
    }
    Ok(target_dir().join("release").join("kube_rs_peer"))
}

/// The installed Python Kopf's version, if `python3 -c 'import kopf'` works.
pub fn python_kopf_version() -> Option<String> {
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
