//! The typed handler context: Kopf's handler kwargs as methods.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut, Index, IndexMut};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use kopf_abi::protocol::{
    self, AdmissionInfo, HandlerOptions, Invocation, Purpose, ResourceInfo, SubhandlerState, host_methods,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::HostCallError;
use crate::host;
use crate::index::IndexRef;
use crate::logging::ObjectLogger;
use crate::memo::{self, Memo};
use crate::patch_fns::PatchFns;
use crate::subhandlers::{
    self, Children, ChildrenPending, SubFn, Subhandler, SubhandlerBuilder, SubhandlerError, WhenFn,
};
use crate::testing::EventRecorder;

static NULL: Value = Value::Null;

/// Everything a handler gets: the object, the cause, and ways to act (patch, events,
/// logs). Handlers take it by shared reference, `ctx: &kopf::Context`.
///
/// Cloning is cheap and clones share the patch and the admission warnings.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    handler_id: String,
    invocation: Invocation,
    patch: Mutex<Patch>,
    warnings: Mutex<Vec<String>>,
    /// Startup handlers' adjusted settings (`None` until first touched).
    settings: Mutex<Option<Value>>,
    /// The memo of this call, resolved on first use.
    memo: OnceLock<Memo>,
    /// Sub-handlers registered during this call.
    children: Mutex<Children>,
    /// Built by `testing::ContextBuilder`: events are recorded here instead of posted.
    events: Option<EventRecorder>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("handler_id", &self.inner.handler_id)
            .field("object", &self.object_ref())
            .field("reason", &self.reason())
            .finish()
    }
}

/// One change of a diff: Kopf's `DiffItem`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffItem {
    /// `add`, `change` or `remove`.
    pub operation: DiffOperation,
    /// The path of the changed field, e.g. `["spec", "field"]`.
    pub field: Vec<String>,
    /// The old value (`None` when added).
    pub old: Option<Value>,
    /// The new value (`None` when removed).
    pub new: Option<Value>,
}

/// The operation of a [`DiffItem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiffOperation {
    /// The field was added.
    Add,
    /// The field changed.
    Change,
    /// The field was removed.
    Remove,
}

impl Context {
    /// A context for this handler id and invocation (used by the runner and by tests).
    pub fn from_invocation(handler_id: impl Into<String>, invocation: Invocation) -> Self {
        Self {
            inner: Arc::new(Inner {
                handler_id: handler_id.into(),
                invocation,
                patch: Mutex::new(Patch::new()),
                warnings: Mutex::new(Vec::new()),
                settings: Mutex::new(None),
                memo: OnceLock::new(),
                children: Mutex::new(Children::default()),
                events: None,
            }),
        }
    }

