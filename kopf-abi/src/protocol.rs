//! The JSON documents that travel through the ABI.
//!
//! These types are the *evolving* part of the contract: every field added later must be
//! optional (`#[serde(default)]`) so that old plugins and old hosts keep understanding
//! each other. Unknown fields are ignored on both sides.
//!
//! Field names follow Kopf's vocabulary (`reason`, `diff`, `old`, `new`, `retry`,
//! `started`, `runtime`, `param`, ...), so a reader of Kopf's docs recognises them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What [`crate::PluginModule::describe`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginDescription {
    /// The ABI revision the plugin was built against (same as the root module's).
    pub abi_revision: u32,
    /// The version of the SDK that built the plugin.
    #[serde(default)]
    pub sdk_version: String,
    /// The plugin crate's name and version, for logs and `kopf inspect`.
    #[serde(default)]
    pub plugin: PluginInfo,
    /// Every handler the plugin declares.
    #[serde(default)]
    pub handlers: Vec<HandlerSpec>,
    /// CustomResourceDefinitions of the Rust types its handlers select by type (the SDK's
    /// `typed` feature), for `kopf crd`; absent from older plugins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crds: Vec<Value>,
}

/// The plugin crate's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// The crate name.
    #[serde(default)]
    pub name: String,
    /// The crate version.
    #[serde(default)]
    pub version: String,
}

/// The kinds of handlers, one per Kopf decorator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandlerKind {
    /// `@kopf.on.resume`.
    Resume,
    /// `@kopf.on.create`.
    Create,
    /// `@kopf.on.update`.
    Update,
    /// `@kopf.on.delete`.
    Delete,
    /// `@kopf.on.field`.
    Field,
    /// `@kopf.on.event`.
    Event,
    /// `@kopf.timer`.
    Timer,
    /// `@kopf.daemon`.
    Daemon,
    /// `@kopf.index`.
    Index,
    /// `@kopf.on.startup`.
    Startup,
    /// `@kopf.on.cleanup`.
    Cleanup,
    /// `@kopf.on.login`.
    Login,
    /// `@kopf.on.probe`.
    Probe,
    /// `@kopf.on.validate`.
    Validate,
    /// `@kopf.on.mutate`.
    Mutate,
}

impl HandlerKind {
    /// All kinds, in declaration order.
    pub const ALL: [HandlerKind; 15] = [
        Self::Resume,
        Self::Create,
        Self::Update,
        Self::Delete,
        Self::Field,
        Self::Event,
        Self::Timer,
        Self::Daemon,
        Self::Index,
        Self::Startup,
        Self::Cleanup,
        Self::Login,
        Self::Probe,
        Self::Validate,
        Self::Mutate,
    ];

    /// The kind's name as written in JSON and shown by `kopf inspect`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resume => "resume",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Field => "field",
            Self::Event => "event",
            Self::Timer => "timer",
            Self::Daemon => "daemon",
            Self::Index => "index",
            Self::Startup => "startup",
            Self::Cleanup => "cleanup",
            Self::Login => "login",
            Self::Probe => "probe",
            Self::Validate => "validate",
            Self::Mutate => "mutate",
        }
    }

    /// Operator-level ("activity") handlers have no resource selector.
    pub fn is_activity(self) -> bool {
        matches!(self, Self::Startup | Self::Cleanup | Self::Login | Self::Probe)
    }

    /// Resource-changing handlers: their progress is persisted on the object.
    pub fn is_changing(self) -> bool {
        matches!(
            self,
            Self::Resume | Self::Create | Self::Update | Self::Delete | Self::Field
        )
    }

    /// Admission webhook handlers.
    pub fn is_webhook(self) -> bool {
        matches!(self, Self::Validate | Self::Mutate)
    }
}

impl std::fmt::Display for HandlerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandlerSpec {
    /// The handler id: the persistence key (`kopf.zalando.org/<id>`) and the
    /// `status.<id>` result key. Field handlers carry the `/field.path` suffix already.
    pub id: String,
    /// Which decorator this is.
    pub kind: HandlerKind,
    /// Which resources it serves; `None` for activities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<ResourceSelector>,
    /// Whether the handler is an `async fn` (informational: `invoke` works for both).
    #[serde(default)]
    pub is_async: bool,
    /// Object filters.
    #[serde(default, skip_serializing_if = "Filters::is_empty")]
    pub filters: Filters,
    /// Behaviour options.
    #[serde(default, skip_serializing_if = "HandlerOptions::is_empty")]
    pub options: HandlerOptions,
}

