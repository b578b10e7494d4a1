//! Command-line definitions (clap), converted here into the plain options the engine
//! consumes ([`crate::options`]).
//!
//! Every `kopf run` option has a `KOPF_RUN_*` environment variable, as Python Kopf's
//! `auto_envvar_prefix='KOPF'` gives (`KOPF_RUN_PEERING`, `KOPF_RUN_NAMESPACE`, ...).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::admission::WebhookArgs;
use crate::commands::run::EmbeddedCluster;
use crate::observability::logging::{LogConfig, LogFormat, Verbosity};
use crate::options::{DEV_PRIORITY, RunOptions, WebhookOptions};
use crate::structs::references;

/// Exit codes of `kopf` itself, whichever the command.
pub const TOP_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done (run and emulator: a graceful stop on SIGINT/SIGTERM)
  1  failure, including any plugin that cannot be loaded
  2  usage error (unknown or conflicting options)
  137  run only: a graceful stop unfinished after settings.process.ultimate_exiting_timeout";

/// Exit codes of the long-running `kopf emulator`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  graceful stop (SIGINT/SIGTERM)
  1  runtime failure, including any plugin that cannot be loaded
  2  usage error (unknown or conflicting options)";

/// Exit codes of the one-shot commands (they end by themselves, no signal needed).
pub const ONESHOT_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done
  1  failure, including any plugin that cannot be loaded
  2  usage error (unknown or conflicting options)";

/// The help headings of `kopf run`'s options.
mod heading {
    pub const LOGGING: &str = "Logging";
    pub const SCOPE: &str = "Namespaces";
    pub const PEERING: &str = "Peering and leader election";
    pub const PROBES: &str = "Probes and metrics";
    pub const EMBEDDED: &str = "Embedded emulator (no cluster)";
    pub const WEBHOOKS: &str = "Admission webhooks";
}

/// The end of `kopf run --help`: exit codes and environment notes.
pub const RUN_AFTER_HELP: &str = "\
Every option can also be set with its KOPF_RUN_* environment variable (shown above).
RUST_LOG, when set, replaces the log levels chosen by -v/-d/-q (tracing EnvFilter syntax).

Exit codes:
  0  graceful stop (SIGINT/SIGTERM)
  1  runtime failure, including any plugin that cannot be loaded
  2  usage error (unknown or conflicting options)
  137  a graceful stop unfinished after settings.process.ultimate_exiting_timeout";

/// The `kopf` command line.
#[derive(Debug, Parser)]
#[command(
    name = "kopf",
    version,
    about = "Run Kopf-style Kubernetes operators whose handlers live in Rust plugins.",
    after_help = TOP_EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the plugins and run the operator until SIGINT/SIGTERM.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Load the plugins and show their handlers.
    #[command(after_help = ONESHOT_EXIT_CODES_HELP)]
    Inspect(InspectArgs),
    /// Show the kopf version, the plugin ABI revision and build information.
    Version,
    /// Serve a Kubernetes API emulator on loopback (a throw-away cluster for tests and demos).
    #[command(after_help = EXIT_CODES_HELP)]
    Emulator(crate::commands::emulator::EmulatorArgs),
    /// Administer peering: list peers, freeze or resume operators, clean dead records.
    #[command(after_help = ONESHOT_EXIT_CODES_HELP)]
    Peering(crate::commands::peering::PeeringArgs),
    /// Kopf's `kopf freeze`: the same as `kopf peering freeze`.
    #[command(after_help = ONESHOT_EXIT_CODES_HELP)]
    Freeze(crate::commands::peering::FreezeArgs),
    /// Kopf's `kopf resume`: the same as `kopf peering resume`.
    #[command(after_help = ONESHOT_EXIT_CODES_HELP)]
    Resume(crate::commands::peering::ResumeArgs),
    /// Generate least-privilege RBAC for the plugins' handlers.
    #[command(after_help = ONESHOT_EXIT_CODES_HELP)]
    Rbac(crate::commands::rbac::RbacArgs),
    /// Scaffold a new operator crate.
    #[command(after_help = ONESHOT_EXIT_CODES_HELP)]
    New(crate::commands::new::NewArgs),
    /// Print the CRDs of the Rust types the plugins' handlers select by (kube's CustomResource).
    #[command(after_help = ONESHOT_EXIT_CODES_HELP)]
    Crd(crate::commands::crd::CrdArgs),
    /// Print a shell completion script (e.g. `kopf completions bash > /etc/bash_completion.d/kopf`).
    #[command(after_help = ONESHOT_EXIT_CODES_HELP)]
    Completions(CompletionsArgs),
}