    /// The same context, recording posted events instead of sending them to a host.
    pub(crate) fn with_event_recorder(self, recorder: EventRecorder) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.events = Some(recorder);
                Self {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => Self { inner },
        }
    }

    pub(crate) fn event_recorder(&self) -> Option<&EventRecorder> {
        self.inner.events.as_ref()
    }

    /// The context of a sub-handler of this handler: the same object and cause, with the
    /// sub-handler's own id, attempt counters, param, and patch, and the states of its own
    /// sub-handlers (of any depth).
    pub(crate) fn child(&self, id: &str, state: &SubhandlerState, param: Option<Value>) -> Self {
        let mut invocation = self.inner.invocation.clone();
        let prefix = format!("{id}/");
        invocation.subhandlers.retain(|key, _| key.starts_with(&prefix));
        invocation.retry = state.retry;
        invocation.runtime = state.runtime;
        invocation.started = state.started.clone();
        invocation.param = param;
        Self {
            inner: Arc::new(Inner {
                handler_id: id.to_owned(),
                invocation,
                patch: Mutex::new(Patch::new()),
                warnings: Mutex::new(Vec::new()),
                settings: Mutex::new(None),
                // Resolved again on use: the same object memo as the parent's.
                memo: OnceLock::new(),
                children: Mutex::new(Children::default()),
                events: self.inner.events.clone(),
            }),
        }
    }

    pub(crate) fn with_children<R>(&self, f: impl FnOnce(&mut Children) -> R) -> R {
        f(&mut lock(&self.inner.children))
    }

    pub(crate) fn add_subhandler(
        &self,
        id: String,
        options: HandlerOptions,
        when: Option<WhenFn>,
        func: SubFn,
    ) -> Result<(), SubhandlerError> {
        if id.is_empty() {
            return Err(SubhandlerError::EmptyId);
        }
        if self.inner.invocation.reason.is_none() {
            return Err(SubhandlerError::NotChanging);
        }
        let id = format!("{}/{id}", self.inner.handler_id);
        self.with_children(|c| {
            c.add(Subhandler {
                id,
                options,
                when,
                func,
            })
        })
    }

    // --- Sub-handlers ----------------------------------------------------------------------

    /// Registers a sub-handler of this changing handler (Kopf's `kopf.register(fn, id=...)`
    /// and `@kopf.subhandler(id=...)`), with default options. Its full id is
    /// `<this handler's id>/<id>`. It runs after this handler returns `Ok`, or earlier
    /// with [`Context::execute`]; see [`crate::subhandlers`] for the whole story.
    ///
    /// ```
    /// #[kopf::on::create("kopfexamples")]
    /// fn create_fn(ctx: &kopf::Context) -> kopf::Result<()> {
    ///     ctx.register("first", |_ctx: &kopf::Context| -> kopf::Result<_> { Ok(1) })?;
    ///     ctx.register("second", |_ctx: &kopf::Context| -> kopf::Result<_> { Ok(2) })?;
    ///     Ok(()) // then `create_fn/first` and `create_fn/second` run
    /// }
    /// # fn main() {}
    /// ```
    pub fn register<F, T, E>(&self, id: impl Into<String>, f: F) -> Result<(), SubhandlerError>
    where
        F: Fn(&Context) -> Result<T, E> + Send + Sync + 'static,
        T: Serialize,
        E: Into<crate::Error>,
    {
        self.subhandler(id).register(f)
    }

    /// Starts registering a sub-handler with options (errors, timeout, retries, backoff,
    /// param): `ctx.subhandler("item").retries(3).register(|ctx| ...)`.
    ///
    /// ```
    /// # fn parent(ctx: &kopf::Context) -> kopf::Result<()> {
    /// ctx.subhandler("slow")
    ///     .timeout(600.0)
    ///     .register(|_ctx: &kopf::Context| -> kopf::Result<()> { Ok(()) })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn subhandler(&self, id: impl Into<String>) -> SubhandlerBuilder<'_> {
        SubhandlerBuilder::new(self, id.into())
    }

    /// Runs the sub-handlers registered so far, now (Kopf's `await kopf.execute()`), and
    /// returns [`ChildrenPending`] if any of them is not finished; propagate it with `?` so
    /// that the rest of the parent runs only once all its sub-handlers are done:
    ///
    /// ```
    /// #[kopf::on::create("kopfexamples")]
    /// fn create_fn(ctx: &kopf::Context) -> kopf::Result<&'static str> {
    ///     ctx.register("prepare", |_ctx: &kopf::Context| -> kopf::Result<()> { Ok(()) })?;
    ///     ctx.execute()?; // `create_fn/prepare` has finished past this line
    ///     Ok("prepared")
    /// }
    /// # fn main() {}
    /// ```
    ///
    /// Sub-handlers registered later run after the parent returns, as usual. Calling it
    /// from an `async` handler blocks that task while the (synchronous) sub-handlers run.
    pub fn execute(&self) -> Result<(), ChildrenPending> {
        if subhandlers::execute(self) {
            Ok(())
        } else {
            Err(ChildrenPending)
        }
    }

    /// Runs functions as sub-handlers of this handler now (Kopf's
    /// `await kopf.execute(fns=...)`): each with the id `<this handler's id>/<key>`, its
    /// progress kept as a registered sub-handler's. Returns [`ChildrenPending`] (as a
    /// [`crate::Error`]) while any of them is unfinished; propagate it with `?`. Bad ids
    /// (empty, twice, a closure without one) are a [`SubhandlerError`] and nothing runs.
    /// See [`crate::fns`](mod@crate::fns).
    pub fn execute_fns(&self, fns: crate::Fns) -> crate::Result<()> {
        if let Some(error) = fns.error {
            return Err(error.into());
        }
        if self.inner.invocation.reason.is_none() {
            return Err(SubhandlerError::NotChanging.into());
        }
        let mut subs = Vec::with_capacity(fns.entries.len());
        for entry in fns.entries {
            if entry.id.is_empty() {
                return Err(SubhandlerError::EmptyId.into());
            }
            let id = format!("{}/{}", self.inner.handler_id, entry.id);
            self.with_children(|c| c.claim(&id))?;
            subs.push(Subhandler {
                id,
                options: entry.options,
                when: None,
                func: entry.func,
            });
        }
        if subhandlers::run(self, subs) {
            Ok(())
        } else {
            Err(ChildrenPending.into())
        }
    }

    /// The raw invocation the host sent.
    pub fn invocation(&self) -> &Invocation {
        &self.inner.invocation
    }

    /// The id of the handler being called.
    pub fn handler_id(&self) -> &str {
        &self.inner.handler_id
    }

    /// Whether the host asked to run the handler or to evaluate its filters.
    pub fn purpose(&self) -> Purpose {
        self.inner.invocation.purpose
    }

    // --- The object ---------------------------------------------------------------------

    /// The whole object body (`Null` for activities).
    pub fn body(&self) -> &Value {
        self.inner.invocation.body.as_ref().unwrap_or(&NULL)
    }

    /// `body.spec` (`Null` if absent).
    pub fn spec(&self) -> &Value {
        self.body().get("spec").unwrap_or(&NULL)
    }

    /// `body.metadata` (`Null` if absent).
    pub fn meta(&self) -> &Value {
        self.body().get("metadata").unwrap_or(&NULL)
    }

    /// `body.status` (`Null` if absent).
    pub fn status(&self) -> &Value {
        self.body().get("status").unwrap_or(&NULL)
    }

    /// `metadata.name`.
    pub fn name(&self) -> Option<&str> {
        self.meta().get("name").and_then(Value::as_str)
    }

    /// `metadata.namespace` (`None` for cluster-scoped objects).
    pub fn namespace(&self) -> Option<&str> {
        self.meta().get("namespace").and_then(Value::as_str)
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> Option<&str> {
        self.meta().get("uid").and_then(Value::as_str)
    }

    /// `metadata.labels` (empty if absent).
    pub fn labels(&self) -> BTreeMap<String, String> {
        string_map(self.meta().get("labels"))
    }

    /// `metadata.annotations` (empty if absent).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        string_map(self.meta().get("annotations"))
    }

    /// The value at a dotted path of the body, e.g. `"spec.field"`.
    pub fn field(&self, path: &str) -> Option<&Value> {
        resolve_path(self.body(), path)
    }

    /// Deserialises `body.spec` into your own type (a serde struct, or the spec type of a
    /// kube `CustomResource`).
    pub fn spec_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(self.spec())
    }

    /// Deserialises `body.status` into your own type.
    pub fn status_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(self.status())
    }

    /// Deserialises the whole body (e.g. into a kube `CustomResource` type).
    pub fn body_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(self.body())
    }

    /// `namespace/name` (or `name` for cluster-scoped objects), empty for none.
    pub fn object_ref(&self) -> String {
        match (self.namespace(), self.name()) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.to_owned(),
            _ => String::new(),
        }
    }

    /// The served resource, as discovered by the host.
    pub fn resource(&self) -> Option<&ResourceInfo> {
        self.inner.invocation.resource.as_ref()
    }

    // --- The cause -----------------------------------------------------------------------

    /// `create`, `update`, `delete` or `resume` (changing handlers).
    pub fn reason(&self) -> Option<&str> {
        self.inner.invocation.reason.as_deref()
    }

    /// The raw watch event type of event handlers (`ADDED`, `MODIFIED`, `DELETED`; `None` for
    /// a listing).
    pub fn event_type(&self) -> Option<&str> {
        self.inner.invocation.event_type.as_deref()
    }

    /// The owned child whose change runs this event handler (a handler with `owns`);
    /// `None` when the handler runs for an event of the object itself.
    pub fn owned(&self) -> Option<OwnedChild<'_>> {
        self.inner.invocation.extra.get("owned").map(OwnedChild)
    }

    /// The diff, parsed from Kopf's `[operation, [path...], old, new]` tuples.
    pub fn diff(&self) -> Vec<DiffItem> {
        let Some(Value::Array(items)) = &self.inner.invocation.diff else {
            return Vec::new();
        };
        items.iter().filter_map(parse_diff_item).collect()
    }

    /// The old essence or field value.
    pub fn old(&self) -> Option<&Value> {
        self.inner.invocation.old.as_ref()
    }

    /// The new essence or field value (Kopf's `new` kwarg).
    #[allow(clippy::new_ret_no_self, clippy::wrong_self_convention)]
    pub fn new(&self) -> Option<&Value> {
        self.inner.invocation.new.as_ref()
    }

    /// 0-based attempt number.
    pub fn retry(&self) -> u32 {
        self.inner.invocation.retry
    }

    /// RFC 3339 time of the first attempt.
    pub fn started(&self) -> Option<&str> {
        self.inner.invocation.started.as_deref()
    }

    /// Time since the first attempt.
    pub fn runtime(&self) -> Duration {
        Duration::try_from_secs_f64(self.inner.invocation.runtime).unwrap_or_default()
    }

    /// The handler's `param` option.
    pub fn param(&self) -> Option<&Value> {
        self.inner.invocation.param.as_ref()
    }

    /// Deserialises the handler's `param` option.
    pub fn param_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(self.param().unwrap_or(&NULL))
    }

    /// Activities: `startup`, `cleanup`, `authentication` or `probe`.
    pub fn activity(&self) -> Option<&str> {
        self.inner.invocation.activity.as_deref()
    }

    /// Operator settings (activities).
    pub fn settings(&self) -> Option<&Value> {
        self.inner.invocation.settings.as_ref()
    }

    /// The operator settings for a startup handler to adjust (Kopf's mutable `settings`
    /// kwarg), as JSON in Kopf's shape: `ctx.settings_mut()["posting"]["enabled"] = json!(false)`.
    ///
    /// The adjusted settings travel back in `Outcome.extra["settings"]` when the handler
    /// succeeds; the host applies them before the next startup handler and before the
    /// operator starts watching. Only startup handlers' changes are applied. Returns a
    /// lock guard: do not hold it across an `.await`.
    pub fn settings_mut(&self) -> SettingsGuard<'_> {
        let mut guard = lock(&self.inner.settings);
        if guard.is_none() {
            let initial = self
                .inner
                .invocation
                .settings
                .clone()
                .filter(Value::is_object)
                .unwrap_or_else(|| Value::Object(Map::new()));
            *guard = Some(initial);
        }
        SettingsGuard(guard)
    }

    /// Deserialises the operator settings (activities) into your own type.
    pub fn settings_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(self.settings().unwrap_or(&NULL))
    }

    /// A kind-specific extra value of the invocation.
    pub fn extra(&self, key: &str) -> Option<&Value> {
        self.inner.invocation.extra.get(key)
    }

    // --- Webhooks --------------------------------------------------------------------------

    /// The admission request details (webhook handlers).
    pub fn admission(&self) -> Option<&AdmissionInfo> {
        self.inner.invocation.admission.as_ref()
    }

    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT` (webhooks).
    pub fn operation(&self) -> Option<&str> {
        self.admission().map(|a| a.operation.as_str())
    }

    /// The subresource of the admission request, if any.
    pub fn subresource(&self) -> Option<&str> {
        self.admission().and_then(|a| a.subresource.as_deref())
    }

    /// Whether the admission request is a dry run.
    pub fn dryrun(&self) -> bool {
        self.admission().is_some_and(|a| a.dryrun)
    }

    /// The requesting user of the admission request.
    pub fn userinfo(&self) -> &Value {
        self.admission().map_or(&NULL, |a| &a.userinfo)
    }

    /// The HTTP headers of the admission request.
    pub fn headers(&self) -> BTreeMap<String, String> {
        self.admission().map(|a| a.headers.clone()).unwrap_or_default()
    }

    /// The client certificate of the admission request.
    pub fn sslpeer(&self) -> &Value {
        self.admission().map_or(&NULL, |a| &a.sslpeer)
    }

    /// Adds an admission warning (returned to the API client).
    pub fn add_warning(&self, warning: impl Into<String>) {
        lock(&self.inner.warnings).push(warning.into());
    }

    /// The admission warnings added so far.
    pub fn warnings(&self) -> Vec<String> {
        lock(&self.inner.warnings).clone()
    }

    // --- Acting ----------------------------------------------------------------------------

    /// The merge patch to apply to the object after the handler (Kopf's `patch`):
    /// `ctx.patch().status()["x"] = json!(1)` or `ctx.patch().set("spec.field", "v")`.
    ///
    /// Returns a lock guard: do not hold it across an `.await`.
    pub fn patch(&self) -> PatchGuard<'_> {
        PatchGuard(lock(&self.inner.patch))
    }

    /// The logger of this object: lines carry the `[namespace/name]` prefix.
    pub fn logger(&self) -> ObjectLogger {
        ObjectLogger::new(self.object_ref(), self.host())
    }

    /// The operator that made this call: its host calls go there from any thread or task.
    pub(crate) fn host(&self) -> host::Host {
        host::Host::of(self.inner.invocation.host_context)
    }

    /// Posts a `Normal` Kubernetes Event about the object (`kopf.info`).
    ///
    /// Not posted when the operator's `settings.posting.level` is above `INFO`.
    pub fn info(&self, reason: &str, message: impl fmt::Display) {
        self.post("Normal", Some("INFO"), reason, message);
    }

    /// Posts a `Warning` Kubernetes Event about the object (`kopf.warn`).
    ///
    /// Not posted when the operator's `settings.posting.level` is above `WARNING`.
    pub fn warn(&self, reason: &str, message: impl fmt::Display) {
        self.post("Warning", Some("WARNING"), reason, message);
    }

    /// Posts an `Error` Kubernetes Event about the object (`kopf.exception`).
    ///
    /// Not posted when the operator's `settings.posting.level` is above `ERROR`.
    pub fn exception(&self, reason: &str, message: impl fmt::Display) {
        self.post("Error", Some("ERROR"), reason, message);
    }

    /// Posts a Kubernetes Event of any type about the object (`kopf.event`). Failures are
    /// logged at debug level and otherwise ignored, as in Kopf.
    pub fn event(&self, event_type: &str, reason: &str, message: impl fmt::Display) {
        self.post(event_type, None, reason, message);
    }

    /// Posts an event; `level` (Python's level name) lets the operator drop it below
    /// `settings.posting.level`.
    fn post(&self, event_type: &str, level: Option<&str>, reason: &str, message: impl fmt::Display) {
        let mut payload = json!({
            "object": self.object_reference(),
            "type": event_type,
            "reason": reason,
            "message": message.to_string(),
        });
        if let Some(level) = level {
            payload["level"] = Value::from(level);
        }
        if let Some(recorder) = &self.inner.events {
            recorder.record(payload);
            return;
        }
        if let Err(e) = self
            .host()
            .call::<_, Value>(host_methods::EVENT_POST, 1, &payload)
        {
            self.logger().debug(format_args!("Failed to post an event: {e}"));
        }
    }

    /// The Kubernetes object reference of the object (apiVersion, kind, name, uid, namespace).
    pub fn object_reference(&self) -> Value {
        let body = self.body();
        let mut r = Map::new();
        for (key, value) in [
            ("apiVersion", body.get("apiVersion")),
            ("kind", body.get("kind")),
            ("name", self.meta().get("name")),
            ("uid", self.meta().get("uid")),
            ("namespace", self.meta().get("namespace")),
        ] {
            if let Some(v) = value {
                r.insert(key.to_owned(), v.clone());
            }
        }
        Value::Object(r)
    }

    /// The object as the operator last saw it (Kopf's live `body` of daemons and timers):
    /// while a daemon runs, [`Context::body`] stays the body it started with, and this
    /// follows the object's changes. Other handlers, hosts without the `daemon.body`
    /// method, and calls that have ended get [`Context::body`].
    ///
    /// ```
    /// # fn daemon(ctx: &kopf::Context) {
    /// let stopped = ctx.stopped();
    /// while !stopped.wait(Some(std::time::Duration::from_secs(1))) {
    ///     let replicas = ctx.live_body()["spec"]["replicas"].as_u64();
    ///     // ... reconcile towards `replicas` ...
    /// #   let _ = replicas;
    /// }
    /// # }
    /// ```
    pub fn live_body(&self) -> Value {
        #[derive(serde::Deserialize)]
        struct Answer {
            body: Value,
        }
        let fresh = self.inner.invocation.call_id.and_then(|call_id| {
            self.host()
                .call::<_, Answer>(host_methods::DAEMON_BODY, 1, &json!({ "call_id": call_id }))
                .ok()
        });
        fresh.map_or_else(|| self.body().clone(), |answer| answer.body)
    }

    /// The stop flag of a daemon or timer (Kopf's `stopped` kwarg).
    pub fn stopped(&self) -> DaemonStopped {
        DaemonStopped {
            call_id: self.inner.invocation.call_id,
            host_context: self.inner.invocation.host_context,
        }
    }

    /// The in-memory container for non-serialisable values (Kopf's `memo` kwarg): the
    /// object's own memo for resource handlers, daemons and timers (shared by all of this
    /// object's handlers in this plugin, seeded from the operator memo, dropped when the
    /// object is gone); the operator memo for activities; a throwaway copy of the operator
    /// memo for admission handlers. See the [`crate::memo`] module.
    ///
    /// ```
    /// # fn handler(ctx: &kopf::Context) -> kopf::Result<()> {
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// let hits = ctx.memo().get_or_insert_with("hits", || AtomicU64::new(0))?;
    /// hits.fetch_add(1, Ordering::Relaxed);
    /// # Ok(()) }
    /// ```
    pub fn memo(&self) -> Memo {
        self.inner
            .memo
            .get_or_init(|| {
                let inv = &self.inner.invocation;
                if inv.admission.is_some() {
                    return memo::operator_memo().shallow_copy();
                }
                if inv.activity.is_some() || inv.body.as_ref().is_none_or(Value::is_null) {
                    return memo::operator_memo();
                }
                match self.uid().filter(|u| !u.is_empty()) {
                    Some(uid) => memo::object_memo(uid),
                    // No uid to remember the object by: nothing can be kept.
                    None => memo::operator_memo().shallow_copy(),
                }
            })
            .clone()
    }

    /// An index declared with `#[kopf::index]`, looked up through the host.
    pub fn index(&self, name: &str) -> IndexRef {
        IndexRef::new(name)
    }

    pub(crate) fn take_patch(&self) -> Patch {
        std::mem::take(&mut *lock(&self.inner.patch))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    let Some(Value::Object(m)) = v else {
        return BTreeMap::new();
    };
    m.iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
        .collect()
}