/// A resource selector in any of Kopf's forms. Exactly one "name" field is expected
/// (`plural`, `kind`, `singular`, `shortcut`, `category`, `any_name`), or `everything`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceSelector {
    /// The API group (`""` for the core group); `None` for any group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The API version; `None` for the preferred version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The plural name, e.g. `kopfexamples`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plural: Option<String>,
    /// The kind, e.g. `KopfExample`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The singular name, e.g. `kopfexample`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singular: Option<String>,
    /// A short name, e.g. `kex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortcut: Option<String>,
    /// A category, e.g. `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// A bare name matching any of plural, singular, kind or short names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_name: Option<String>,
    /// Kopf's `EVERYTHING` marker: all resources except events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub everything: bool,
    /// Kopf's callable selector: the plugin decides per discovered resource (any version
    /// unless `version` is given; never events), asked with [`Purpose::Filter`], the
    /// resource in `resource` and `extra.select_resource: true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub callable: bool,
}

/// A filter on one value (a label, an annotation, a field): Kopf's literal value,
/// `PRESENT`, `ABSENT`, or a callback evaluated by the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterValue {
    /// The value must equal this (labels and annotations: a string).
    Equals(Value),
    /// The key or field must be present.
    Present,
    /// The key or field must be absent.
    Absent,
    /// A callback inside the plugin decides; the host asks with
    /// [`Purpose::Filter`].
    Callback,
}

/// The object filters of a handler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    /// Label filters by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, FilterValue>,
    /// Annotation filters by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, FilterValue>,
    /// The dotted field path (`spec.field`) of field handlers and `field=` filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Filter on the field's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<FilterValue>,
    /// Filter on the field's old value (update and field handlers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<FilterValue>,
    /// Filter on the field's new value (update and field handlers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<FilterValue>,
    /// Whether a `when=` callback exists (evaluated by the plugin).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub when: bool,
}

impl Filters {
    /// True when no filter is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// True when any filter needs a callback into the plugin.
    pub fn has_callbacks(&self) -> bool {
        let cb = |v: &FilterValue| matches!(v, FilterValue::Callback);
        self.when
            || self.labels.values().any(cb)
            || self.annotations.values().any(cb)
            || [&self.value, &self.old, &self.new].into_iter().flatten().any(cb)
    }
}

/// How arbitrary (non-kopf) errors of a handler are treated: Kopf's `ErrorsMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorsMode {
    /// Retry after the backoff.
    Temporary,
    /// Fail the handler for this cause.
    Permanent,
    /// Log and treat as done.
    Ignored,
}

/// Behaviour options of a handler. Unset options take Kopf's defaults in the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandlerOptions {
    /// Treatment of arbitrary errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorsMode>,
    /// Seconds since the first attempt before the handler fails permanently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Attempts before the handler fails permanently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Seconds to wait after an arbitrary error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<f64>,
    /// A value handed back to the handler as `param`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<Value>,
    /// Delete handlers: optional ones need no finalizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Resume handlers: also run for objects being deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// Timers: seconds between ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<f64>,
    /// Timers and daemons: seconds before the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<f64>,
    /// Timers: run only after the object has been unchanged this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<f64>,
    /// Timers: align ticks to the interval grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharp: Option<bool>,
    /// Daemons: seconds to wait after signalling stop before cancelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_backoff: Option<f64>,
    /// Daemons: seconds to wait after cancelling before abandoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_timeout: Option<f64>,
    /// Daemons: seconds between checks whether a stopping daemon has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_polling: Option<f64>,
    /// Webhooks: `CREATE`, `UPDATE`, `DELETE`, `CONNECT`; `None` for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<String>>,
    /// Webhooks: the subresource (`None` = main body only, `"*"` = all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    /// Webhooks: keep the webhook configuration on exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    /// Webhooks: the handler has side effects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_effects: Option<bool>,
    /// Webhooks: failures allow the request (`failurePolicy: Ignore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_failures: Option<bool>,
    /// Event handlers: the kinds of owned children (by `ownerReferences`) whose changes
    /// also run the handler for their owner (kube-rs's `Controller::owns`). Hosts that
    /// predate it ignore it: the handler then runs for the owner's own events only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owns: Option<Vec<ResourceSelector>>,
}

