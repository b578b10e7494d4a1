//! The plugin side of the ABI: the functions of the exported [`PluginModule`].
//!
//! Every function catches panics and turns them into [`FailureKind::PANIC`] failures, so
//! nothing ever unwinds into the host.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use abi_stable::std_types::{RResult, RStr, RString};
use kopf_abi::protocol::{InitConfig, Invocation};
use kopf_abi::{ABI_REVISION, Failure, FailureKind, HostTable, PluginModule};
use tokio::task::AbortHandle;

use crate::error::InvokeError;
use crate::handler::handlers;
use crate::host::Host;
use crate::runtime::panic_message;
use crate::{host, logging, memo, pool, runtime};

/// The root module value of this plugin (what the export macro leaks into the prefix
/// type). Tests can call its functions in-process.
pub fn plugin_module() -> PluginModule {
    PluginModule {
        abi_revision: ABI_REVISION,
        describe,
        init,
        invoke,
        submit,
        cancel,
        control,
    }
}

/// The `InitConfig.extra` flag a host sets when it calls this module in-process (embedded
/// operators): the SDK then leaves the process's `tracing` subscriber alone.
pub const IN_PROCESS_KEY: &str = "in_process";

/// Whether the host calls this module in-process (see [`IN_PROCESS_KEY`]).
static IN_PROCESS: AtomicBool = AtomicBool::new(false);

fn guarded(f: impl FnOnce() -> Result<String, Failure>) -> RResult<RString, Failure> {
    let _quiet = runtime::QuietPanics::enter();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(s)) => RResult::ROk(RString::from(s)),
        Ok(Err(failure)) => RResult::RErr(failure),
        Err(payload) => RResult::RErr(Failure::new(FailureKind::PANIC, panic_message(payload.as_ref()))),
    }
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::new(FailureKind::INTERNAL, e.to_string())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, Failure> {
    serde_json::to_string(v).map_err(internal)
}

fn to_failure(e: InvokeError) -> Failure {
    let kind = match &e {
        InvokeError::UnknownHandler(_) => FailureKind::UNKNOWN_HANDLER,
        InvokeError::BadPayload(_) => FailureKind::BAD_PAYLOAD,
        InvokeError::Cancelled => FailureKind::CANCELLED,
        InvokeError::Sdk(_) => FailureKind::INTERNAL,
    };
    Failure::new(kind, e.to_string())
}

fn parse_invocation(payload: &str) -> Result<Invocation, Failure> {
    serde_json::from_str(payload).map_err(|e| to_failure(InvokeError::BadPayload(e.to_string())))
}

extern "C" fn describe() -> RResult<RString, Failure> {
    guarded(|| to_json(&handlers().map_err(internal)?.describe()))
}

extern "C" fn init(host_table: HostTable, config: RStr<'_>) -> RResult<RString, Failure> {
    guarded(|| {
        let config: InitConfig = if config.as_str().trim().is_empty() {
            InitConfig::default()
        } else {
            serde_json::from_str(config.as_str())
                .map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, format!("bad init config: {e}")))?
        };
        host::set_host(host_table, config.max_log_level);
        runtime::install_panic_hook();
        // In-process (embedded) plugins share the host's `tracing`: forwarding events to
        // the host would loop back into the same subscriber.
        let in_process = config
            .extra
            .get(IN_PROCESS_KEY)
            .and_then(serde_json::Value::as_bool)
            == Some(true);
        IN_PROCESS.store(in_process, Ordering::Relaxed);
        if !in_process {
            logging::install_subscriber();
        }
        // Surface registration problems now rather than at the first call.
        handlers().map_err(internal)?;
        Ok("{}".to_owned())
    })
}

/// The host of the operator that made a call (its payload's `host_context`).
fn host_of(payload: &str) -> Host {
    Host::of(kopf_abi::protocol::peek_host_context(payload))
}

extern "C" fn invoke(handler: RStr<'_>, payload: RStr<'_>) -> RResult<RString, Failure> {
    guarded(|| {
        let _entered = host_of(payload.as_str()).enter();
        let registry = handlers().map_err(internal)?;
        let invocation = parse_invocation(payload.as_str())?;
        let outcome = registry
            .invoke(handler.as_str(), invocation)
            .map_err(to_failure)?;
        to_json(&outcome)
    })
}

/// A submitted call that has not completed yet, with the host to complete it.
struct Call {
    running: Running,
    host: Host,
}

/// How a submitted call runs.
enum Running {
    /// An async handler: a task on the plugin's runtime, aborted on cancellation.
    Task(AbortHandle),
    /// A sync handler on the SDK's pool or, for a daemon, on a thread of its own (or an
    /// async one not spawned yet): it cannot be interrupted, so cancellation completes the
    /// call at once and its late outcome is dropped.
    Blocking,
}

fn calls() -> &'static Mutex<HashMap<u64, Call>> {
    static CALLS: OnceLock<Mutex<HashMap<u64, Call>>> = OnceLock::new();
    CALLS.get_or_init(Default::default)
}

