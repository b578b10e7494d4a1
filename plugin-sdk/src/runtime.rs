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

/// Runs a future to completion from synchronous code: the way for sync handlers to use
/// async APIs such as the Kubernetes client of the `client` feature.
///
/// Outside the plugin's runtime (sync handlers run on the host's threads, which the
/// plugin's own tokio does not see) it blocks on the plugin's runtime; inside a
/// multi-thread runtime it blocks in place. Inside a current-thread runtime, blocking
/// would deadlock, so it returns an error instead.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, SdkError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(future)))
        }
        Ok(_) => Err(SdkError::Runtime(
            "kopf::block_on cannot block inside a current-thread tokio runtime; use .await".into(),
        )),
        Err(_) => Ok(runtime()?.block_on(future)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn block_on_works_outside_and_inside_the_runtime() {
        assert_eq!(super::block_on(async { 7 }).unwrap(), 7);
        let inner = super::runtime()
            .unwrap()
            .block_on(async { tokio::spawn(async { super::block_on(async { 8 }) }).await });
        assert_eq!(inner.unwrap().unwrap(), 8);
    }

    #[test]
    fn block_on_refuses_current_thread_runtimes() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(rt.block_on(async { super::block_on(async { 1 }) }).is_err());
    }
}