impl HandlerOptions {
    /// True when no option is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Why the host is calling the plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Run the handler.
    #[default]
    Handle,
    /// Evaluate the handler's callback filters only; the outcome's `matches` answers.
    Filter,
}

/// What the host sends to [`crate::PluginModule::invoke`] and `submit`: Kopf's
/// handler kwargs, as JSON. Fields that do not apply to a handler kind are omitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// Run the handler, or evaluate its filters.
    #[serde(default)]
    pub purpose: Purpose,
    /// The object body (resource handlers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The served resource (resource handlers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// `create`, `update`, `delete` or `resume` (changing handlers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The raw watch event type (`ADDED`, `MODIFIED`, `DELETED`; `None` for a listing).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The diff as Kopf's `DiffItem` tuples: `[operation, [path...], old, new]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Value>,
    /// The old essence or field value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// The new essence or field value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
    /// 0-based attempt number.
    #[serde(default)]
    pub retry: u32,
    /// RFC 3339 time of the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Seconds since `started`.
    #[serde(default)]
    pub runtime: f64,
    /// The handler's `param` option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<Value>,
    /// Activities: `startup`, `cleanup`, `authentication` or `probe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    /// Operator settings (startup handlers may change them and return them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
    /// Admission request details (webhook handlers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionInfo>,
    /// The call id of a submitted call (daemons, timers), for host calls about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<u64>,
    /// Extra, kind-specific data; room to grow without a schema change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Value>,
    /// Changing handlers: what the host knows of the handler's sub-handlers of any depth
    /// from earlier cycles, by full id (`parent/child`, `parent/child/grandchild`).
    /// Sub-handlers absent here are new (due now).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subhandlers: BTreeMap<String, SubhandlerState>,
    /// The `context` of the [`crate::HostTable`] of the operator making this call: every
    /// host call made for this call (logs, events, index lookups, daemon flags, submitted
    /// calls' completion) passes it back, so that two operators in one process that share
    /// one plugin image each get their own calls back. The plugin host writes it as the
    /// payload's first member ([`with_host_context`]), where the plugin finds it without
    /// decoding the rest ([`peek_host_context`]); callers leave it `None`. Hosts before it
    /// send none: the plugin then uses the table `init` gave it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_context: Option<u64>,
}

/// The name of [`Invocation::host_context`] on the wire.
pub const HOST_CONTEXT_FIELD: &str = "host_context";

/// Puts `"host_context": context` first into an encoded JSON object that has no such
/// member; `None` if `payload` is not an encoded object.
pub fn with_host_context(payload: &str, context: u64) -> Option<String> {
    let inner = payload.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out = String::with_capacity(payload.len() + 32);
    out.push_str("{\"");
    out.push_str(HOST_CONTEXT_FIELD);
    out.push_str("\":");
    out.push_str(&context.to_string());
    if !inner.trim().is_empty() {
        out.push(',');
        out.push_str(inner);
    }
    out.push('}');
    Some(out)
}

/// The [`Invocation::host_context`] of an encoded invocation whose first member it is (as
/// [`with_host_context`] writes it), without decoding the rest; `None` otherwise.
pub fn peek_host_context(payload: &str) -> Option<u64> {
    let rest = payload.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix('"')?.strip_prefix(HOST_CONTEXT_FIELD)?;
    let rest = rest
        .strip_prefix('"')?
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let after = rest[digits..].trim_start();
    if !(after.starts_with(',') || after.starts_with('}')) {
        return None;
    }
    rest[..digits].parse().ok()
}

/// The persisted progress of one sub-handler, as the host hands it to the plugin so that
/// finished children are not re-run and retried ones get their `retry`/`runtime`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubhandlerState {
    /// Attempts so far (the child's 0-based `retry` of its next attempt).
    #[serde(default)]
    pub retry: u32,
    /// RFC 3339 time of the child's first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Seconds since `started`.
    #[serde(default)]
    pub runtime: f64,
    /// Finished for good (succeeded or failed): never run again for this cause.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
    /// Delayed into the future (a retry not due yet): not run in this cycle.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sleeping: bool,
}

impl SubhandlerState {
    /// Due to run now: neither finished nor sleeping.
    pub fn is_due(&self) -> bool {
        !self.finished && !self.sleeping
    }
}

