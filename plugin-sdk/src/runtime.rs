//! The plugin's own tokio runtime and the quiet panic hook.
//!
//! A plugin `cdylib` has its own copy of tokio, which cannot see the host's runtime. The
//! SDK builds a multi-thread runtime lazily on the first async call.

use std::any::Any;
use std::cell::Cell;
use std::panic;
use std::sync::{Once, OnceLock};

use tokio::runtime::{Builder, Runtime};

use crate::error::SdkError;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

thread_local! {
    /// > 0 while a handler runs on this thread, or on the plugin runtime's threads:
    /// panics here are caught and reported, so the default hook's stderr line is noise.
    static QUIET_PANICS: Cell<usize> = const { Cell::new(0) };
}

/// The plugin's runtime, built on first use.
pub fn runtime() -> Result<&'static Runtime, SdkError> {
    let rt = RUNTIME.get_or_init(|| {
        install_panic_hook();
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kopf-plugin")
            .enable_all()
            .on_thread_start(|| QUIET_PANICS.with(|q| q.set(q.get() + 1)))
            .build()
            .map_err(|e| e.to_string())
    });
    rt.as_ref().map_err(|e| SdkError::Runtime(e.clone()))
}

/// Marks the current thread as running a handler until dropped.
pub(crate) struct QuietPanics(());

impl QuietPanics {
    pub(crate) fn enter() -> Self {
        install_panic_hook();
        QUIET_PANICS.with(|q| q.set(q.get() + 1));
        Self(())
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        QUIET_PANICS.with(|q| q.set(q.get().saturating_sub(1)));
    }
}

/// Installs, once, a panic hook that sends caught handler panics to the host's log at
/// debug level instead of stderr, and leaves every other panic to the previous hook.
pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET_PANICS.with(Cell::get) > 0 {
                // Through `tracing`, so the handler's object span adds the `[ns/name]` prefix.
                tracing::debug!(target: "kopf.plugin", "A handler panicked: {info}");
            } else {
                previous(info);
            }
        }));
    });
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