/// Resolves a dotted path (`spec.field`) inside a JSON value.
pub(crate) fn resolve_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(root, |v, key| v.get(key))
}

fn parse_diff_item(v: &Value) -> Option<DiffItem> {
    let items = v.as_array()?;
    let operation = match items.first()?.as_str()? {
        "add" => DiffOperation::Add,
        "change" => DiffOperation::Change,
        "remove" => DiffOperation::Remove,
        _ => return None,
    };
    let field = items
        .get(1)?
        .as_array()?
        .iter()
        .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
        .collect();
    let opt = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
    Some(DiffItem {
        operation,
        field,
        old: opt(items.get(2)),
        new: opt(items.get(3)),
    })
}

/// A JSON merge patch for the handled object (Kopf's `patch`), and body transformations
/// sent as a JSON patch (Kopf's `patch.fns`: [`Patch::fns`]).
///
/// Index it like a JSON value (`patch["metadata"]["labels"]["x"] = json!("y")`), or use the
/// helpers. Setting a key to `null` removes it from the object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch(Value, PatchFns);

impl Patch {
    /// An empty patch.
    pub fn new() -> Self {
        Self(Value::Object(Map::new()), PatchFns::default())
    }

    /// The body transformations (Kopf's `patch.fns`): `patch.fns().push(|body| ...)`; see
    /// [`crate::patch_fns`].
    pub fn fns(&mut self) -> &mut PatchFns {
        &mut self.1
    }