/// What one sub-handler registered during a parent handler's call did (Kopf's
/// `@kopf.subhandler`/`kopf.register`): reported in [`Outcome::children`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubhandlerOutcome {
    /// The full id, `parent/child` (the persistence key and the `status` result key).
    pub id: String,
    /// The sub-handler's options (errors, timeout, retries, backoff, param).
    #[serde(default, skip_serializing_if = "HandlerOptions::is_empty")]
    pub options: HandlerOptions,
    /// Whether the sub-handler was called in this invocation (false when it was not due,
    /// or when its timeout or retries were already exhausted).
    #[serde(default)]
    pub invoked: bool,
    /// Its result (delivered into `status["parent/child"]`); absent for `None`/`()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The merge patch it asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
    /// Its error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<HandlerError>,
    /// The sub-handlers this sub-handler registered in turn (Kopf's sub-sub-handlers, ids
    /// `parent/child/grandchild`), in registration order, with what each did. Hosts
    /// before it ignore the field; plugins before it never send it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<SubhandlerOutcome>,
}

/// The resource being served, as discovered by the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceInfo {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Plural name.
    #[serde(default)]
    pub plural: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// Whether it is namespaced.
    #[serde(default)]
    pub namespaced: bool,
}

/// Admission review details handed to validate and mutate handlers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdmissionInfo {
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    #[serde(default)]
    pub operation: String,
    /// The subresource, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    /// Whether this is a dry run.
    #[serde(default)]
    pub dryrun: bool,
    /// The requesting user, as sent by the API server.
    #[serde(default)]
    pub userinfo: Value,
    /// HTTP request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The client certificate's fields, or empty.
    #[serde(default)]
    pub sslpeer: Value,
    /// Whether the host applies a mutating handler's body functions (`patch.fns`) to its
    /// response; hosts that predate it do not send it, and the SDK then drops them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub applies_patch_fns: bool,
}

/// What a handler call returns, as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The handler's result (delivered into `status.<id>`); absent for `None`/`()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// A merge patch the handler asked for (`patch.spec[...] = ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
    /// The handler's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<HandlerError>,
    /// For [`Purpose::Filter`]: whether the callback filters match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<bool>,
    /// Admission warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Extra, kind-specific data (sub-handler outcomes, adjusted settings, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Value>,
    /// Changing handlers: the sub-handlers the handler registered, in registration order,
    /// with what each did in this call. Empty when it registered none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<SubhandlerOutcome>,
    /// Kopf's `patch.fns`: body transformations the handler (and its sub-handlers) asked
    /// for, in order, as tokens of functions the plugin keeps. The host applies them to
    /// the freshest body with the control method [`control_methods::PATCH_FNS`] and sends
    /// the difference as a JSON patch; it releases them when done. Hosts before it ignore
    /// the field (the functions are then never applied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patch_fns: Vec<u64>,
}

/// Kinds of handler errors, as in Kopf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandlerErrorKind {
    /// `kopf::TemporaryError`: retry after `delay`.
    Temporary,
    /// `kopf::PermanentError`: fail for this cause, no retries.
    Permanent,
    /// Any other error or a panic: treated per the handler's errors mode.
    Arbitrary,
    /// `kopf::AdmissionError`: deny an admission request with `code`.
    Admission,
}

/// A handler's error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandlerError {
    /// The kind of error.
    pub kind: HandlerErrorKind,
    /// The error text.
    #[serde(default)]
    pub message: String,
    /// Seconds before a retry (temporary errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<f64>,
    /// HTTP code (admission errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// True when the error came from a panic inside the handler.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub panicked: bool,
}

/// The JSON configuration handed to [`crate::PluginModule::init`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InitConfig {
    /// The host's `kopf` version.
    #[serde(default)]
    pub host_version: String,
    /// The most verbose log level the host will print (a [`crate::LogLevel`] value), so
    /// the plugin can skip formatting lines nobody reads.
    #[serde(default)]
    pub max_log_level: u8,
    /// Extra settings; room to grow.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Value>,
}

