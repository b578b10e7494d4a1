//! The host's callbacks, as handed to the plugin by `init`, and safe wrappers around them.
//!
//! One plugin image can serve several operators of one process (the same file loaded
//! twice, or the handlers linked into an embedding program): each `init` registers that
//! operator's [`HostTable`], and each call names its operator (`Invocation::host_context`).
//! Host calls made for a call reach that call's operator: the call's [`Host`] is set for
//! the thread (sync handlers) or the task (async ones) that runs it, and a [`Context`]
//! keeps its own. Hosts that send no context (older `kopf`s) get the table `init` gave
//! last, as before.
//!
//! [`Context`]: crate::Context

use std::cell::Cell;
use std::future::Future;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU8, Ordering};

use abi_stable::std_types::{RResult, RStr, RString};
use kopf_abi::{Failure, HostTable, LogLevel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::HostCallError;

/// Every table `init` was given, the latest last.
static TABLES: RwLock<Vec<HostTable>> = RwLock::new(Vec::new());
static MAX_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::TRACE.0);

tokio::task_local! {
    /// The host of the call an async handler's task runs for.
    static TASK_HOST: Host;
}

thread_local! {
    /// The host of the call a thread runs for (sync handlers, the blocking `invoke`).
    static THREAD_HOST: Cell<Option<Host>> = const { Cell::new(None) };
}

/// Stores the host's callbacks (the newest become the default for calls that name no
/// host) and the most verbose level it prints.
pub(crate) fn set_host(host: HostTable, max_level: u8) {
    let mut tables = TABLES.write().unwrap_or_else(|e| e.into_inner());
    // A host that initialises the same context again replaces its table.
    tables.retain(|t| t.context != host.context);
    tables.push(host);
    // 0 = "not given": forward everything and let the host filter.
    let level = if max_level == 0 {
        LogLevel::TRACE.0
    } else {
        max_level
    };
    MAX_LEVEL.store(level, Ordering::Relaxed);
}

/// The table `init` gave last, if the plugin was initialised.
fn latest() -> Option<HostTable> {
    TABLES.read().unwrap_or_else(|e| e.into_inner()).last().copied()
}

/// True when a host is attached (the plugin was initialised through the ABI).
pub fn is_initialised() -> bool {
    latest().is_some()
}

/// The most verbose level the host prints.
pub(crate) fn max_level() -> LogLevel {
    LogLevel(MAX_LEVEL.load(Ordering::Relaxed))
}

/// The operator a host call goes to: the table of one `init`, or none (not initialised).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Host(Option<HostTable>);

impl Host {
    /// The host of the call running on this task or thread, else the latest table.
    pub(crate) fn current() -> Self {
        TASK_HOST
            .try_with(|host| *host)
            .ok()
            .or_else(|| THREAD_HOST.with(Cell::get))
            .unwrap_or(Host(latest()))
    }

    /// The host whose table has this `context` (a call's `host_context`); without one,
    /// or for a context no `init` registered, [`Host::current`].
    pub(crate) fn of(context: Option<u64>) -> Self {
        let found =
            context.and_then(|context| find(&TABLES.read().unwrap_or_else(|e| e.into_inner()), context));
        found.map_or_else(Self::current, |table| Host(Some(table)))
    }

    /// The table's `context`: which operator this is (`None` without a host).
    #[cfg(feature = "client")]
    pub(crate) fn context(self) -> Option<usize> {
        self.0.map(|t| t.context)
    }

    /// True when a host is attached.
    pub(crate) fn is_attached(self) -> bool {
        self.0.is_some()
    }

    /// Makes this the host of the current thread until the guard is dropped.
    pub(crate) fn enter(self) -> Entered {
        Entered(THREAD_HOST.with(|slot| slot.replace(Some(self))))
    }

    /// Runs `future` with this as the host of every poll.
    pub(crate) fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        TASK_HOST.scope(self, future)
    }

    /// Writes a line into the host's log; a no-op without a host or above its level.
    pub(crate) fn log(self, level: LogLevel, target: &str, object: &str, message: &str) {
        if level > max_level() {
            return;
        }
        if let Some(h) = self.0 {
            (h.log)(
                h.context,
                level,
                RStr::from(target),
                RStr::from(object),
                RStr::from(message),
            );
        }
    }

    /// Delivers a submitted call's outcome; a no-op without a host.
    pub(crate) fn complete(self, call_id: u64, outcome: RResult<RString, Failure>) {
        if let Some(h) = self.0 {
            (h.complete)(h.context, call_id, outcome);
        }
    }

    /// Calls a host method with a JSON payload and decodes the JSON answer.
    pub(crate) fn call<P: Serialize, A: DeserializeOwned>(
        self,
        method: &str,
        version: u32,
        payload: &P,
    ) -> Result<A, HostCallError> {
        let h = self.0.ok_or(HostCallError::NotInitialised)?;
        let bad = |e: serde_json::Error| HostCallError::BadJson {
            method: method.to_owned(),
            message: e.to_string(),
        };
        let payload = serde_json::to_string(payload).map_err(bad)?;
        match (h.call)(
            h.context,
            RStr::from(method),
            version,
            RStr::from(payload.as_str()),
        ) {
            RResult::ROk(answer) => serde_json::from_str(answer.as_str()).map_err(bad),
            RResult::RErr(f) if f.kind == kopf_abi::FailureKind::UNSUPPORTED => {
                Err(HostCallError::Unsupported(method.to_owned()))
            }
            RResult::RErr(f) => Err(HostCallError::Failed {
                method: method.to_owned(),
                message: f.message.to_string(),
            }),
        }
    }
}

