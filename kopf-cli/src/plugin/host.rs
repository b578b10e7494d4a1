//! The host side of [`kopf_abi::HostTable`]: the callbacks a plugin calls into `kopf`.
//!
//! Every loaded plugin gets its own [`HostContext`], registered in a process-wide
//! registry; the `context` value of its [`HostTable`] is the index into that registry.
//! The callbacks are `extern "C"`: each catches panics so that nothing unwinds into the
//! plugin.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};

use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString};
use kopf_abi::{Failure, FailureKind, HostTable, LogLevel};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::observability::objects;

/// Identifies the plugin that calls into the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerInfo {
    /// The plugin's position in its [`crate::plugin::PluginSet`] load order.
    pub index: usize,
    /// The path the plugin was loaded from.
    pub path: String,
    /// The plugin crate's name (from its description), or the file name before `describe`.
    pub name: String,
}

/// The services the host offers to plugins through [`HostTable::call`].
///
/// The engine registers its implementation with
/// [`crate::plugin::PluginSet::set_services`]. Calls arrive on plugin threads (often a
/// `spawn_blocking` thread of the host runtime, or a thread the plugin owns) and may
/// block; implementations must not assume they run inside a tokio runtime.
pub trait HostServices: Send + Sync + 'static {
    /// Answers one call: `method` (e.g. `"event.post"`), its `version`, and a JSON
    /// `payload`; returns the JSON answer. Unknown methods answer
    /// [`FailureKind::UNSUPPORTED`].
    fn call(&self, caller: &CallerInfo, method: &str, version: u32, payload: &str)
    -> Result<String, Failure>;
}

/// The default [`HostServices`]: every method is unsupported.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoServices;

impl HostServices for NoServices {
    fn call(
        &self,
        _caller: &CallerInfo,
        method: &str,
        version: u32,
        _payload: &str,
    ) -> Result<String, Failure> {
        Err(Failure::new(
            FailureKind::UNSUPPORTED,
            format!("host method {method:?} (version {version}) is not supported by this kopf"),
        ))
    }
}

/// The result of a submitted call, as delivered by [`HostTable::complete`].
pub(crate) type Completion = Result<String, Failure>;

/// Per-plugin host state, reachable from the plugin's `context` value.
pub(crate) struct HostContext {
    /// Who this is (the name is updated after `describe`).
    pub(crate) caller: RwLock<CallerInfo>,
    /// The services answering `call`.
    pub(crate) services: RwLock<Arc<dyn HostServices>>,
    /// Submitted calls waiting for `complete`, by call id.
    pub(crate) pending: Mutex<HashMap<u64, oneshot::Sender<Completion>>>,
    /// The callers' `object` spans of submitted calls, by the object's `namespace/name`
    /// (as the plugin names it in its log lines) and call id: a plugin's lines from its
    /// own threads are logged in the span of the object's processing.
    calls: Mutex<HashMap<String, Vec<(u64, tracing::Span)>>>,
}

impl HostContext {
    /// Keeps the current `object` span (if any) for the plugin's lines about that object
    /// until the returned guard is dropped.
    pub(crate) fn enter_call(self: &Arc<Self>, call_id: u64) -> Option<CallSpan> {
        let reference = objects::current()?.reference();
        let span = tracing::Span::current();
        self.calls
            .lock()
            .entry(reference.clone())
            .or_default()
            .push((call_id, span));
        Some(CallSpan {
            context: self.clone(),
            reference,
            call_id,
        })
    }

    /// The span of a submitted call about this object, if one is in flight.
    fn call_span(&self, reference: &str) -> Option<tracing::Span> {
        let calls = self.calls.lock();
        calls.get(reference)?.last().map(|(_, span)| span.clone())
    }
}

/// Forgets a call's span when the call is over (see [`HostContext::enter_call`]).
pub(crate) struct CallSpan {
    context: Arc<HostContext>,
    reference: String,
    call_id: u64,
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        let mut calls = self.context.calls.lock();
        if let Some(spans) = calls.get_mut(&self.reference) {
            spans.retain(|(call_id, _)| *call_id != self.call_id);
            if spans.is_empty() {
                calls.remove(&self.reference);
            }
        }
    }
}

/// The one process-wide table of the host: a plugin calls back through the frozen
/// [`HostTable`], whose only handle is a `usize`, so each loaded plugin gets the index of
/// its own entry. Entries are only appended and indices never reused: the plugins of one
/// operator cannot reach another operator's context. (One plugin image initialised by two
/// operators keeps both tables; each call names its own in `Invocation::host_context`;
/// ARCHITECTURE.md, "Process globals".)
fn registry() -> &'static RwLock<Vec<Arc<HostContext>>> {
    static REGISTRY: OnceLock<RwLock<Vec<Arc<HostContext>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(Vec::new()))
}

