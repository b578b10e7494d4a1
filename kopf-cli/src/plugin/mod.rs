//! The host side of the plugin ABI: loading plugins, calling their handlers, and the
//! callbacks they call back into.
//!
//! ```text
//! PluginSet::load(paths) ─► for each path: open (file, dlopen, revision, layout)
//!                                        ─► describe (JSON) ─► init(HostTable)
//!                         ─► duplicate-id check across all plugins
//! PluginSet::handlers()  ─► HandlerRef (spec + its plugin)
//! PluginSet::invoke / invoke_blocking / invoke_submitted ─► Outcome
//! ```

mod errors;
mod host;
mod inprocess;
mod loader;
mod patch_fns;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use abi_stable::std_types::{RStr, RString};
use kopf_abi::protocol::{
    HandlerKind, HandlerSpec, Invocation, Outcome, PluginDescription, Purpose, ResourceSelector,
};
use kopf_abi::{Failure, PluginModuleRef};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use errors::PluginError;
use host::HostContext;
pub use host::{CallerInfo, HostServices, NoServices};

/// One loaded, initialised plugin.
pub struct Plugin {
    index: usize,
    path: PathBuf,
    module: PluginModuleRef,
    description: PluginDescription,
    context: Arc<HostContext>,
    /// The `context` of this plugin's [`kopf_abi::HostTable`], sent with every call
    /// (`Invocation::host_context`): a plugin image that serves several operators of one
    /// process answers each call's host calls to that call's operator.
    context_id: usize,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("index", &self.index)
            .field("path", &self.path)
            .field("name", &self.description.plugin.name)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The position of this plugin in its set's load order.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The file the plugin was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the plugin declared.
    pub fn description(&self) -> &PluginDescription {
        &self.description
    }

    /// The plugin crate's name, or the file name when the plugin did not say.
    pub fn name(&self) -> String {
        if self.description.plugin.name.is_empty() {
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            self.description.plugin.name.clone()
        }
    }

    /// Calls the plugin's generic `control` entry (`method`, JSON in, JSON out). Blocking.
    pub fn control(&self, method: &str, payload: &str) -> Result<String, Failure> {
        (self.module.control())(RStr::from_str(method), RStr::from_str(payload))
            .into_result()
            .map(RString::into_string)
    }

    /// Runs a handler with a raw JSON payload; returns the raw JSON outcome. Blocking.
    fn invoke_raw(&self, handler: &str, payload: &str) -> Result<String, Failure> {
        (self.module.invoke())(RStr::from_str(handler), RStr::from_str(payload))
            .into_result()
            .map(RString::into_string)
    }
}

/// A handler together with the plugin that declared it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HandlerRef {
    plugin: Arc<Plugin>,
    spec: Arc<HandlerSpec>,
}

impl HandlerRef {
    /// The handler's declaration.
    pub fn spec(&self) -> &HandlerSpec {
        &self.spec
    }

    /// The handler id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The handler kind.
    pub fn kind(&self) -> HandlerKind {
        self.spec.kind
    }

