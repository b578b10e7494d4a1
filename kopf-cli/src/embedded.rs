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
//! stop. It does not install a `tracing` subscriber either; the application's is used.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use kopf_abi::PluginModule;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cli::RunOptions;
use crate::plugin::PluginSet;

/// A latch that becomes set once the operator is ready (watching has started): Kopf's
/// `ready_flag`. Cheap to clone; every clone sees the same state.
#[derive(Debug, Clone)]
pub struct ReadySignal {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for ReadySignal {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadySignal {
    /// A fresh, unset signal.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Sets the signal (done by the operator).
    pub fn set(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the signal is set.
    pub fn is_set(&self) -> bool {
        *self.tx.borrow()
    }

    /// Waits until the signal is set.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we wait.
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

/// How a running operator is told to stop and reports readiness: OS signals (the `kopf`
/// binary) or an application's stop token (embedding). Used by [`crate::operator`].
#[derive(Debug, Default)]
pub struct Control {
    /// Cancelled to stop the operator (by the application, or by a SIGINT/SIGTERM).
    pub stop: CancellationToken,
    /// Set once watching has started.
    pub ready: Option<ReadySignal>,
    /// Listen to SIGINT and SIGTERM (the binary) or not (embedding).
    pub os_signals: bool,
    /// A connection to use instead of the inferred kubeconfig.
    pub config: Option<kube::Config>,
}

/// Waits for the stop of a [`Control`]: see [`Control::install`].
#[derive(Debug)]
pub struct Stopper {
    stop: CancellationToken,
    reason: Arc<Mutex<&'static str>>,
}

impl Stopper {
    /// Waits until the operator is asked to stop; returns why (`SIGTERM`, `SIGINT`,
    /// or `the stop signal`).
    pub async fn recv(&mut self) -> &'static str {
        self.stop.cancelled().await;
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token cancelled on stop; the operator's own stop token may be its child, so
    /// that startup retries end on a signal too.
    pub fn token(&self) -> &CancellationToken {
        &self.stop
    }
}

impl Control {
    /// The control of the `kopf` binary: SIGINT and SIGTERM stop the operator.
    pub fn signals() -> Self {
        Self {
            os_signals: true,
            ..Self::default()
        }
    }

    /// Installs the OS signal listeners (if asked) and returns the stop waiter. Must run
    /// inside a tokio runtime.
    pub fn install(&self) -> std::io::Result<Stopper> {
        let reason = Arc::new(Mutex::new("the stop signal"));
        if self.os_signals {
            let mut signals = crate::operator::StopSignals::install()?;
            let stop = self.stop.clone();
            let slot = reason.clone();
            tokio::spawn(async move {
                tokio::select! {
                    name = signals.recv() => {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = name;
                        stop.cancel();
                    }
                    () = stop.cancelled() => {}
                }
            });
        }
        Ok(Stopper {
            stop: self.stop.clone(),
            reason,
        })
    }

    /// The connection: the one given, else the inferred kubeconfig / in-cluster config.
    pub async fn load_config(&mut self) -> anyhow::Result<kube::Config> {
        match self.config.take() {
            Some(config) => Ok(config),
            None => Ok(crate::clients::connection::load_config(None).await?),
        }
    }

    /// Marks the operator as ready.
    pub fn ready(&self) {
        if let Some(ready) = &self.ready {
            ready.set();
        }
    }
}

/// An operator to embed; see the module docs.
#[derive(Debug)]
pub struct Operator {
    options: RunOptions,
    plugins: PluginSet,
    config: Option<kube::Config>,
}

/// Builds an [`Operator`].
#[must_use]
pub struct OperatorBuilder {
    options: RunOptions,
    modules: Vec<(String, PluginModule)>,
    files: Vec<PathBuf>,
    config: Option<kube::Config>,
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
                plugins: Vec::new(),
                namespaces: Vec::new(),
                clusterwide: false,
                standalone: false,
                peering_name: None,
                priority: 0,
                liveness_endpoint: None,
                lease: None,
                webhooks: Default::default(),
                embedded: None,
                log: Default::default(),
                post_logs: None,
            },
            modules: Vec::new(),
            files: Vec::new(),
            config: None,
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
            config: self.config,
        };
        crate::operator::run_controlled(self.options, self.plugins, control).await
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
