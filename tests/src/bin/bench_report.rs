//! Runs the performance scenarios and writes a Markdown report with SVG plots:
//! the reactor lifecycle for kopf and Python Kopf on the same emulator
//! (`kopf_e2e::bench::reactor`), and the scale scenario (`kopf_e2e::bench::scale`).
//!
//! ```text
//! cargo run --release -p kopf-e2e --bin bench_report -- [--objects 1000] \
//!     [--scale-objects 10000] [--namespaces 100] [--window 30] [--no-python] [--no-scale] \
//!     [--out docs/benchmark-report.md]
//! ```
//!
//! The plots go next to the report: `<stem>-latency.svg` and `<stem>-resources.svg`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kopf_e2e::bench::reactor::{self, ServerSpeed, Which};
use kopf_e2e::bench::report::{Machine, latency_cdf_svg, resources_svg};
use kopf_e2e::bench::{python_kopf_version, release_kopf, release_kube_rs_peer, scale};
use kopf_e2e::cluster::Backend;
use kopf_e2e::{Profile, plugin_path_with, workspace_root};

struct Options {
    objects: usize,
    scale_objects: usize,
    namespaces: usize,
    window: f64,
    python: bool,
    scale: bool,
    apiserver_objects: usize,
    slow_objects: usize,
    out: PathBuf,
}