/// Registers a new context and returns it with its registry index.
pub(crate) fn register(caller: CallerInfo) -> (usize, Arc<HostContext>) {
    let ctx = Arc::new(HostContext {
        caller: RwLock::new(caller),
        services: RwLock::new(Arc::new(NoServices)),
        pending: Mutex::new(HashMap::new()),
        calls: Mutex::new(HashMap::new()),
    });
    let mut reg = registry().write();
    reg.push(ctx.clone());
    (reg.len() - 1, ctx)
}

fn lookup(context: usize) -> Option<Arc<HostContext>> {
    registry().read().get(context).cloned()
}

/// Builds the [`HostTable`] handed to a plugin registered at `context`.
pub(crate) fn host_table(context: usize) -> HostTable {
    HostTable {
        context,
        log: host_log,
        call: host_call,
        complete: host_complete,
    }
}

/// Emits one plugin log line into the host's `tracing` at a runtime-chosen level, in the
/// span of the object it is about (`object`, the plugin's `namespace/name`): the current
/// one (a handler's first poll on the engine's thread), the caller's span of a submitted
/// call (a handler on the plugin's threads), or else a span naming the object only.
///
/// The tracing target is always `kopf.plugin` (so the level filters apply); the plugin's
/// own target travels in the `log.target` field, which the formatters display instead.
pub(crate) fn emit(
    context: Option<&HostContext>,
    level: LogLevel,
    plugin: &str,
    target: &str,
    object: &str,
    message: &str,
) {
    let emit = || emit_here(level, plugin, target, message);
    if object.is_empty() || objects::current().is_some_and(|current| current.reference() == object) {
        return emit();
    }
    match context.and_then(|context| context.call_span(object)) {
        Some(span) => span.in_scope(emit),
        None => objects::reference_span(object).in_scope(emit),
    }
}

fn emit_here(level: LogLevel, plugin: &str, target: &str, message: &str) {
    macro_rules! ev {
        ($lvl:expr) => {
            tracing::event!(
                target: "kopf.plugin",
                $lvl,
                plugin = plugin,
                log.target = target,
                "{}",
                message
            )
        };
    }
    match level {
        LogLevel::ERROR => ev!(tracing::Level::ERROR),
        LogLevel::WARN => ev!(tracing::Level::WARN),
        LogLevel::INFO => ev!(tracing::Level::INFO),
        LogLevel::DEBUG => ev!(tracing::Level::DEBUG),
        _ => ev!(tracing::Level::TRACE),
    }
}

extern "C" fn host_log(
    context: usize,
    level: LogLevel,
    target: RStr<'_>,
    object: RStr<'_>,
    message: RStr<'_>,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let context = lookup(context);
        let plugin = context
            .as_ref()
            .map(|c| c.caller.read().name.clone())
            .unwrap_or_default();
        emit(
            context.as_deref(),
            level,
            &plugin,
            target.as_str(),
            object.as_str(),
            message.as_str(),
        );
    }));
}

extern "C" fn host_call(
    context: usize,
    method: RStr<'_>,
    version: u32,
    payload: RStr<'_>,
) -> RResult<RString, Failure> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let Some(ctx) = lookup(context) else {
            return Err(Failure::new(
                FailureKind::INTERNAL,
                format!("unknown host context {context}"),
            ));
        };
        let caller = ctx.caller.read().clone();
        let services = ctx.services.read().clone();
        services.call(&caller, method.as_str(), version, payload.as_str())
    }));
    match outcome {
        Ok(Ok(answer)) => ROk(RString::from(answer)),
        Ok(Err(failure)) => RErr(failure),
        Err(panic) => RErr(Failure::new(
            FailureKind::PANIC,
            format!(
                "host service {:?} panicked: {}",
                method.as_str(),
                panic_message(&*panic)
            ),
        )),
    }
}

extern "C" fn host_complete(context: usize, call_id: u64, outcome: RResult<RString, Failure>) {
    let _ = catch_unwind(AssertUnwindSafe(move || {
        let outcome: Completion = outcome.into_result().map(RString::into_string);
        let sender = lookup(context).and_then(|ctx| ctx.pending.lock().remove(&call_id));
        match sender {
            // The receiver may be gone (the caller gave up); nothing to do then.
            Some(tx) => {
                let _ = tx.send(outcome);
            }
            None => tracing::warn!(
                target: "kopf.plugin",
                "a plugin completed call {call_id}, which is not pending (context {context})"
            ),
        }
    }));
}

/// Renders a panic payload as text.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}