    /// The plugin that declared it.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    fn call_error(&self, failure: Failure) -> PluginError {
        PluginError::Call {
            plugin: self.plugin.name(),
            handler: self.spec.id.clone(),
            failure,
        }
    }

    /// The invocation as JSON, without the host context.
    fn encode_bare(&self, inv: &Invocation) -> Result<String, PluginError> {
        let encoded = match inv.host_context {
            None => serde_json::to_string(inv),
            // Only the plugin's own context may go out (and once, first).
            Some(_) => serde_json::to_string(&Invocation {
                host_context: None,
                ..inv.clone()
            }),
        };
        encoded.map_err(|source| PluginError::Encode {
            handler: self.spec.id.clone(),
            source,
        })
    }

    /// The invocation as JSON, its first member the plugin's host context.
    fn encode(&self, inv: &Invocation) -> Result<String, PluginError> {
        self.with_context(&self.encode_bare(inv)?)
    }

    fn with_context(&self, encoded: &str) -> Result<String, PluginError> {
        kopf_abi::protocol::with_host_context(encoded, self.plugin.context_id as u64).ok_or_else(|| {
            PluginError::Encode {
                handler: self.spec.id.clone(),
                source: <serde_json::Error as serde::ser::Error>::custom("not a JSON object"),
            }
        })
    }

    fn decode(&self, json: &str) -> Result<Outcome, PluginError> {
        serde_json::from_str(json).map_err(|source| PluginError::BadOutcome {
            plugin: self.plugin.name(),
            handler: self.spec.id.clone(),
            source,
        })
    }

    /// Runs the handler on the calling thread and waits for its outcome.
    pub fn invoke_blocking(&self, inv: &Invocation) -> Result<Outcome, PluginError> {
        let payload = self.encode(inv)?;
        let answer = self
            .plugin
            .invoke_raw(&self.spec.id, &payload)
            .map_err(|f| self.call_error(f))?;
        self.decode(&answer)
    }
}

/// A process-wide source of call ids for submitted calls.
static NEXT_CALL_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh, process-wide unique call id: for callers that must know a submitted call's id
/// before submitting it (daemons register their stop flags under it). Pass it as
/// `Invocation::call_id` to [`PluginSet::invoke_submitted`].
pub fn next_call_id() -> u64 {
    NEXT_CALL_ID.fetch_add(1, Ordering::Relaxed)
}

/// Removes a pending submitted call and cancels it in the plugin if the waiting future
/// is dropped before the outcome arrives.
struct PendingGuard<'a> {
    handler: &'a HandlerRef,
    call_id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let ctx = &self.handler.plugin.context;
            if ctx.pending.lock().remove(&self.call_id).is_some() {
                (self.handler.plugin.module.cancel())(self.call_id);
            }
        }
    }
}

/// All loaded plugins, with their handlers in load order.
#[derive(Debug, Clone)]
pub struct PluginSet {
    plugins: Vec<Arc<Plugin>>,
    handlers: Vec<HandlerRef>,
    /// Bounds the sync handlers running at once on the plugins' blocking pools (Kopf's
    /// sync-handler executor, `settings.execution.max_workers`); shared by clones.
    workers: Arc<tokio::sync::Semaphore>,
    /// The same for webhook handlers: a burst of admission requests neither waits for
    /// slow resource handlers nor starves them.
    admission: Arc<tokio::sync::Semaphore>,
}

/// Which budget a call waits for (see [`PluginSet::invoke`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Sync resource handlers, daemons, timers, activities: `max_workers`.
    Workers,
    /// Sync webhook handlers: their own budget of the same size.
    Admission,
    /// Async handlers (they take no thread) and filter callbacks (quick, and never to
    /// queue behind the handlers they select): no budget.
    Unbounded,
}

impl Budget {
    /// The budget of a call of a handler of this kind.
    pub fn of(kind: HandlerKind, is_async: bool, purpose: Purpose) -> Self {
        match (kind, is_async, purpose) {
            (_, _, Purpose::Filter) | (_, true, _) => Budget::Unbounded,
            (HandlerKind::Validate | HandlerKind::Mutate, ..) => Budget::Admission,
            _ => Budget::Workers,
        }
    }
}

impl Default for PluginSet {
    fn default() -> Self {
        Self {
            plugins: Vec::new(),
            handlers: Vec::new(),
            workers: Arc::new(tokio::sync::Semaphore::new(default_max_workers())),
            admission: Arc::new(tokio::sync::Semaphore::new(default_max_workers())),
        }
    }
}

/// Python's default thread-pool size, which Kopf's sync handlers run in:
/// `min(32, cpu_count + 4)`.
pub fn default_max_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cpus + 4).min(32)
}