/// `kopf completions` arguments.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The completion script of `kopf` for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    use clap::CommandFactory as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "kopf", &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

impl Command {
    /// Kopf's top-level `freeze`/`resume` as the `peering` subcommands they stand for.
    pub fn resolve_aliases(self) -> Self {
        use crate::commands::peering::{PeeringArgs, PeeringCommand};
        let peering = |command| {
            Self::Peering(PeeringArgs {
                debug: false,
                command,
            })
        };
        match self {
            Self::Freeze(args) => peering(PeeringCommand::Freeze(args)),
            Self::Resume(args) => peering(PeeringCommand::Resume(args)),
            other => other,
        }
    }
}

/// `kopf run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Plugin files (`.so` cdylibs built with the kopf SDK).
    #[arg(value_name = "PLUGIN")]
    pub plugins: Vec<PathBuf>,

    /// Log kopf's debug messages.
    #[arg(help_heading = heading::LOGGING, short = 'v', long, env = "KOPF_RUN_VERBOSE", value_parser = clap::builder::FalseyValueParser::new())]
    pub verbose: bool,
    /// Log everything, including dependencies' trace messages.
    #[arg(help_heading = heading::LOGGING, short = 'd', long, env = "KOPF_RUN_DEBUG", value_parser = clap::builder::FalseyValueParser::new())]
    pub debug: bool,
    /// Log warnings and errors only.
    #[arg(help_heading = heading::LOGGING, short = 'q', long, env = "KOPF_RUN_QUIET", value_parser = clap::builder::FalseyValueParser::new())]
    pub quiet: bool,
    /// The log format.
    #[arg(help_heading = heading::LOGGING, long, value_enum, default_value_t = LogFormat::Full, env = "KOPF_RUN_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// The JSON key for the object reference in `--log-format=json`.
    #[arg(help_heading = heading::LOGGING, long, default_value = "object", env = "KOPF_RUN_LOG_REFKEY")]
    pub log_refkey: String,
    /// Prefix messages about objects with `[namespace/name]` (default: on, except for JSON).
    #[arg(
        help_heading = heading::LOGGING,
        long,
        overrides_with = "no_log_prefix",
        env = "KOPF_RUN_LOG_PREFIX",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub log_prefix: bool,
    /// Do not prefix messages with the object's `[namespace/name]`.
    #[arg(
        help_heading = heading::LOGGING,
        long,
        overrides_with = "log_prefix",
        env = "KOPF_RUN_NO_LOG_PREFIX",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub no_log_prefix: bool,

    /// Post log lines about objects as Kubernetes Events (reason `Logging`), at this level
    /// and above (default INFO); off by default, as in Kopf 1.44+. Sets
    /// `settings.posting.loggers` and `level` (startup handlers may still change them).
    #[arg(
        help_heading = heading::LOGGING,
        long,
        value_name = "LEVEL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "INFO",
        env = "KOPF_RUN_POST_LOGS",
        value_parser = parse_posting_level
    )]
    pub post_logs: Option<String>,

    /// Serve these namespaces: repeatable; globs (`*`, `?`), `!` negation, comma-separated parts.
    #[arg(
        help_heading = heading::SCOPE,
        short = 'n',
        long = "namespace",
        value_name = "PATTERN",
        env = "KOPF_RUN_NAMESPACE",
        value_parser = references::parse_namespace_pattern
    )]
    pub namespaces: Vec<String>,
    /// Serve the whole cluster (cluster-wide watches).
    #[arg(
        help_heading = heading::SCOPE,
        short = 'A',
        long,
        conflicts_with = "namespaces",
        env = "KOPF_RUN_ALL_NAMESPACES",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub all_namespaces: bool,

    /// Disable peering: run as the only operator.
    #[arg(help_heading = heading::PEERING, long, env = "KOPF_RUN_STANDALONE", value_parser = clap::builder::FalseyValueParser::new())]
    pub standalone: bool,
    /// The peering object's name; makes peering mandatory.
    #[arg(help_heading = heading::PEERING, short = 'P', long, value_name = "NAME", env = "KOPF_RUN_PEERING")]
    pub peering: Option<String>,
    /// The peering priority of this operator.
    #[arg(
        help_heading = heading::PEERING,
        short = 'p',
        long,
        value_name = "INT",
        default_value_t = 0,
        env = "KOPF_RUN_PRIORITY",
        allow_negative_numbers = true
    )]
    pub priority: i64,
    /// Development mode: peering priority 666.
    #[arg(help_heading = heading::PEERING, long, env = "KOPF_RUN_DEV", value_parser = clap::builder::FalseyValueParser::new())]
    pub dev: bool,
    /// Serve the liveness probe at this URL (`http://host:port/path`).
    #[arg(help_heading = heading::PROBES, short = 'L', long, value_name = "URL", env = "KOPF_RUN_LIVENESS", value_parser = parse_liveness_url)]
    pub liveness: Option<String>,

    /// Run against an in-process Kubernetes API emulator instead of a cluster (no cluster
    /// needed: for demos and local experiments).
    #[arg(help_heading = heading::EMBEDDED, long, env = "KOPF_RUN_EMBEDDED", value_parser = clap::builder::FalseyValueParser::new())]
    pub embedded: bool,
    /// With --embedded: apply these YAML files to the emulator before starting (repeatable).
    #[arg(
        help_heading = heading::EMBEDDED,
        short = 'f',
        long = "embedded-apply",
        value_name = "FILE",
        env = "KOPF_RUN_EMBEDDED_APPLY",
        value_delimiter = ',',
        requires = "embedded"
    )]
    pub embedded_apply: Vec<PathBuf>,
    /// Elect one active replica through this coordination.k8s.io/v1 Lease (`[NAMESPACE/]NAME`).
    #[arg(help_heading = heading::PEERING, long, value_name = "[NAMESPACE/]NAME", env = "KOPF_RUN_LEASE")]
    pub lease: Option<String>,
    /// Split the objects among the replicas started with this ring name (`[NAMESPACE/]NAME`;
    /// one Lease per replica): see docs/scale-out.md.
    #[arg(
        long,
        value_name = "[NAMESPACE/]NAME",
        env = "KOPF_RUN_SHARDING",
        conflicts_with = "lease"
    )]
    pub sharding: Option<String>,
    /// Admission webhook server options.
    #[command(flatten, next_help_heading = heading::WEBHOOKS)]
    pub webhooks: WebhookArgs,

    /// With --embedded: write the emulator's kubeconfig here, for kubectl.
    #[arg(
        help_heading = heading::EMBEDDED,
        long,
        value_name = "PATH",
        requires = "embedded",
        env = "KOPF_RUN_EMBEDDED_KUBECONFIG"
    )]
    pub embedded_kubeconfig: Option<PathBuf>,
}