    /// True when the merge patch changes nothing (the transformations aside).
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Value::Object(m) => m.is_empty(),
            Value::Null => true,
            _ => false,
        }
    }

    /// The `spec` part, created on first use.
    pub fn spec(&mut self) -> &mut Value {
        &mut self.0["spec"]
    }

    /// The `status` part, created on first use.
    pub fn status(&mut self) -> &mut Value {
        &mut self.0["status"]
    }

    /// The `metadata` part, created on first use.
    pub fn meta(&mut self) -> &mut Value {
        &mut self.0["metadata"]
    }

    /// Sets the value at a dotted path, e.g. `set("spec.field", "value")`.
    pub fn set(&mut self, path: &str, value: impl Into<Value>) -> &mut Self {
        let mut cur = &mut self.0;
        for key in path.split('.').filter(|k| !k.is_empty()) {
            if !cur.is_object() {
                *cur = Value::Object(Map::new());
            }
            cur = &mut cur[key];
        }
        *cur = value.into();
        self
    }

    /// Removes the value at a dotted path (merge-patch `null`).
    pub fn remove(&mut self, path: &str) -> &mut Self {
        self.set(path, Value::Null)
    }

    /// The patch as JSON.
    pub fn as_value(&self) -> &Value {
        &self.0
    }

    /// The patch as JSON, by value.
    pub fn into_value(self) -> Value {
        self.0
    }
}

