//! The scale-out benchmark: the throughput of 1..=N replicas of `kopf run --sharding` on
//! the emulator, each object's create handler taking 50 ms (`fixture-scale-out`). For
//! each ring size: a fresh emulator, the replicas started and the ring formed, then all
//! objects created at once; the time until every object's result is in its status.
//!
//! ```text
//! cargo run --release -p kopf-e2e --bin sharding_bench -- [--objects 1000] [--replicas 4] [--sleep-ms 50]
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kopf_e2e::bench::{cpu_seconds, release_kopf};
use kopf_e2e::{Profile, plugin_path_with};
use kopf_testing::runner::KopfProcess;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(600);

struct Figures {
    replicas: usize,
    seconds: f64,
    cpu_seconds: f64,
    requests: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let (mut objects, mut replicas, mut sleep_ms) = (1000usize, 4usize, 50u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--objects" => objects = args.next().context("--objects N")?.parse()?,
            "--replicas" => replicas = args.next().context("--replicas N")?.parse()?,
            "--sleep-ms" => sleep_ms = args.next().context("--sleep-ms MS")?.parse()?,
            "--help" | "-h" => {
                println!("sharding_bench [--objects 1000] [--replicas 4] [--sleep-ms 50]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let kopf = release_kopf()?;
    let plugin = plugin_path_with("fixture-scale-out", Profile::Release)?;
    let mut rows = Vec::new();
    for size in 1..=replicas {
        eprintln!("{size} replica(s), {objects} objects, {sleep_ms} ms handlers...");
        rows.push(run(size, objects, sleep_ms, &kopf, &plugin).await?);
    }
    println!(
        "| replicas | seconds | objects/s | speed-up | efficiency | kopf CPU s (all replicas) | API requests |"
    );
    println!("|---|---|---|---|---|---|---|");
    let base = rows.first().map_or(1.0, |r| r.seconds);
    for r in &rows {
        let speedup = base / r.seconds;
        println!(
            "| {} | {:.2} | {:.0} | {:.2}x | {:.0}% | {:.2} | {} |",
            r.replicas,
            r.seconds,
            objects as f64 / r.seconds,
            speedup,
            100.0 * speedup / r.replicas as f64,
            r.cpu_seconds,
            r.requests
        );
    }
    Ok(())
}

async fn run(size: usize, objects: usize, sleep_ms: u64, kopf: &Path, plugin: &Path) -> Result<Figures> {
    let emu = kopf_testing::Emulator::builder().start().await?;
    let crd = std::fs::read_to_string(kopf_e2e::workspace_root().join("examples/crd.yaml"))?;
    emu.apply_yaml(&crd).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig)?;
    let mut processes = Vec::new();
    for i in 0..size {
        let args = ["run", "-A", "--standalone", "--sharding", "default/bench"]
            .map(str::to_owned)
            .into_iter()
            .chain([plugin.display().to_string()]);
        let envs = [
            ("KUBECONFIG", kubeconfig.display().to_string()),
            ("POD_ID", format!("r{i}")),
            ("KOPF_SCALE_OUT_SLEEP_MS", sleep_ms.to_string()),
        ];
        processes.push(KopfProcess::spawn_program(kopf, args, envs)?);
    }
    let formed = format!("share of {size} members");
    for process in &mut processes {
        process.wait_for_line(&formed, DEADLINE)?;
    }
    let cpu_before: f64 = processes.iter().map(|p| cpu_seconds(p.id()).unwrap_or(0.0)).sum();
    let requests_before = emu.counters().total;
    let started = Instant::now();
    for i in 0..objects {
        emu.create_object(json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": format!("b-{i}"), "namespace": "default"},
            "spec": {"field": "x"},
        }))
        .await?;
    }
    loop {
        let done = emu
            .list_objects("kopf.dev/v1", "kopfexamples", Some("default"), None)?
            .iter()
            .filter(|o| o.pointer("/status/create_fn").is_some())
            .count();
        if done == objects {
            break;
        }
        if started.elapsed() > DEADLINE {
            bail!("only {done} of {objects} objects handled in {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after: f64 = processes.iter().map(|p| cpu_seconds(p.id()).unwrap_or(0.0)).sum();
    let requests = emu.counters().total - requests_before;
    for process in &processes {
        let _ = process.signal("TERM");
    }
    for process in &mut processes {
        let _ = process.wait_exit(Duration::from_secs(30));
    }
    emu.shutdown().await;
    Ok(Figures {
        replicas: size,
        seconds,
        cpu_seconds: cpu_after - cpu_before,
        requests,
    })
}
