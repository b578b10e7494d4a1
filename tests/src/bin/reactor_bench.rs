//! The reactor benchmark: kopf and Python Kopf run the same object lifecycle for many
//! objects against the same in-process API emulator, or with `--apiserver` each on a fresh real
//! kube-apiserver (see `kopf_e2e::bench::reactor`).
//!
//! ```text
//! cargo run --release -p kopf-e2e --bin reactor_bench -- [--objects 1000] [--only kopf|python] [--apiserver]
//! ```
//!
//! kopf runs as a release build with the `fixture-lifecycle-basic` plugin; Python Kopf
//! runs `tests/python/lifecycle_basic_operator.py` (same handler ids and results).

use std::path::Path;

use anyhow::{Context, Result, bail};
use kopf_e2e::bench::reactor::{self, Which};
use kopf_e2e::bench::{python_kopf_version, release_kopf};
use kopf_e2e::cluster::Backend;
use kopf_e2e::{Profile, plugin_path_with};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut objects = 1000usize;
    let mut only: Option<String> = None;
    let mut backend = Backend::Emulator;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--objects" => objects = args.next().context("--objects N")?.parse()?,
            "--only" => only = Some(args.next().context("--only kopf|python")?),
            "--apiserver" => backend = Backend::ApiServer,
            "--help" | "-h" => {
                println!("reactor_bench [--objects N] [--only kopf|python] [--apiserver]");
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
        rows.push(reactor::run(backend, Which::Kopf, objects, &kopf, &plugin).await?);
    }
    if only.as_deref() != Some("kopf") {
        match python_kopf_version() {
            Some(version) => {
                eprintln!("running Python Kopf {version} with {objects} objects...");
                rows.push(reactor::run(backend, Which::Python, objects, Path::new(""), Path::new("")).await?);
            }
            None => eprintln!("Python Kopf is not installed (pip install kopf): skipped"),
        }
    }
    print!("{}", reactor::markdown_table(&rows));
    if let [k, p] = &rows[..] {
        println!("\n{}", reactor::comparison(k, p));
    }
    Ok(())
}