/// Removes a call from [`calls`]; its host for the one caller that then completes it.
fn take_call(call_id: u64) -> Option<Host> {
    calls()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&call_id)
        .map(|call| call.host)
}

/// Completes a submitted call exactly once: with its outcome ([`CallGuard::finish`]), or,
/// when dropped unfinished (the task was aborted, the runtime shut down, or something
/// panicked outside the handler's own panic catching), with a cancellation or a panic.
struct CallGuard(u64);

impl CallGuard {
    fn finish(self, outcome: Result<kopf_abi::protocol::Outcome, Failure>) {
        let call_id = self.0;
        std::mem::forget(self);
        if let Some(host) = take_call(call_id) {
            let answer = outcome.and_then(|outcome| serde_json::to_string(&outcome).map_err(internal));
            host.complete(call_id, answer.map(RString::from).into());
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(host) = take_call(self.0) {
            let failure = if std::thread::panicking() {
                Failure::new(FailureKind::PANIC, "the call panicked")
            } else {
                Failure::new(FailureKind::CANCELLED, "the call was cancelled")
            };
            host.complete(self.0, RResult::RErr(failure));
        }
    }
}

/// Decodes a submitted call's payload: on the thread that runs the call, so that the
/// body's many small allocations are made and freed by the same thread.
fn submitted_invocation(call_id: u64, payload: &str) -> Result<Invocation, Failure> {
    let mut invocation = parse_invocation(payload)?;
    invocation.call_id.get_or_insert(call_id);
    Ok(invocation)
}

/// Starts a call: async handlers as one task on the plugin's runtime, sync daemons on
/// threads of their own, other sync handlers on the SDK's pool for short calls
/// (`pool.rs`); whichever runs the call decodes the payload and
/// completes the call (one hand-off between threads per call, not three, and no JSON
/// work on the host's thread).
extern "C" fn submit(call_id: u64, handler: RStr<'_>, payload: RStr<'_>) -> RResult<(), Failure> {
    let started = guarded(|| {
        let host = host_of(payload.as_str());
        if !host.is_attached() {
            return Err(Failure::new(
                FailureKind::INTERNAL,
                "submit before init: no host to complete the call",
            ));
        }
        let registry = handlers().map_err(internal)?;
        let handler = registry
            .get(handler.as_str())
            .ok_or_else(|| to_failure(InvokeError::UnknownHandler(handler.as_str().to_owned())))?;
        let payload = payload.as_str().to_owned();
        let rt = runtime::runtime().map_err(internal)?;
        // Registered before the work starts (the work's completion removes it), and no
        // lock is held while spawning (a refused spawn drops the work, whose guard
        // then completes the call).
        calls().lock().unwrap_or_else(|e| e.into_inner()).insert(
            call_id,
            Call {
                running: Running::Blocking,
                host,
            },
        );
        let guard = CallGuard(call_id);
        if handler.is_async() {
            let daemon = handler.spec().kind == kopf_abi::protocol::HandlerKind::Daemon;
            let mut work = Box::pin(host.scope(async move {
                let outcome = match submitted_invocation(call_id, &payload) {
                    Ok(invocation) => Ok(handler.run_async(invocation).await),
                    Err(failure) => Err(failure),
                };
                guard.finish(outcome);
            }));
            // Most async handlers finish without ever waiting: their first poll runs
            // here, on the caller's thread, and completes the call before `submit`
            // returns (no hand-off to the runtime's threads and back, which cost more
            // than such a handler). Only what waits is spawned; the runtime polls it on
            // from there. As in Kopf, where async handlers share the operator's event
            // loop, an async handler that computes long before its first `.await`
            // holds up its caller meanwhile. Not for daemons (they live long), and not
            // in-process, where the caller's thread runs the host's copy of tokio.
            if !daemon && !IN_PROCESS.load(Ordering::Relaxed) {
                let _entered = rt.enter();
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                if work.as_mut().poll(&mut cx).is_ready() {
                    return Ok(String::new());
                }
            }
            let work = rt.spawn(work);
            // Unless it already finished (or was cancelled), make it abortable.
            if let Some(entry) = calls()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&call_id)
            {
                entry.running = Running::Task(work.abort_handle());
            }
        } else if handler.spec().kind == kopf_abi::protocol::HandlerKind::Daemon {
            // A daemon holds its thread for the object's lifetime: a thread of its own.
            rt.spawn_blocking(move || {
                let _entered = host.enter();
                let outcome = submitted_invocation(call_id, &payload).map(|inv| handler.run(inv));
                guard.finish(outcome);
            });
        } else {
            // Short calls (timer ticks above all) share a pool that wakes few threads.
            pool::sync_pool()
                .execute(Box::new(move || match submitted_invocation(call_id, &payload) {
                    Ok(invocation) => run_serially(call_id, handler, invocation, guard, host),
                    Err(failure) => guard.finish(Err(failure)),
                }))
                .map_err(|e| Failure::new(FailureKind::INTERNAL, format!("no thread for the call: {e}")))?;
        }
        Ok(String::new())
    });
    match started {
        RResult::ROk(_) => RResult::ROk(()),
        RResult::RErr(f) => RResult::RErr(f),
    }
}