impl PluginSet {
    /// Loads and initialises every plugin in order; fails on the first broken plugin
    /// or on duplicate handler ids. Host calls answer "unsupported" until
    /// [`PluginSet::set_services`] is called.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Self, PluginError> {
        Self::load_with_services(paths, Arc::new(NoServices))
    }

    /// Like [`PluginSet::load`], with host services available from `init` onwards.
    pub fn load_with_services<P: AsRef<Path>>(
        paths: &[P],
        services: Arc<dyn HostServices>,
    ) -> Result<Self, PluginError> {
        let mut set = PluginSet::default();
        // (kind, selector, id) -> the path that declared it first.
        let mut seen: HashMap<(HandlerKind, Option<ResourceSelector>, String), String> = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let plugin = Arc::new(loader::load(index, path.as_ref(), services.clone())?);
            let shown = plugin.path.display().to_string();
            let mut own: HashMap<(HandlerKind, Option<ResourceSelector>, String), ()> = HashMap::new();
            for spec in &plugin.description.handlers {
                let key = (spec.kind, spec.selector.clone(), spec.id.clone());
                let duplicate = |first: String| PluginError::DuplicateHandler {
                    kind: spec.kind,
                    id: spec.id.clone(),
                    selector: render_selector(spec.selector.as_ref()),
                    first,
                    second: shown.clone(),
                };
                if own.insert(key.clone(), ()).is_some() {
                    return Err(duplicate(shown.clone()));
                }
                if let Some(first) = seen.get(&key) {
                    return Err(duplicate(first.clone()));
                }
                seen.insert(key, shown.clone());
                set.handlers.push(HandlerRef {
                    plugin: plugin.clone(),
                    spec: Arc::new(spec.clone()),
                });
            }
            tracing::debug!(
                target: "kopf.plugin",
                "loaded plugin {} {} from {} ({} handlers)",
                plugin.name(),
                plugin.description.plugin.version,
                shown,
                plugin.description.handlers.len()
            );
            set.plugins.push(plugin);
        }
        Ok(set)
    }

    /// Limits how many sync handlers (and, separately, how many sync webhook handlers)
    /// run at once through [`PluginSet::invoke`] (the others wait for a slot); applies to
    /// this set and its later clones.
    pub fn with_max_workers(mut self, max_workers: usize) -> Self {
        self.workers = Arc::new(tokio::sync::Semaphore::new(max_workers.max(1)));
        self.admission = Arc::new(tokio::sync::Semaphore::new(max_workers.max(1)));
        self
    }

    /// The loaded plugins, in load order.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// Every declared handler with its plugin, in load and declaration order.
    pub fn handlers(&self) -> &[HandlerRef] {
        &self.handlers
    }

    /// True when no plugin was loaded.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Installs the services that answer the plugins' [`kopf_abi::HostTable::call`]s.
    pub fn set_services(&self, services: Arc<dyn HostServices>) {
        for plugin in &self.plugins {
            *plugin.context.services.write() = services.clone();
        }
    }

    /// The state of each plugin's pool for sync handlers (the `pool` control method), by
    /// plugin name; plugins without one (older SDKs, raw plugins) are skipped.
    pub fn pool_stats(&self) -> Vec<(String, serde_json::Value)> {
        use kopf_abi::protocol::control_methods;
        self.plugins
            .iter()
            .filter_map(|plugin| {
                let answer = plugin.control(control_methods::POOL, "{}").ok()?;
                Some((plugin.name(), serde_json::from_str(&answer).ok()?))
            })
            .collect()
    }

    /// Handler calls about objects still running in the plugins' threads, abandoned ones
    /// included (plugins that cannot tell count none).
    pub fn running_object_calls(&self) -> u64 {
        self.pool_stats()
            .iter()
            .filter_map(|(_, stats)| stats.get("object_calls").and_then(serde_json::Value::as_u64))
            .sum()
    }

    /// Tells every plugin that the object with this uid is gone, so that they drop its
    /// memo (the `memo` control method). Plugins without memo support are skipped.
    /// Returns how many plugins had a memo for it.
    pub fn forget_object(&self, uid: &str) -> usize {
        use kopf_abi::protocol::control_methods;
        let payload = serde_json::json!({"op": "forget", "uid": uid}).to_string();
        let mut forgotten = 0;
        for plugin in &self.plugins {
            match plugin.control(control_methods::MEMO, &payload) {
                Ok(answer) => {
                    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
                    if answer.get("forgotten").and_then(serde_json::Value::as_bool) == Some(true) {
                        forgotten += 1;
                    }
                }
                Err(f) if f.kind == kopf_abi::FailureKind::UNSUPPORTED => {}
                Err(f) => tracing::debug!(
                    target: "kopf.plugin",
                    "Plugin {} failed to forget the memo of {uid}: {f}",
                    plugin.name()
                ),
            }
        }
        if forgotten > 0 {
            tracing::debug!(target: "kopf.plugin", "Forgot the memo of {uid} in {forgotten} plugin(s).");
        }
        forgotten
    }

    /// Runs a handler on the calling thread (blocking until the plugin returns).
    pub fn invoke_blocking(&self, handler: &HandlerRef, inv: &Invocation) -> Result<Outcome, PluginError> {
        handler.invoke_blocking(inv)
    }

    /// Runs a handler through the plugin's non-blocking `submit`. Sync handlers run at
    /// most [`default_max_workers`] (or [`PluginSet::with_max_workers`]) at once, as
    /// Kopf's executor bounds them, webhooks within their own budget of that size; async
    /// handlers and filter callbacks wait for no slot ([`Budget`]). The plugin runs sync
    /// handlers on a pool that wakes few threads for a burst of calls, and decodes the
    /// payload on that thread; the host's threads only encode and await. Dropping the
    /// future cancels the call. (Daemons and timers, through
    /// [`PluginSet::invoke_submitted`], are bounded by their objects, not by a budget.)
    pub async fn invoke(&self, handler: &HandlerRef, inv: &Invocation) -> Result<Outcome, PluginError> {
        let call_id = inv.call_id.unwrap_or_else(next_call_id);
        let payload = handler.encode(inv)?;
        let budget = match Budget::of(handler.kind(), handler.spec().is_async, inv.purpose) {
            Budget::Workers => Some(&self.workers),
            Budget::Admission => Some(&self.admission),
            Budget::Unbounded => None,
        };
        // The semaphores are never closed; a failure would only mean "unbounded".
        let _slot = match budget {
            Some(budget) => budget.acquire().await.ok(),
            None => None,
        };
        self.submit_payload(handler, call_id, &payload, None).await
    }

    /// Runs a handler on the current thread from async code without the hand-off to the
    /// blocking pool: inside a multi-thread tokio runtime it uses
    /// [`tokio::task::block_in_place`] (the worker's other tasks move elsewhere); in any
    /// other context it simply blocks. Cheaper than [`PluginSet::invoke`] for short
    /// handlers; do not use it for long-running ones.
    pub fn invoke_in_place(&self, handler: &HandlerRef, inv: &Invocation) -> Result<Outcome, PluginError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handler.invoke_blocking(inv))
            }
            _ => handler.invoke_blocking(inv),
        }
    }

    /// Starts a handler with the plugin's non-blocking `submit` and awaits the outcome
    /// delivered through `complete`. When `cancel` fires, the plugin is asked to cancel
    /// the call and the outcome it then reports (often [`kopf_abi::FailureKind::CANCELLED`]) is
    /// returned. Dropping the future also cancels the call in the plugin.
    ///
    /// The invocation's `call_id` is used if set (see [`next_call_id`]), else a fresh one.
    pub async fn invoke_submitted(
        &self,
        handler: &HandlerRef,
        inv: &Invocation,
        cancel: &CancellationToken,
    ) -> Result<Outcome, PluginError> {
        let (call_id, payload) = match inv.call_id {
            Some(call_id) => (call_id, handler.encode(inv)?),
            None => {
                let call_id = next_call_id();
                let mut inv = inv.clone();
                inv.call_id = Some(call_id);
                (call_id, handler.encode(&inv)?)
            }
        };
        self.submit_payload(handler, call_id, &payload, Some(cancel))
            .await
    }

    /// [`PluginSet::invoke_submitted`] for an invocation whose object body is already
    /// serialised (`body_json`, a JSON document): callers that invoke handlers on the same
    /// body again and again (timers) serialise it once per object version instead of once
    /// per call. `inv.body` must be `None`, and `inv.call_id` is used if set.
    pub async fn invoke_submitted_with_body(
        &self,
        handler: &HandlerRef,
        inv: &Invocation,
        body_json: &str,
        cancel: &CancellationToken,
    ) -> Result<Outcome, PluginError> {
        let encode_error = |message: &str| PluginError::Encode {
            handler: handler.spec.id.clone(),
            source: <serde_json::Error as serde::ser::Error>::custom(message),
        };
        if inv.body.is_some() {
            return Err(encode_error("the invocation has a body and a serialised body"));
        }
        let call_id = inv.call_id.unwrap_or_else(next_call_id);
        let rest = if inv.call_id.is_some() {
            handler.encode_bare(inv)?
        } else {
            let mut inv = inv.clone();
            inv.call_id = Some(call_id);
            handler.encode_bare(&inv)?
        };
        let payload = splice_body(&rest, body_json).ok_or_else(|| encode_error("not a JSON object"))?;
        let payload = handler.with_context(&payload)?;
        self.submit_payload(handler, call_id, &payload, Some(cancel))
            .await
    }

    /// Submits an encoded invocation and awaits its outcome (see [`PluginSet::invoke_submitted`]).
    async fn submit_payload(
        &self,
        handler: &HandlerRef,
        call_id: u64,
        payload: &str,
        cancel: Option<&CancellationToken>,
    ) -> Result<Outcome, PluginError> {
        let plugin = &handler.plugin;

        let (tx, mut rx) = oneshot::channel();
        plugin.context.pending.lock().insert(call_id, tx);
        // The plugin's lines about the object, from its threads, go into the caller's span.
        let _span = plugin.context.enter_call(call_id);
        let mut guard = PendingGuard {
            handler,
            call_id,
            armed: true,
        };

        let started =
            (plugin.module.submit())(call_id, RStr::from_str(&handler.spec.id), RStr::from_str(payload));
        if let Err(failure) = started.into_result() {
            guard.armed = false;
            plugin.context.pending.lock().remove(&call_id);
            return Err(handler.call_error(failure));
        }

        let completion = match cancel {
            None => rx.await,
            Some(cancel) => tokio::select! {
                done = &mut rx => done,
                () = cancel.cancelled() => {
                    (plugin.module.cancel())(call_id);
                    rx.await
                }
            },
        };
        guard.armed = false;
        let answer = completion
            .map_err(|_| PluginError::Lost {
                plugin: plugin.name(),
                handler: handler.spec.id.clone(),
                reason: format!("submitted call {call_id} was dropped without completion"),
            })?
            .map_err(|f| handler.call_error(f))?;
        handler.decode(&answer)
    }
}

