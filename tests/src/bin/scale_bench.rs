//! The scale benchmark: 10,000 objects in 100 namespaces watched by `kopf run -A` (see
//! `kopf_e2e::bench::scale`): start-up time to fully listed, steady-state RSS, idle CPU.
//!
//! ```text
//! cargo run --release -p kopf-e2e --bin scale_bench -- [--objects 10000] [--namespaces 100] [--window 30]
//! ```

use std::time::Duration;

use anyhow::{Context, Result, bail};
use kopf_e2e::bench::{release_kopf, scale};
use kopf_e2e::{Profile, plugin_path_with};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut objects = 10_000usize;
    let mut namespaces = 100usize;
    let mut window = 30.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--objects" => objects = args.next().context("--objects N")?.parse()?,
            "--namespaces" => namespaces = args.next().context("--namespaces N")?.parse()?,
            "--window" => window = args.next().context("--window SECONDS")?.parse()?,
            "--help" | "-h" => {
                println!("scale_bench [--objects 10000] [--namespaces 100] [--window 30]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let kopf = release_kopf()?;
    let plugin = plugin_path_with("fixture-scale-events", Profile::Release)?;
    eprintln!("running kopf -A over {objects} objects in {namespaces} namespaces...");
    let figures = scale::run(
        objects,
        namespaces,
        Duration::try_from_secs_f64(window).context("--window must be a positive number of seconds")?,
        &kopf,
        &plugin,
    )
    .await?;
    print!("{}", figures.markdown_table());
    Ok(())
}