/// Runs a sync handler's call on this pool thread, unless its previous call for the same
/// object still runs (abandoned by the host after its timeout): then it waits for that
/// one, so that abandoned calls hold one thread per handler and object at most, and a
/// handler never runs twice at once for one object. A waiting call whose caller gave up
/// meanwhile is not started.
fn run_serially(
    call_id: u64,
    handler: &'static crate::handler::Handler,
    invocation: Invocation,
    guard: CallGuard,
    host: Host,
) {
    let _entered = host.enter();
    let Some(object) = object_of(&invocation) else {
        guard.finish(Ok(handler.run(invocation)));
        return;
    };
    let key = format!("{}\n{object}", handler.id());
    // The job may run later on another of the pool's threads.
    let job = Box::new(move || {
        let _entered = host.enter();
        if call_is_live(call_id) {
            guard.finish(Ok(handler.run(invocation)));
        }
    });
    let reference = object.rsplit('\n').next().unwrap_or_default().to_owned();
    let said = match pool::serial().run(key, job) {
        pool::Started::Ran => return,
        pool::Started::Waits => "this call waits until it returns",
        pool::Started::Replaced => "this call waits until it returns, instead of an older waiting one",
    };
    host.log(
        kopf_abi::LogLevel::WARN,
        "kopf.objects",
        &reference,
        &format!(
            "Handler {:?} still runs from an earlier call (abandoned after its timeout); {said}.",
            handler.id()
        ),
    );
}

/// The object a call is about (uid, then `namespace/name`), for resource handlers other
/// than webhooks (admission requests about one object may overlap legitimately).
fn object_of(invocation: &Invocation) -> Option<String> {
    if invocation.admission.is_some() {
        return None;
    }
    let meta = invocation.body.as_ref()?.get("metadata")?;
    let text = |field: &str| meta.get(field).and_then(serde_json::Value::as_str);
    let name = text("name")?;
    let reference = match text("namespace") {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_owned(),
    };
    Some(format!("{}\n{reference}", text("uid").unwrap_or_default()))
}

/// Whether a submitted call still has a caller (it was neither completed nor cancelled).
fn call_is_live(call_id: u64) -> bool {
    calls()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&call_id)
}

extern "C" fn cancel(call_id: u64) {
    let _ = catch_unwind(|| {
        let mut running = calls().lock().unwrap_or_else(|e| e.into_inner());
        match running.get(&call_id).map(|call| &call.running) {
            Some(Running::Task(handle)) => {
                let handle = handle.clone();
                drop(running);
                // The task's guard completes the call when the runtime drops it.
                handle.abort();
            }
            Some(Running::Blocking) => {
                let host = running.remove(&call_id).map(|call| call.host);
                drop(running);
                host.unwrap_or_default().complete(
                    call_id,
                    RResult::RErr(Failure::new(FailureKind::CANCELLED, "the call was cancelled")),
                );
            }
            None => {}
        }
    });
}

extern "C" fn control(method: RStr<'_>, payload: RStr<'_>) -> RResult<RString, Failure> {
    use kopf_abi::protocol::control_methods;
    guarded(|| match method.as_str() {
        control_methods::PING => Ok(r#"{"ok":true}"#.to_owned()),
        control_methods::MEMO => {
            memo::control(payload.as_str()).map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, e))
        }
        control_methods::POOL => to_json(&pool::sync_pool().stats()),
        control_methods::PATCH_FNS => {
            crate::patch_fns::control(payload.as_str()).map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, e))
        }
        other => Err(Failure::new(
            FailureKind::UNSUPPORTED,
            format!("unknown control method {other:?}"),
        )),
    })
}

#[cfg(feature = "export")]
#[allow(unsafe_code)]
mod exported {
    kopf_abi::export_plugin_module!(super::plugin_module());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_are_serialised_per_object_except_webhooks() {
        let about = |body: serde_json::Value| Invocation {
            body: Some(body),
            ..Invocation::default()
        };
        let namespaced = about(json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u1"}}));
        assert_eq!(object_of(&namespaced).as_deref(), Some("u1\nns/a"));
        let cluster_scoped = about(json!({"metadata": {"name": "a"}}));
        assert_eq!(object_of(&cluster_scoped).as_deref(), Some("\na"));
        // Activities have no object; admission requests about one object may overlap.
        assert_eq!(object_of(&Invocation::default()), None);
        let mut webhook = namespaced.clone();
        webhook.admission = serde_json::from_value(json!({"operation": "CREATE"})).ok();
        assert!(webhook.admission.is_some());
        assert_eq!(object_of(&webhook), None);
    }
}