impl Index<&str> for Patch {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        &self.0[key]
    }
}

impl IndexMut<&str> for Patch {
    fn index_mut(&mut self, key: &str) -> &mut Value {
        &mut self.0[key]
    }
}

/// Exclusive access to the context's [`Patch`]; see [`Context::patch`].
pub struct PatchGuard<'a>(MutexGuard<'a, Patch>);

impl Deref for PatchGuard<'_> {
    type Target = Patch;

    fn deref(&self) -> &Patch {
        &self.0
    }
}

impl DerefMut for PatchGuard<'_> {
    fn deref_mut(&mut self) -> &mut Patch {
        &mut self.0
    }
}

/// Exclusive access to the settings a startup handler adjusts; see [`Context::settings_mut`].
pub struct SettingsGuard<'a>(MutexGuard<'a, Option<Value>>);

impl Deref for SettingsGuard<'_> {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.0.as_ref().unwrap_or(&NULL)
    }
}

impl DerefMut for SettingsGuard<'_> {
    fn deref_mut(&mut self) -> &mut Value {
        self.0.get_or_insert_with(|| Value::Object(Map::new()))
    }
}

impl SettingsGuard<'_> {
    /// Sets the value at a dotted path, e.g. `set("posting.enabled", false)`.
    pub fn set(&mut self, path: &str, value: impl Into<Value>) -> &mut Self {
        let mut cur: &mut Value = self;
        for key in path.split('.').filter(|k| !k.is_empty()) {
            if !cur.is_object() {
                *cur = Value::Object(Map::new());
            }
            cur = &mut cur[key];
        }
        *cur = value.into();
        self
    }
}

