//! The `kopf` binary.

use std::process::ExitCode;

/// jemalloc instead of glibc's allocator: under a burst of objects the operator spent
/// a quarter of its CPU in glibc's malloc/free (see docs/benchmarks.md).
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: one arena instead of four per CPU, and thread caches only for
/// small sizes (up to 1 KiB). The operator's threads are many (plugins' blocking pools)
/// and mostly idle; per-CPU arenas and per-thread caches of large sizes each kept their
/// own free memory. With 10,000 objects with timers, one arena took ~3 MiB off the RSS
/// and ~20 MiB off the peak; small-only caches lowered the peak further in most runs
/// (runs vary by ±4 MiB); the 1,000-object lifecycle showed no CPU difference (docs/benchmarks.md).
/// `_RJEM_MALLOC_CONF` in the environment still overrides it.
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
// SAFETY: jemalloc reads this C string (a pointer to NUL-terminated bytes) once, at its
// initialisation; it is immutable and static.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &b"narenas:1,tcache_max:1024\0"[0];

use anyhow::Result;
use clap::Parser;
use kopf_cli::cli::{Cli, Command};
use kopf_cli::commands;
use kopf_cli::observability::logging::{self, LogConfig, Verbosity};
use kopf_cli::observability::objects::LogLines;
use kopf_cli::plugin::{PluginError, PluginSet};

/// How long `kopf run` waits for still-running handler calls after the operator stopped.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The engine's threads unless `TOKIO_WORKER_THREADS` says otherwise. One, like Kopf's
/// single event loop: handlers run on the plugin's own threads, and with fewer engine
/// threads fewer cross-thread wake-ups are paid (~10% less CPU per object in the reactor
/// benchmark on 2 cores); one thread processes well over 1,000 objects per second.
const ENGINE_THREADS: usize = 1;

fn engine_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(ENGINE_THREADS);
    }
    builder.enable_all().build()
}

fn main() -> ExitCode {
    // Usage errors exit with 2 inside `parse` (and --help/--version with 0).
    let mut cli = Cli::parse();
    cli.command = cli.command.resolve_aliases();
    let debug = match &cli.command {
        Command::Run(args) => args.debug,
        Command::Inspect(args) => args.debug,
        Command::Version
        | Command::Emulator(_)
        | Command::New(_)
        | Command::Completions(_)
        | Command::Crd(_) => false,
        Command::Peering(args) => args.debug,
        Command::Rbac(args) => args.debug,
        Command::Freeze(_) | Command::Resume(_) => false,
    };
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err, debug);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error: one line normally; the chain and any detail with `--debug`.
fn report(err: &anyhow::Error, debug: bool) {
    let line = err
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("kopf: error: {line}");
    if debug {
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        if let Some(detail) = err.downcast_ref::<PluginError>().and_then(PluginError::detail) {
            eprintln!("kopf: error detail:\n{detail}");
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Version => write_stdout(&commands::version::version_text()),
        Command::Completions(args) => write_stdout(&kopf_cli::cli::completions(args.shell)),
        Command::Inspect(args) => {
            let verbosity = if args.debug {
                Verbosity::Debug
            } else if args.verbose {
                Verbosity::Verbose
            } else {
                Verbosity::Quiet
            };
            init_logging(LogConfig {
                verbosity,
                ..LogConfig::default()
            })?;
            let plugins = PluginSet::load(&args.plugins)?;
            let text = if args.json {
                commands::inspect::to_json(&plugins)? + "\n"
            } else {
                commands::inspect::to_table(&plugins)
            };
            write_stdout(&text)
        }
        Command::Peering(args) => {
            init_logging(LogConfig::default())?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(commands::peering::run(args))
        }
        Command::Rbac(args) => write_stdout(&commands::rbac::run(args)?),
        Command::Crd(args) => write_stdout(&commands::crd::run(&args)?),
        alias @ (Command::Freeze(_) | Command::Resume(_)) => dispatch(Cli {
            command: alias.resolve_aliases(),
        }),
        Command::New(args) => commands::new::run(args),
        Command::Emulator(args) => {
            init_logging(LogConfig::default())?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(commands::emulator::run(args))
        }
        Command::Run(args) => {
            let options = args.to_options();
            let lines = init_logging(options.log.clone())?;
            let runtime = engine_runtime()?;
            let result = runtime.block_on(commands::run::run(options, args.embedded_cluster(), lines));
            // Handler calls that never return (abandoned after their timeout) must not keep
            // the process alive: give running calls a grace period, then exit anyway.
            let started = std::time::Instant::now();
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
            if started.elapsed() >= SHUTDOWN_GRACE {
                tracing::warn!(
                    "Handler calls were still running {}s after the operator stopped; exiting without them.",
                    SHUTDOWN_GRACE.as_secs()
                );
            }
            result
        }
    }
}

/// Installs the log subscriber with `RUST_LOG` (if set) replacing the verbosity's levels;
/// returns the switch through which an operator posts object log lines as events.
fn init_logging(config: LogConfig) -> Result<LogLines> {
    let config = LogConfig {
        filter: std::env::var("RUST_LOG").ok(),
        ..config
    };
    let lines = LogLines::default();
    logging::init(&config, &lines)?;
    Ok(lines)
}

/// Writes to stdout; a closed pipe (`kopf inspect ... | head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