/// `kopf inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Plugin files to inspect.
    #[arg(value_name = "PLUGIN", required = true)]
    pub plugins: Vec<PathBuf>,
    /// Print the plugins' combined descriptions as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Log kopf's debug messages.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Log everything and show full error details.
    #[arg(short = 'd', long)]
    pub debug: bool,
}

impl RunArgs {
    /// The logging settings of these arguments.
    pub fn log_config(&self) -> LogConfig {
        let verbosity = if self.debug {
            Verbosity::Debug
        } else if self.verbose {
            Verbosity::Verbose
        } else if self.quiet {
            Verbosity::Quiet
        } else {
            Verbosity::Normal
        };
        let prefix = if self.log_prefix {
            Some(true)
        } else if self.no_log_prefix {
            Some(false)
        } else {
            None
        };
        LogConfig {
            format: self.log_format,
            verbosity,
            refkey: self.log_refkey.clone(),
            prefix,
            // `RUST_LOG` is added by the binary's `main`.
            filter: None,
        }
    }

    /// `--embedded` with its files and kubeconfig path, if given.
    pub fn embedded_cluster(&self) -> Option<EmbeddedCluster> {
        self.embedded.then(|| EmbeddedCluster {
            apply: self.embedded_apply.clone(),
            kubeconfig: self.embedded_kubeconfig.clone(),
        })
    }