/// Why a daemon was asked to stop, and whether it was.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct StopState {
    /// Whether the daemon was asked to stop.
    #[serde(default)]
    pub stopped: bool,
    /// Kopf's `DaemonStoppingReason`, as text.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The stop flag of a daemon or timer (Kopf's `stopped`); asks the host.
///
/// Until the host implements the daemon methods, [`DaemonStopped::is_set`] answers `false`
/// and the waits simply sleep for their timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonStopped {
    call_id: Option<u64>,
    /// The operator that runs the daemon (see [`Context::host`]).
    host_context: Option<u64>,
}

/// Sleep used by [`DaemonStopped::wait`] when the host cannot wait and no timeout is given.
const UNSUPPORTED_WAIT: Duration = Duration::from_secs(1);

impl DaemonStopped {
    /// Whether the daemon was asked to stop. `false` when the host cannot tell.
    pub fn is_set(&self) -> bool {
        self.state().is_ok_and(|s| s.stopped)
    }

    /// The full stop state from the host.
    pub fn state(&self) -> Result<StopState, HostCallError> {
        let Some(call_id) = self.call_id else {
            return Ok(StopState::default());
        };
        host::Host::of(self.host_context).call(
            host_methods::DAEMON_STOPPED,
            1,
            &json!({ "call_id": call_id }),
        )
    }