/// Puts `"body": <body_json>` first into the encoded JSON object `rest` (which has no
/// `body` key); `None` if `rest` is not an encoded object.
fn splice_body(rest: &str, body_json: &str) -> Option<String> {
    let inner = rest.strip_prefix('{')?.strip_suffix('}')?;
    let mut payload = String::with_capacity(rest.len() + body_json.len() + 10);
    payload.push_str("{\"body\":");
    payload.push_str(body_json);
    if !inner.trim().is_empty() {
        payload.push(',');
        payload.push_str(inner);
    }
    payload.push('}');
    Some(payload)
}

/// Renders a selector the way Kopf prints resources: `kopfexamples.v1.kopf.dev`,
/// `pods`, `EVERYTHING`; `-` for activities (no selector).
pub fn render_selector(selector: Option<&ResourceSelector>) -> String {
    let Some(s) = selector else { return "-".to_owned() };
    if s.everything {
        return "EVERYTHING".to_owned();
    }
    let callable = s.callable.then(|| "<callable>".to_owned());
    let name = callable
        .into_iter()
        .chain(
            [&s.plural, &s.kind, &s.singular, &s.shortcut, &s.any_name]
                .into_iter()
                .flatten()
                .cloned(),
        )
        .next()
        .or_else(|| s.category.as_ref().map(|c| format!("category={c}")))
        .unwrap_or_else(|| "?".to_owned());
    let mut parts = vec![name];
    if let Some(v) = s.version.as_deref().filter(|v| !v.is_empty()) {
        parts.push(v.to_owned());
    }
    if let Some(g) = s.group.as_deref().filter(|g| !g.is_empty()) {
        parts.push(g.to_owned());
    }
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(json: serde_json::Value) -> ResourceSelector {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn selectors_render_like_kopf() {
        let r = |j| render_selector(Some(&sel(j)));
        assert_eq!(
            r(serde_json::json!({"group": "kopf.dev", "version": "v1", "plural": "kopfexamples"})),
            "kopfexamples.v1.kopf.dev"
        );
        assert_eq!(
            r(serde_json::json!({"group": "", "version": "v1", "plural": "pods"})),
            "pods.v1"
        );
        assert_eq!(r(serde_json::json!({"any_name": "pods"})), "pods");
        assert_eq!(
            r(serde_json::json!({"kind": "KopfExample", "group": "kopf.dev"})),
            "KopfExample.kopf.dev"
        );
        assert_eq!(r(serde_json::json!({"category": "all"})), "category=all");
        assert_eq!(r(serde_json::json!({"everything": true})), "EVERYTHING");
        assert_eq!(render_selector(None), "-");
    }

    #[test]
    fn spliced_bodies_decode_like_encoded_ones() {
        let body = serde_json::json!({"metadata": {"name": "n", "namespace": "ns"}, "spec": {"a": [1, 2]}});
        let mut inv = Invocation {
            retry: 3,
            runtime: 12.5,
            started: Some("2026-01-01T00:00:00Z".into()),
            call_id: Some(7),
            ..Default::default()
        };
        let rest = serde_json::to_string(&inv).unwrap();
        let spliced = splice_body(&rest, &serde_json::to_string(&body).unwrap()).unwrap();
        inv.body = Some(body.clone());
        let decoded: Invocation = serde_json::from_str(&spliced).unwrap();
        assert_eq!(decoded.body, Some(body.clone()));
        assert_eq!(
            serde_json::to_value(&decoded).unwrap(),
            serde_json::to_value(&inv).unwrap()
        );
        assert_eq!(splice_body("{}", "null").as_deref(), Some(r#"{"body":null}"#));
        assert_eq!(splice_body("[]", "{}"), None);
    }

    #[test]
    fn errors_are_one_line() {
        let e = PluginError::RevisionMismatch {
            path: "/p.so".into(),
            found: 999,
            expected: 1,
        };
        assert_eq!(
            e.to_string(),
            "/p.so was built for kopf ABI revision 999, but this kopf supports revision 1; \
             rebuild the plugin against a matching kopf SDK"
        );
        assert!(e.detail().is_none());
    }

    #[test]
    fn only_sync_handler_calls_wait_for_a_worker_and_webhooks_have_their_own_budget() {
        use HandlerKind as K;
        assert_eq!(Budget::of(K::Create, false, Purpose::Handle), Budget::Workers);
        assert_eq!(Budget::of(K::Startup, false, Purpose::Handle), Budget::Workers);
        assert_eq!(Budget::of(K::Create, true, Purpose::Handle), Budget::Unbounded);
        assert_eq!(Budget::of(K::Create, false, Purpose::Filter), Budget::Unbounded);
        assert_eq!(Budget::of(K::Validate, false, Purpose::Handle), Budget::Admission);
        assert_eq!(Budget::of(K::Mutate, true, Purpose::Handle), Budget::Unbounded);
        assert_eq!(Budget::of(K::Validate, false, Purpose::Filter), Budget::Unbounded);
    }
}
