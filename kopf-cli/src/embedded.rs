//! Embedding the operator in another Rust program (Kopf's `kopf.operator()`): handlers
//! registered in-process (no `cdylib`), a stop signal and a ready signal.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! // In a program that depends on both `kopf` (the SDK) and `kopf-cli`, with handlers
//! // declared by `#[kopf::on::create(...)]` anywhere in it:
//! # let module = || -> kopf_abi::PluginModule { unimplemented!() };
//! let operator = kopf_cli::embedded::Operator::builder()
//!     .module("my-operator", module()) // kopf::plugin_module()
//!     .namespaces(["default"])
//!     .build()?;
//! let handle = operator.spawn()?;                  // its own thread and runtime
//! handle.wait_ready(std::time::Duration::from_secs(30))?;
//! // ... the application runs ...
//! handle.stop();
//! handle.join()?;
//! # Ok(()) }
//! ```
//!
//! Or, inside the application's own tokio runtime: `operator.run(stop, ready).await`
//! with a [`CancellationToken`] and a [`ReadySignal`].
//!
//! An embedded operator installs no OS signal handlers: the application decides when to
//! stop. It does not install a `tracing` subscriber either; the application's is used
//! (with [`crate::observability::objects::ObjectsLayer`] in it, lines about objects are
//! attributed to them; [`crate::observability::logging::init`] installs one).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use kopf_abi::PluginModule;
use tokio_util::sync::CancellationToken;

use crate::observability::objects::LogLines;
use crate::options::RunOptions;
use crate::plugin::PluginSet;
use crate::signals::Control;
pub use crate::signals::ReadySignal;

/// An operator to embed; see the module docs.
#[derive(Debug)]
pub struct Operator {
    options: RunOptions,
    plugins: PluginSet,
    config: Option<kube::Config>,
    log_lines: LogLines,
}

/// Builds an [`Operator`].
#[must_use]
pub struct OperatorBuilder {
    options: RunOptions,
    modules: Vec<(String, PluginModule)>,
    files: Vec<PathBuf>,
    config: Option<kube::Config>,
    log_lines: LogLines,
}

impl std::fmt::Debug for OperatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorBuilder")
            .field("options", &self.options)
            .field(
                "modules",
                &self.modules.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Operator {
    /// A builder with Kopf's defaults (cluster-wide unless namespaces are given).
    pub fn builder() -> OperatorBuilder {
        OperatorBuilder {
            options: RunOptions {
                environment: crate::options::Environment::from_env(),
                ..RunOptions::default()
            },
            modules: Vec::new(),
            files: Vec::new(),
            config: None,
            log_lines: LogLines::default(),
        }
    }

    /// The handlers this operator serves.
    pub fn plugins(&self) -> &PluginSet {
        &self.plugins
    }

    /// Runs the operator in the current tokio runtime until `stop` is cancelled; sets
    /// `ready` once watching has started. Startup handlers run first; cleanup handlers
    /// run on the way out.
    pub async fn run(self, stop: CancellationToken, ready: ReadySignal) -> anyhow::Result<()> {
        let control = Control {
            stop,
            ready: Some(ready),
            os_signals: false,
            log_lines: self.log_lines,
        };
        crate::operator::run(self.options, self.plugins, control, self.config).await
    }

    /// Runs the operator on its own thread with its own tokio runtime (Kopf's
    /// "operator in a side thread"); returns a handle to wait for readiness and stop it.
    /// Fails only if the thread cannot be started.
    pub fn spawn(self) -> anyhow::Result<OperatorHandle> {
        let stop = CancellationToken::new();
        let ready = ReadySignal::new();
        let (thread_stop, thread_ready) = (stop.clone(), ready.clone());
        let thread = std::thread::Builder::new()
            .name("kopf-operator".into())
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .context("cannot build the operator's runtime")?;
                runtime.block_on(self.run(thread_stop, thread_ready))
            })
            .context("cannot start the operator thread")?;
        Ok(OperatorHandle {
            stop,
            ready,
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl OperatorBuilder {
    /// Adds an in-process module, usually `kopf::plugin_module()` of the SDK: every
    /// handler declared with the attributes in this program.
    pub fn module(mut self, name: impl Into<String>, module: PluginModule) -> Self {
        self.modules.push((name.into(), module));
        self
    }

    /// Adds a plugin `cdylib` file, loaded as `kopf run` would.
    pub fn plugin_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// Serves these namespaces (patterns as for `-n`).
    pub fn namespaces<I, S>(mut self, namespaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options.namespaces = namespaces.into_iter().map(Into::into).collect();
        self
    }

    /// Serves the whole cluster (`-A`).
    pub fn clusterwide(mut self, clusterwide: bool) -> Self {
        self.options.clusterwide = clusterwide;
        self
    }

    /// No peering (`--standalone`).
    pub fn standalone(mut self, standalone: bool) -> Self {
        self.options.standalone = standalone;
        self
    }

    /// The peering name (`--peering`).
    pub fn peering(mut self, name: impl Into<String>) -> Self {
        self.options.peering_name = Some(name.into());
        self
    }

    /// The operator's priority (`--priority`).
    pub fn priority(mut self, priority: i64) -> Self {
        self.options.priority = priority;
        self
    }

    /// The liveness endpoint (`--liveness http://host:port/path`); also serves `/metrics`.
    pub fn liveness(mut self, url: impl Into<String>) -> Self {
        self.options.liveness_endpoint = Some(url.into());
        self
    }

    /// Connect with this configuration instead of the inferred kubeconfig.
    pub fn config(mut self, config: kube::Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Posts object log lines as events (`settings.posting.loggers`) through this switch:
    /// the one of the [`ObjectsLayer`](crate::observability::objects::ObjectsLayer) in
    /// the application's `tracing` subscriber.
    pub fn log_lines(mut self, lines: LogLines) -> Self {
        self.log_lines = lines;
        self
    }

    /// Replaces all options at once (the CLI's plain options struct).
    pub fn options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// Loads the plugin files, initialises the modules, and checks handler ids.
    pub fn build(self) -> anyhow::Result<Operator> {
        if !self.files.is_empty() && !self.modules.is_empty() {
            anyhow::bail!("an embedded operator takes either in-process modules or plugin files, not both");
        }
        let plugins = if self.modules.is_empty() {
            PluginSet::load(&self.files)?
        } else {
            PluginSet::from_modules(self.modules)?
        };
        Ok(Operator {
            options: self.options,
            plugins,
            config: self.config,
            log_lines: self.log_lines,
        })
    }
}

/// A running embedded operator: see [`Operator::spawn`].
#[derive(Debug)]
pub struct OperatorHandle {
    stop: CancellationToken,
    ready: ReadySignal,
    thread: Mutex<Option<std::thread::JoinHandle<anyhow::Result<()>>>>,
}

impl OperatorHandle {
    /// Asks the operator to stop (Kopf's `stop_flag`); [`OperatorHandle::join`] waits.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The ready signal.
    pub fn ready(&self) -> &ReadySignal {
        &self.ready
    }

    /// Whether the operator thread has ended (by a stop or a failure).
    pub fn is_finished(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(std::thread::JoinHandle::is_finished)
    }

    /// Blocks until the operator is ready; fails if it ends first or `timeout` passes.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        while !self.ready.is_set() {
            if self.is_finished() {
                anyhow::bail!("the operator ended before it was ready (join() tells why)");
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!("the operator was not ready within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Waits for the operator thread to end and returns its result.
    pub fn join(&self) -> anyhow::Result<()> {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        match thread {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("the operator thread panicked"))?,
            None => Ok(()),
        }
    }
}