    /// Blocks until the daemon is asked to stop or `timeout` passes; returns whether it was
    /// asked to stop. `None` waits without limit (or one second if the host cannot wait).
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let answer = self.call_id.map(|call_id| {
            host::Host::of(self.host_context).call::<_, StopState>(
                host_methods::DAEMON_WAIT,
                1,
                &json!({ "call_id": call_id, "timeout": timeout.map(|t| t.as_secs_f64()) }),
            )
        });
        match answer {
            Some(Ok(state)) => state.stopped,
            _ => {
                std::thread::sleep(timeout.unwrap_or(UNSUPPORTED_WAIT));
                false
            }
        }
    }

    /// The async form of [`DaemonStopped::wait`]; the blocking host call runs on the
    /// plugin runtime's blocking pool.
    pub async fn wait_async(&self, timeout: Option<Duration>) -> bool {
        let this = *self;
        tokio::task::spawn_blocking(move || this.wait(timeout))
            .await
            .unwrap_or(false)
    }
}

/// Builds the JSON outcome pieces from a finished context.
pub(crate) fn finish(ctx: &Context, outcome: &mut protocol::Outcome) {
    let mut patch = ctx.take_patch();
    let fns = std::mem::take(patch.fns());
    let admission = ctx.inner.invocation.admission.as_ref();
    if !fns.is_empty() && admission.is_some_and(|a| !a.applies_patch_fns) {
        tracing::warn!(target: "kopf", "patch.fns are not applied in admission webhooks by this kopf: {} dropped", fns.len());
    } else if !fns.is_empty() {
        outcome.patch_fns = crate::patch_fns::keep(fns);
    }
    if !patch.is_empty() {
        outcome.patch = Some(patch.into_value());
    }
    outcome.warnings = ctx.warnings();
    let settings = lock(&ctx.inner.settings).take();
    if let Some(settings) = settings
        && ctx.inner.invocation.settings.as_ref() != Some(&settings)
    {
        outcome.extra.insert(SETTINGS_KEY.to_owned(), settings);
    }
}

