//! How a running operator is told to stop, tells it is ready, and is paused: Kopf's
//! `stop_flag` and `ready_flag` (`kopf.operator()` arguments) and its `ToggleSet`
//! (`kopf/_cogs/aiokits/aiotoggles.py`, here [`toggles`]).
//!
//! The `kopf` binary stops on SIGINT/SIGTERM ([`Control::signals`]); an embedding
//! application stops the operator with its own token and installs no OS handlers.
//! [`Control`] also carries the log's switch for object lines, set up with the log.

pub mod readiness;
pub mod shards;
pub mod toggles;

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use readiness::Readiness;
pub use toggles::PauseToggles;

use crate::observability::objects::LogLines;

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
/// binary) or an application's stop token (embedding).
#[derive(Debug, Default)]
pub struct Control {
    /// Cancelled to stop the operator (by the application, or by a SIGINT/SIGTERM).
    pub stop: CancellationToken,
    /// Set once watching has started.
    pub ready: Option<ReadySignal>,
    /// Listen to SIGINT and SIGTERM (the binary) or not (embedding).
    pub os_signals: bool,
    /// The switch of the log's objects layer, through which the operator posts object
    /// log lines as events (`settings.posting.loggers`); a fresh one if the log has none.
    pub log_lines: LogLines,
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
    /// The control of the `kopf` binary: SIGINT and SIGTERM stop the operator; object
    /// log lines go through `log_lines` (see [`crate::observability::logging::init`]).
    pub fn signals(log_lines: LogLines) -> Self {
        Self {
            os_signals: true,
            log_lines,
            ..Self::default()
        }
    }

    /// Installs the OS signal listeners (if asked) and returns the stop waiter. Must run
    /// inside a tokio runtime.
    pub fn install(&self) -> std::io::Result<Stopper> {
        let reason = Arc::new(Mutex::new("the stop signal"));
        if self.os_signals {
            let mut signals = StopSignals::install()?;
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

    /// Marks the operator as ready.
    pub fn ready(&self) {
        if let Some(ready) = &self.ready {
            ready.set();
        }
    }
}

/// The exit status of a forced exit: what a shell reports for SIGKILL, which Kopf sends
/// itself.
pub const FORCED_EXIT_CODE: i32 = 137;

/// Kopf's `process.ultimate_exiting_timeout`: once the binary is stopping, exits the
/// process with [`FORCED_EXIT_CODE`] after `timeout` if the graceful exit has not
/// finished by then (stuck daemons, cleanup handlers, bugs). A plain thread, so that it
/// fires even if the async runtime is stuck.
pub fn exit_after(timeout: Option<std::time::Duration>) {
    let Some(timeout) = timeout else { return };
    let spawned = std::thread::Builder::new()
        .name("kopf-exit-timeout".into())
        .spawn(move || {
            std::thread::sleep(timeout);
            tracing::error!(target: "kopf.reactor", "The operator did not exit within {}s (settings.process.ultimate_exiting_timeout): exiting by force.", timeout.as_secs_f64());
            std::process::exit(FORCED_EXIT_CODE);
        });
    if let Err(error) = spawned {
        tracing::warn!(target: "kopf.reactor", "Cannot start the exit timeout: {error}");
    }
}

/// SIGINT and SIGTERM listeners, installed eagerly.
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the listeners (must run inside a tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next SIGINT or SIGTERM and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
