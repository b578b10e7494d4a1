//! The reactor benchmark: kopf and Python Kopf run the same object lifecycle for many
//! objects against the same in-process API emulator, or with `--apiserver` each on a fresh real
//! kube-apiserver (see `kopf_e2e::bench::reactor`).
//!
//! ```text
//! cargo run --release -p kopf-e2e --bin reactor_bench -- [--objects 1000] [--only kopf|python|kube-rs|floor] [--apiserver] [--slow] [--one-by-one]
//! ```
//!
//! `--one-by-one` creates each object after the previous one's status was stored, so each
//! latency is one object's reaction alone; the `floor` row is the server's own floor for
//! a create (a client with no logic: a watch and the two writes a create costs).
//!
//! kopf runs as a release build with the `fixture-lifecycle-basic` plugin; Python Kopf
//! runs `tests/python/lifecycle_basic_operator.py` (same handler ids and results); the
//! hand-written kube-rs controller is `src/bin/kube_rs_peer.rs` (the same writes).

use std::path::Path;

use anyhow::{Context, Result, bail};
use kopf_e2e::bench::reactor::{self, Pace, ServerSpeed, Which};
use kopf_e2e::bench::{python_kopf_version, release_kopf, release_kube_rs_peer};
use kopf_e2e::cluster::Backend;
use kopf_e2e::{Profile, plugin_path_with};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut objects = 1000usize;
    let mut only: Option<String> = None;
    let mut backend = Backend::Emulator;
    let mut speed = ServerSpeed::Fast;
    let mut pace = Pace::Burst;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--objects" => objects = args.next().context("--objects N")?.parse()?,
            "--only" => only = Some(args.next().context("--only kopf|python|kube-rs")?),
            "--apiserver" => backend = Backend::ApiServer,
            "--slow" => speed = ServerSpeed::Slow,
            "--one-by-one" => pace = Pace::OneByOne,
            "--help" | "-h" => {
                println!(
                    "reactor_bench [--objects N] [--only kopf|python|kube-rs|floor] [--apiserver] [--slow] [--one-by-one]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let mut rows = Vec::new();
    let wanted = |which: &str| only.as_deref().is_none_or(|only| only == which);
    if wanted("kopf") {
        let kopf = release_kopf()?;
        let plugin = plugin_path_with("fixture-lifecycle-basic", Profile::Release)?;
        eprintln!("running kopf with {objects} objects...");
        rows.push(reactor::run_paced(backend, speed, pace, Which::Kopf, objects, &kopf, &plugin).await?);
    }
    if wanted("python") {
        match python_kopf_version() {
            Some(version) => {
                eprintln!("running Python Kopf {version} with {objects} objects...");
                rows.push(
                    reactor::run_paced(
                        backend,
                        speed,
                        pace,
                        Which::Python,
                        objects,
                        Path::new(""),
                        Path::new(""),
                    )
                    .await?,
                );
            }
            None => eprintln!("Python Kopf is not installed (pip install kopf): skipped"),
        }
    }
    if wanted("kube-rs") {
        let peer = release_kube_rs_peer()?;
        eprintln!("running the hand-written kube-rs controller with {objects} objects...");
        rows.push(
            reactor::run_paced(backend, speed, pace, Which::KubeRs, objects, &peer, Path::new("")).await?,
        );
    }
    if wanted("floor") {
        eprintln!("running the floor (no operator logic) with {objects} objects...");
        rows.push(
            reactor::run_paced(
                backend,
                speed,
                pace,
                Which::Floor,
                objects,
                Path::new(""),
                Path::new(""),
            )
            .await?,
        );
    }
    print!("{}", reactor::markdown_table(&rows));
    print!("\n{}", reactor::comparisons(&rows));
    Ok(())
}