/// The key of `Outcome.extra` that carries a startup handler's adjusted settings.
pub const SETTINGS_KEY: &str = "settings";

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context::from_invocation(
            "h",
            Invocation {
                body: Some(json!({
                    "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
                    "metadata": {"name": "n", "namespace": "ns", "uid": "u",
                                 "labels": {"app": "x"}, "annotations": {}},
                    "spec": {"field": "value", "items": ["a"]},
                })),
                diff: Some(json!([
                    ["change", ["spec", "field"], "old", "new"],
                    ["add", ["spec", "x"], null, 1]
                ])),
                runtime: 1.5,
                param: Some(json!({"k": 1})),
                ..Default::default()
            },
        )
    }

    #[test]
    fn memos_by_kind_of_call() {
        let obj = |uid: &str| Invocation {
            body: Some(json!({"metadata": {"name": "m", "uid": uid}})),
            ..Default::default()
        };
        let a1 = Context::from_invocation("h1", obj("ctx-memo-a"));
        let a2 = Context::from_invocation("h2", obj("ctx-memo-a"));
        let b = Context::from_invocation("h1", obj("ctx-memo-b"));
        a1.memo().insert("x", 1_u8);
        assert_eq!(
            a2.memo().get::<u8>("x").as_deref(),
            Some(&1),
            "one memo per object"
        );
        assert!(!b.memo().contains("x"), "objects do not share memos");
        assert!(a1.memo().ptr_eq(&a1.memo()), "stable within a call");

        let startup = Context::from_invocation(
            "s",
            Invocation {
                activity: Some("startup".into()),
                ..Default::default()
            },
        );
        assert!(startup.memo().ptr_eq(&crate::operator_memo()));

        let admission = Context::from_invocation(
            "v",
            Invocation {
                admission: Some(AdmissionInfo::default()),
                ..obj("ctx-memo-a")
            },
        );
        let throwaway = admission.memo();
        assert!(!throwaway.ptr_eq(&crate::operator_memo()));
        assert!(!throwaway.contains("x"), "admission does not see the object memo");
        throwaway.insert("y", 2_u8);
        assert!(!crate::operator_memo().contains("y"));
        assert!(!a1.memo().contains("y"));
        crate::memo::forget("ctx-memo-a");
        crate::memo::forget("ctx-memo-b");
    }

    #[test]
    fn accessors() {
        let c = ctx();
        assert_eq!(c.name(), Some("n"));
        assert_eq!(c.namespace(), Some("ns"));
        assert_eq!(c.uid(), Some("u"));
        assert_eq!(c.object_ref(), "ns/n");
        assert_eq!(c.labels().get("app").map(String::as_str), Some("x"));
        assert!(c.annotations().is_empty());
        assert_eq!(c.field("spec.field"), Some(&json!("value")));
        assert_eq!(c.status(), &Value::Null);
        assert_eq!(c.runtime(), Duration::from_millis(1500));
        let diff = c.diff();
        assert_eq!(diff.len(), 2);
        assert_eq!(diff[0].operation, DiffOperation::Change);
        assert_eq!(diff[0].field, vec!["spec", "field"]);
        assert_eq!(diff[1].old, None);
        assert_eq!(c.object_reference()["kind"], "KopfExample");

        #[derive(serde::Deserialize)]
        struct Spec {
            field: String,
            items: Vec<String>,
        }
        let spec: Spec = c.spec_as().unwrap();
        assert_eq!(spec.field, "value");
        assert_eq!(spec.items, vec!["a"]);
        #[derive(serde::Deserialize)]
        struct P {
            k: u32,
        }
        assert_eq!(c.param_as::<P>().unwrap().k, 1);
    }

    #[test]
    fn patch_building() {
        let c = ctx();
        c.patch().status()["x"] = json!(1);
        c.patch().set("spec.field", "v").remove("metadata.labels.app");
        c.patch()["metadata"]["annotations"]["a"] = json!("b");
        let p = c.take_patch().into_value();
        assert_eq!(
            p,
            json!({"status": {"x": 1}, "spec": {"field": "v"},
                   "metadata": {"labels": {"app": null}, "annotations": {"a": "b"}}})
        );
        assert!(c.patch().is_empty());
    }

    #[test]
    fn adjusted_settings_travel_back_only_when_changed() {
        let c = Context::from_invocation(
            "s",
            Invocation {
                settings: Some(json!({"posting": {"enabled": true}})),
                ..Default::default()
            },
        );
        assert_eq!(c.settings_mut()["posting"]["enabled"], json!(true));
        let mut untouched = protocol::Outcome::default();
        finish(&c, &mut untouched);
        assert!(untouched.extra.is_empty());

        c.settings_mut()["posting"]["enabled"] = json!(false);
        c.settings_mut().set("queueing.worker_limit", 3);
        let mut changed = protocol::Outcome::default();
        finish(&c, &mut changed);
        assert_eq!(
            changed.extra[SETTINGS_KEY],
            json!({"posting": {"enabled": false}, "queueing": {"worker_limit": 3}})
        );
    }

    #[test]
    fn host_features_without_a_host_do_not_panic() {
        let c = ctx();
        assert!(!c.stopped().is_set());
        assert!(c.index("idx").get("k").is_err());
        c.info("Reason", "message");
        assert!(!c.stopped().wait(Some(Duration::ZERO)));
    }
}

/// An owned child whose change woke its owner's event handler ([`Context::owned`]): the
/// owner is the context's body; the child is here.
#[derive(Debug, Clone, Copy)]
pub struct OwnedChild<'a>(&'a Value);

impl<'a> OwnedChild<'a> {
    fn text(&self, key: &str) -> Option<&'a str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// The child's watch event type (`ADDED`, `MODIFIED`, `DELETED`; `None` for a listing).
    pub fn event_type(&self) -> Option<&'a str> {
        self.text("type")
    }

    /// The child's `apiVersion`.
    pub fn api_version(&self) -> Option<&'a str> {
        self.text("apiVersion")
    }

    /// The child's kind (`Pod`).
    pub fn kind(&self) -> Option<&'a str> {
        self.text("kind")
    }

    /// The child's resource plural (`pods`).
    pub fn plural(&self) -> Option<&'a str> {
        self.text("plural")
    }

    /// The child's name.
    pub fn name(&self) -> Option<&'a str> {
        self.text("name")
    }

    /// The child's namespace (`None` for cluster-scoped children).
    pub fn namespace(&self) -> Option<&'a str> {
        self.text("namespace")
    }

    /// The child's body as the event brought it.
    pub fn body(&self) -> &'a Value {
        static NULL: Value = Value::Null;
        self.0.get("body").unwrap_or(&NULL)
    }
}