/// Method names of [`crate::HostTable::call`] known to this revision.
pub mod host_methods {
    /// Post a Kubernetes Event for an object: payload
    /// `{"object": <ref or body>, "type": "Normal", "reason": "...", "message": "..."}`.
    pub const EVENT_POST: &str = "event.post";
    /// Look up an index: payload `{"index": "name", "key": <value>}`.
    pub const INDEX_GET: &str = "index.get";
    /// The whole index, for Kopf's mapping API: payload `{"index": "name"}`, answer
    /// `[[key, [value, ...]], ...]` (every key with the values stored under it).
    pub const INDEX_ITEMS: &str = "index.items";
    /// Whether a daemon was asked to stop: payload `{"call_id": n}`, answer
    /// `{"stopped": bool, "reason": "..."}`.
    pub const DAEMON_STOPPED: &str = "daemon.stopped";
    /// Block until a daemon is asked to stop or `timeout` seconds pass: payload
    /// `{"call_id": n, "timeout": f64|null}`, answer as for [`DAEMON_STOPPED`].
    pub const DAEMON_WAIT: &str = "daemon.wait";
    /// The freshest body of a running daemon's or timer's object (Kopf's live `body`):
    /// payload `{"call_id": n}`, answer `{"body": {...}}`. Hosts before it answer
    /// "unsupported"; the SDK then keeps the body the call started with.
    pub const DAEMON_BODY: &str = "daemon.body";
    /// The operator's connection info for the plugin's own Kubernetes client.
    pub const CLIENT_CONFIG: &str = "client.config";
}

/// Method names of [`crate::PluginModule::control`] known to this revision.
pub mod control_methods {
    /// Liveness check: any payload, answer `{"ok": true}`.
    pub const PING: &str = "ping";
    /// Per-object memos inside the plugin: payload `{"op": "forget", "uid": "..."}` (the
    /// object is gone; answer `{"forgotten": bool}`) or `{"op": "stats"}` (answer
    /// `{"objects": n}`). Plugins without memo support answer "unsupported".
    pub const MEMO: &str = "memo";
    /// Kopf's `patch.fns` (see [`super::Outcome::patch_fns`]): payload
    /// `{"op": "apply", "fns": [token, ...], "body": {...}}` answers `{"body": {...}}`, the
    /// body after the functions, in order (an unknown token or a failing function is an
    /// error); `{"op": "release", "fns": [token, ...]}` forgets them (answer
    /// `{"released": n}`). Plugins before it answer "unsupported".
    pub const PATCH_FNS: &str = "patch.fns";
    /// The SDK's pool for sync handlers: any payload; answer `{"threads", "busy",
    /// "queued", "max_threads", "saturations", "object_calls"}` (counts; `object_calls`:
    /// handler calls about objects still running, abandoned ones included). Older
    /// plugins answer "unsupported".
    pub const POOL: &str = "pool";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_context_goes_first_and_is_read_back_without_decoding() {
        let inv = Invocation {
            retry: 2,
            body: Some(serde_json::json!({"metadata": {"name": "n"}})),
            ..Invocation::default()
        };
        let encoded = serde_json::to_string(&inv).unwrap();
        let payload = with_host_context(&encoded, 17).unwrap();
        assert!(payload.starts_with(r#"{"host_context":17,"#), "{payload}");
        assert_eq!(peek_host_context(&payload), Some(17));
        let decoded: Invocation = serde_json::from_str(&payload).unwrap();
        assert_eq!(decoded.host_context, Some(17));
        assert_eq!(decoded.retry, 2);
        assert_eq!(
            with_host_context("{}", 0).as_deref(),
            Some(r#"{"host_context":0}"#)
        );
        assert_eq!(peek_host_context(r#"{"host_context":0}"#), Some(0));
        assert_eq!(with_host_context("[]", 1), None);
    }

    #[test]
    fn payloads_of_older_hosts_have_no_host_context() {
        assert_eq!(peek_host_context(r#"{"retry":0}"#), None);
        assert_eq!(peek_host_context(r#"{"body":{"host_context":3}}"#), None);
        assert_eq!(peek_host_context(r#"{"host_context":"3"}"#), None);
        assert_eq!(peek_host_context(r#"{"host_context":3.5}"#), None);
        assert_eq!(
            peek_host_context(r#"{"host_context":99999999999999999999999}"#),
            None
        );
        assert_eq!(peek_host_context(""), None);
        assert_eq!(
            peek_host_context(r#" { "host_context" : 4 , "retry":0}"#),
            Some(4)
        );
    }
}