fn parse() -> Result<Option<Options>> {
    let mut o = Options {
        objects: 1000,
        scale_objects: 10_000,
        namespaces: 100,
        window: 30.0,
        python: true,
        scale: true,
        apiserver_objects: 300,
        slow_objects: 300,
        out: workspace_root().join("docs/benchmark-report.md"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--objects" => o.objects = args.next().context("--objects N")?.parse()?,
            "--scale-objects" => o.scale_objects = args.next().context("--scale-objects N")?.parse()?,
            "--namespaces" => o.namespaces = args.next().context("--namespaces N")?.parse()?,
            "--window" => o.window = args.next().context("--window SECONDS")?.parse()?,
            "--no-python" => o.python = false,
            "--no-scale" => o.scale = false,
            "--slow-objects" => {
                o.slow_objects = args
                    .next()
                    .context("--slow-objects N (0: no slow-server section)")?
                    .parse()?;
            }
            "--apiserver-objects" => {
                o.apiserver_objects = args
                    .next()
                    .context("--apiserver-objects N (0: no real-server section)")?
                    .parse()?
            }
            "--out" => o.out = PathBuf::from(args.next().context("--out FILE.md")?),
            "--help" | "-h" => {
                println!(
                    "bench_report [--objects 1000] [--scale-objects 10000] [--namespaces 100] [--window 30] [--no-python] [--no-scale] [--apiserver-objects 300] [--slow-objects 300] [--out docs/benchmark-report.md]"
                );
                return Ok(None);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if o.objects == 0 {
        bail!("--objects must be positive");
    }
    Ok(Some(o))
}

/// The lifecycle scenario for kopf and (if wanted) Python Kopf, on fresh clusters of `backend`.
async fn lifecycle_rows(
    backend: Backend,
    speed: ServerSpeed,
    n: usize,
    python: bool,
    kopf: &Path,
    plugin: &Path,
) -> Result<Vec<reactor::Figures>> {
    eprintln!("reactor scenario ({backend:?}): kopf with {n} objects...");
    let mut rows = vec![reactor::run(backend, speed, Which::Kopf, n, kopf, plugin).await?];
    if python {
        match python_kopf_version() {
            Some(version) => {
                eprintln!("reactor scenario ({backend:?}): Python Kopf {version} with {n} objects...");
                rows.push(
                    reactor::run(backend, speed, Which::Python, n, Path::new(""), Path::new("")).await?,
                );
            }
            None => eprintln!("Python Kopf is not installed (pip install kopf): skipped"),
        }
    }
    let peer = release_kube_rs_peer()?;
    eprintln!("reactor scenario ({backend:?}): the hand-written kube-rs controller with {n} objects...");
    rows.push(reactor::run(backend, speed, Which::KubeRs, n, &peer, Path::new("")).await?);
    Ok(rows)
}

/// The latency percentiles of some runs, as a Markdown table with its heading line.
fn percentiles_table(rows: &[reactor::Figures]) -> String {
    let mut md = String::from(
        "\nLatency percentiles (ms):\n\n| operator | p50 | p95 | p99 | max |\n|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.name,
            r.p50_ms(),
            r.p95_ms(),
            r.p99_ms(),
            r.latencies_ms.last().copied().unwrap_or(f64::NAN)
        );
    }
    md
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "report".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}-{suffix}.svg"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // split under issue 19
async fn main() -> Result<()> {
    let Some(options) = parse()? else {
        return Ok(());
    };
    let kopf = release_kopf()?;
    let machine = Machine::probe(&kopf);
    let plugin = plugin_path_with("fixture-lifecycle-basic", Profile::Release)?;
    let n = options.objects;
    eprintln!("reactor scenario: kopf with {n} objects...");
    let rows = lifecycle_rows(
        Backend::Emulator,
        ServerSpeed::Fast,
        n,
        options.python,
        &kopf,
        &plugin,
    )
    .await?;
    let slow_n = options.slow_objects;
    let slow_rows = if slow_n > 0 {
        lifecycle_rows(
            Backend::Emulator,
            ServerSpeed::Slow,
            slow_n,
            options.python,
            &kopf,
            &plugin,
        )
        .await?
    } else {
        Vec::new()
    };
    let real_n = options.apiserver_objects;
    let real_rows = if real_n > 0 {
        lifecycle_rows(
            Backend::ApiServer,
            ServerSpeed::Fast,
            real_n,
            options.python,
            &kopf,
            &plugin,
        )
        .await?
    } else {
        Vec::new()
    };
    let scaled = if options.scale {
        let plugin = plugin_path_with("fixture-scale-events", Profile::Release)?;
        eprintln!(
            "scale scenario: {} objects in {} namespaces, {} s idle window...",
            options.scale_objects, options.namespaces, options.window
        );
        Some(
            scale::run(
                options.scale_objects,
                options.namespaces,
                Duration::try_from_secs_f64(options.window).context("--window must be positive seconds")?,
                &kopf,
                &plugin,
            )
            .await?,
        )
    } else {
        None
    };

    let latency_svg = sibling(&options.out, "latency");
    let resources_svg_path = sibling(&options.out, "resources");
    let name = |p: &Path| {
        p.file_name()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
    };
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmark report\n");
    let _ = writeln!(
        md,
        "Generated by `cargo run --release -p kopf-e2e --bin bench_report -- --objects {n}` \
         (see `docs/benchmarks.md` for the method). Both operators run against the same \
         in-process API emulator, one after the other, on this machine:\n"
    );
    md.push_str(&machine.markdown_table());
    let _ = writeln!(
        md,
        "\n## Object lifecycle: kopf vs Python Kopf\n\n\
         Each of {n} objects is created, updated (`spec.field`) and deleted, with a create, \
         an update, a delete and a `spec.field` handler each returning a dict (kopf: release \
         build with `tests/fixtures/lifecycle-basic`; Python Kopf: \
         `tests/python/lifecycle_basic_operator.py`; the hand-written kube-rs controller: \
         `tests/src/bin/kube_rs_peer.rs`, a `Controller` with `kube::runtime::finalizer` and \
         the same six writes per object). All objects are created at once, so \
         latencies include queueing. CPU is user + system time of the operator process from \
         readiness to the last deletion; RSS is the peak (`VmHWM`); requests are counted by \
         the emulator.\n"
    );
    md.push_str(&reactor::markdown_table(&rows));
    let _ = write!(md, "\n{}", reactor::comparisons(&rows));
    let _ = writeln!(
        md,
        "\n![latency CDF]({})\n\n![resources per object]({})\n",
        name(&latency_svg),
        name(&resources_svg_path)
    );
    md.push_str(&percentiles_table(&rows));
    if !slow_rows.is_empty() {
        let _ = writeln!(
            md,
            "\n## Object lifecycle on a slow server\n\n\
             The same lifecycle with {slow_n} objects on the emulator answering every request \
             after {} ms plus up to {} ms more at random, as a loaded or remote API server does \
             (events trickle in one by one). CPU per object should stay close to the fast \
             server's.\n",
            reactor::SLOW_LATENCY.as_millis(),
            reactor::SLOW_JITTER.as_millis()
        );
        md.push_str(&reactor::markdown_table(&slow_rows));
        let _ = write!(md, "\n{}", reactor::comparisons(&slow_rows));
        md.push_str(&percentiles_table(&slow_rows));
    }
    if !real_rows.is_empty() {
        let _ = writeln!(
            md,
            "\n## Object lifecycle on a real kube-apiserver\n\n\
             The same lifecycle with {real_n} objects, each operator on a fresh real \
             kube-apiserver {} with an in-process etcd (`tests/apiserver/run`, on this machine, so \
             the server's CPU competes with the operator's). Requests are the operator's own, \
             counted from the server's audit log (the operator runs as a user of its own); \
             latencies are seen by a watch of the benchmark's own.\n",
            kopf_e2e::cluster::apiserver_version()
        );
        md.push_str(&reactor::markdown_table(&real_rows));
        let _ = write!(md, "\n{}", reactor::comparisons(&real_rows));
        md.push_str(&percentiles_table(&real_rows));
    }
    if let Some(s) = &scaled {
        let _ = writeln!(
            md,
            "\n## Scale: {} objects in {} namespaces, `kopf run -A`\n\n\
             The objects exist before the operator starts; the plugin \
             (`tests/fixtures/scale-events`) has one event handler that only counts events. \
             \"Fully listed\" is when that handler has seen every object. RSS is `VmRSS` at \
             the end of an idle window of {:.0} s (nothing changes in the cluster), CPU is \
             the operator's user + system time over that window.\n",
            s.objects, s.namespaces, s.window_s
        );
        md.push_str(&s.markdown_table());
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let _ = writeln!(
            md,
            "\nTargets: RSS under 100 MiB — {}; idle CPU under 1% of a core — {}.",
            verdict(s.rss_mib < 100.0),
            verdict(s.idle_cpu_percent < 1.0)
        );
    }
    if let Some(dir) = options.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&latency_svg, latency_cdf_svg(&rows))?;
    std::fs::write(&resources_svg_path, resources_svg(&rows))?;
    std::fs::write(&options.out, &md)?;
    print!("{md}");
    eprintln!("wrote {}", options.out.display());
    Ok(())
}