/// The table of `context` among `tables`.
fn find(tables: &[HostTable], context: u64) -> Option<HostTable> {
    tables.iter().find(|t| t.context as u64 == context).copied()
}

/// Restores the thread's previous host when dropped (see [`Host::enter`]).
pub(crate) struct Entered(Option<Host>);

impl Drop for Entered {
    fn drop(&mut self) {
        THREAD_HOST.with(|slot| slot.set(self.0));
    }
}

/// Writes a line into the current call's host log (see [`Host::log`]).
pub(crate) fn log(level: LogLevel, target: &str, object: &str, message: &str) {
    Host::current().log(level, target, object, message);
}

/// Calls a host method of the current call's operator with a JSON payload and decodes
/// the JSON answer.
pub fn call<P: Serialize, A: DeserializeOwned>(
    method: &str,
    version: u32,
    payload: &P,
) -> Result<A, HostCallError> {
    Host::current().call(method, version, payload)
}

/// The future, polled as part of the handler call that creates it: its host calls (logs,
/// `kopf::info`, index lookups) reach the operator of that call. Wrap what a handler
/// spawns: `tokio::spawn(kopf::with_operator(async move { ... }))`. (A task spawned
/// bare reports to the operator that loaded the plugin last; the [`crate::Context`]'s own
/// methods always reach the call's operator, from anywhere.)
pub fn with_operator<F: Future>(future: F) -> impl Future<Output = F::Output> {
    Host::current().scope(future)
}

/// [`tokio::task::spawn_blocking`] for the current call's host: the closure runs on the
/// plugin runtime's blocking pool with the caller's host.
pub(crate) fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let host = Host::current();
    tokio::task::spawn_blocking(move || {
        let _entered = host.enter();
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn log(_: usize, _: LogLevel, _: RStr<'_>, _: RStr<'_>, _: RStr<'_>) {}
    extern "C" fn call(_: usize, _: RStr<'_>, _: u32, _: RStr<'_>) -> RResult<RString, Failure> {
        RResult::ROk(RString::new())
    }
    extern "C" fn complete(_: usize, _: u64, _: RResult<RString, Failure>) {}

    fn table(context: usize) -> HostTable {
        HostTable {
            context,
            log,
            call,
            complete,
        }
    }

    fn context_of(host: Host) -> Option<usize> {
        host.0.map(|t| t.context)
    }

    #[test]
    fn a_context_finds_its_own_table() {
        let tables = [table(1000), table(1001)];
        assert_eq!(find(&tables, 1000).map(|t| t.context), Some(1000));
        assert_eq!(find(&tables, 1001).map(|t| t.context), Some(1001));
        assert!(find(&tables, 7).is_none());
    }

    #[test]
    fn calls_use_their_own_host_on_threads_tasks_and_what_they_spawn() {
        // (This test binary never initialises the plugin: the fallback is "no host".)
        let first = Host(Some(table(1000)));
        let second = Host(Some(table(1001)));
        {
            let _entered = first.enter();
            assert_eq!(context_of(Host::current()), Some(1000));
            {
                let _nested = second.enter();
                assert_eq!(context_of(Host::current()), Some(1001));
            }
            assert_eq!(context_of(Host::current()), Some(1000));
            let rt = crate::runtime::runtime().unwrap();
            let blocking = rt.block_on(async { spawn_blocking(|| context_of(Host::current())).await });
            assert_eq!(blocking.unwrap(), Some(1000));
        }
        assert_eq!(context_of(Host::current()), None);

        let rt = crate::runtime::runtime().unwrap();
        let (inside, spawned, bare) = rt.block_on(second.scope(async {
            let inside = context_of(Host::current());
            let spawned = tokio::spawn(with_operator(async { context_of(Host::current()) }));
            let bare = tokio::spawn(async { context_of(Host::current()) });
            (inside, spawned.await.unwrap(), bare.await.unwrap())
        }));
        assert_eq!(inside, Some(1001));
        assert_eq!(spawned, Some(1001));
        assert_eq!(bare, None, "a bare task has the fallback");
    }
}