    /// Converts the parsed arguments into engine options.
    pub fn to_options(&self) -> RunOptions {
        RunOptions {
            plugins: self.plugins.clone(),
            namespaces: self.namespaces.clone(),
            clusterwide: self.all_namespaces,
            standalone: self.standalone,
            peering_name: self.peering.clone(),
            priority: if self.dev { DEV_PRIORITY } else { self.priority },
            liveness_endpoint: self.liveness.clone(),
            lease: self.lease.clone(),
            sharding: self.sharding.clone(),
            webhooks: webhook_options(&self.webhooks),
            log: self.log_config(),
            post_logs: self.post_logs.clone(),
            environment: crate::options::Environment::from_env(),
        }
    }
}

/// The plain webhook options of the clap arguments.
fn webhook_options(args: &WebhookArgs) -> WebhookOptions {
    let args: &crate::admission::WebhookOptions = args;
    WebhookOptions {
        webhook_server: args.webhook_server.clone(),
        webhook_host: args.webhook_host.clone(),
        webhook_cert: args.webhook_cert.clone(),
        webhook_key: args.webhook_key.clone(),
        webhook_ca: args.webhook_ca.clone(),
        webhook_cadump: args.webhook_cadump.clone(),
        webhook_managed: args.webhook_managed.clone(),
        webhook_verify_cafile: args.webhook_verify_cafile.clone(),
        webhook_verify_mode: args.webhook_verify_mode.clone(),
    }
}

/// Validates a `--post-logs` level: a name (`DEBUG`, `INFO`, `WARNING`, `ERROR`,
/// `CRITICAL`) or Python's level number.
pub fn parse_posting_level(value: &str) -> Result<String, String> {
    crate::observability::fields::level_number(value)
        .map(|_| value.trim().to_ascii_uppercase())
        .ok_or_else(|| {
            format!("{value:?} is not a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL or a number)")
        })
}

/// Validates a liveness endpoint: an `http://host:port/path` URL.
pub fn parse_liveness_url(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value).map_err(|e| format!("invalid URL {value:?}: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "only http:// liveness endpoints are supported, got {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("the liveness URL {value:?} has no host"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn liveness_urls() {
        assert!(parse_liveness_url("http://0.0.0.0:8080/healthz").is_ok());
        assert!(parse_liveness_url("https://x/healthz").is_err());
        assert!(parse_liveness_url("not a url").is_err());
    }

    #[test]
    fn run_options_from_args() {
        let cli = Cli::try_parse_from([
            "kopf",
            "run",
            "a.so",
            "-n",
            "x",
            "-n",
            "y,!z",
            "--dev",
            "-P",
            "peer",
            "--no-log-prefix",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let opts = args.to_options();
        assert_eq!(opts.plugins, vec![PathBuf::from("a.so")]);
        assert_eq!(opts.namespaces, vec!["x".to_owned(), "y,!z".to_owned()]);
        assert_eq!(opts.priority, DEV_PRIORITY);
        assert_eq!(opts.peering_name.as_deref(), Some("peer"));
        assert_eq!(opts.log.prefix, Some(false));
        assert!(!opts.clusterwide);
    }

    /// The README says every flag of `kopf run` has a `KOPF_RUN_*` variable.
    #[test]
    fn every_run_flag_has_an_environment_variable() {
        let command = Cli::command();
        let run = command
            .find_subcommand("run")
            .unwrap_or_else(|| panic!("no run subcommand"));
        let missing: Vec<String> = run
            .get_arguments()
            .filter(|arg| !arg.is_positional() && arg.get_id() != "help")
            .filter(|arg| {
                arg.get_env()
                    .is_none_or(|env| !env.to_string_lossy().starts_with("KOPF_RUN_"))
            })
            .map(|arg| arg.get_id().to_string())
            .collect();
        assert!(
            missing.is_empty(),
            "flags without a KOPF_RUN_* variable: {missing:?}"
        );
    }

    #[test]
    fn all_namespaces_conflicts_with_namespace() {
        let err = Cli::try_parse_from(["kopf", "run", "-A", "-n", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
