//! Handlers, their builder, filters, and the registry: the API without macros.
//!
//! ```
//! use kopf::{HandlerBuilder, HandlerKind, Registry};
//!
//! let mut registry = Registry::new();
//! let handler = HandlerBuilder::new(HandlerKind::Create, "create_fn")
//!     .resource(["kopf.dev", "v1", "kopfexamples"])
//!     .label("app", kopf::PRESENT)
//!     .retries(3)
//!     .sync_fn(|ctx: &kopf::Context| -> kopf::Result<_> {
//!         Ok(serde_json::json!({"name": ctx.name()}))
//!     })
//!     .build()
//!     .unwrap();
//! registry.add(handler).unwrap();
//! assert_eq!(registry.describe().handlers[0].id, "create_fn");
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use futures::FutureExt as _;
use kopf_abi::protocol::{
    ErrorsMode, FilterValue, Filters, HandlerError, HandlerErrorKind, HandlerKind, HandlerOptions,
    HandlerSpec, Invocation, Outcome, PluginDescription, PluginInfo, Purpose, ResourceInfo, ResourceSelector,
};
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument as _;

use crate::context::{self, Context, resolve_path};
use crate::error::{Error, InvokeError, SdkError};
use crate::runtime::{self, QuietPanics, panic_message};
use crate::selector::{Marker, SelectorArg, SelectorKeywords, parse_selector};
use crate::subhandlers;

/// What a handler function produces once converted: the JSON result (if any) or an error.
pub type HandlerResult = Result<Option<Value>, Error>;

type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;
type SyncFn = Arc<dyn Fn(&Context) -> HandlerResult + Send + Sync>;
type AsyncFn = Arc<dyn Fn(Context) -> BoxFuture + Send + Sync>;

/// A label or annotation callback: `fn(value, ctx) -> bool` (value `None` when absent).
pub type MetaCallback = Arc<dyn Fn(Option<&str>, &Context) -> bool + Send + Sync>;
/// A field value callback: `fn(value, ctx) -> bool` (value `None` when absent).
pub type ValueCallback = Arc<dyn Fn(Option<&Value>, &Context) -> bool + Send + Sync>;
/// A `when=` callback: `fn(ctx) -> bool`.
pub type WhenCallback = Arc<dyn Fn(&Context) -> bool + Send + Sync>;
/// A callable resource selector (Kopf's `fn(resource) -> bool`): asked per discovered
/// resource whether the handler serves it.
pub type ResourceCallback = Arc<dyn Fn(&ResourceInfo) -> bool + Send + Sync>;
/// A daemon's callable `initial_delay`: `fn(ctx) -> seconds`.
pub type DelayCallback = Arc<dyn Fn(&Context) -> f64 + Send + Sync>;

/// Kopf's `initial_delay`: seconds, or (daemons) a callable `fn(&Context) -> f64` asked
/// when the daemon starts.
pub enum InitialDelay {
    /// A fixed delay (the host waits).
    Seconds(f64),
    /// Computed per object when its daemon starts (the plugin waits).
    Callback(DelayCallback),
}

/// What `initial_delay = ...` accepts: seconds, or a function of the context.
pub trait IntoInitialDelay {
    /// Converts.
    fn into_initial_delay(self) -> InitialDelay;
}

impl IntoInitialDelay for f64 {
    fn into_initial_delay(self) -> InitialDelay {
        InitialDelay::Seconds(self)
    }
}

impl<F> IntoInitialDelay for F
where
    F: Fn(&Context) -> f64 + Send + Sync + 'static,
{
    fn into_initial_delay(self) -> InitialDelay {
        InitialDelay::Callback(Arc::new(self))
    }
}

/// Converts a serialisable handler return value into the JSON result (`null` → none).
pub fn to_result_value<T: Serialize>(value: T) -> HandlerResult {
    match serde_json::to_value(value) {
        Ok(Value::Null) => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(Error::msg(format!("cannot serialise the handler's result: {e}"))),
    }
}

/// A label or annotation filter value: Kopf's literal, `PRESENT`, `ABSENT`, or a callback.
#[derive(Clone)]
pub enum MetaFilter {
    /// The value must equal this.
    Equals(String),
    /// The key must be present.
    Present,
    /// The key must be absent.
    Absent,
    /// The callback decides.
    Callback(MetaCallback),
}

/// Things usable as a label or annotation filter: `&str`, `String`, [`crate::PRESENT`],
/// [`crate::ABSENT`], or a function `fn(Option<&str>, &Context) -> bool`.
pub trait IntoMetaFilter {
    /// Converts; a marker that makes no sense here is an error.
    fn into_meta_filter(self) -> Result<MetaFilter, String>;
}

impl IntoMetaFilter for MetaFilter {
    fn into_meta_filter(self) -> Result<MetaFilter, String> {
        Ok(self)
    }
}

impl IntoMetaFilter for &str {
    fn into_meta_filter(self) -> Result<MetaFilter, String> {
        Ok(MetaFilter::Equals(self.to_owned()))
    }
}

impl IntoMetaFilter for String {
    fn into_meta_filter(self) -> Result<MetaFilter, String> {
        Ok(MetaFilter::Equals(self))
    }
}

impl IntoMetaFilter for Marker {
    fn into_meta_filter(self) -> Result<MetaFilter, String> {
        if self.is_present() {
            Ok(MetaFilter::Present)
        } else if self.is_absent() {
            Ok(MetaFilter::Absent)
        } else {
            Err("EVERYTHING is not a filter value; use PRESENT or ABSENT".to_owned())
        }
    }
}

impl<F> IntoMetaFilter for F
where
    F: Fn(Option<&str>, &Context) -> bool + Send + Sync + 'static,
{
    fn into_meta_filter(self) -> Result<MetaFilter, String> {
        Ok(MetaFilter::Callback(Arc::new(self)))
    }
}

/// A field value filter: a literal JSON value, `PRESENT`, `ABSENT`, or a callback.
#[derive(Clone)]
pub enum ValueFilter {
    /// The value must equal this.
    Equals(Value),
    /// The field must be present.
    Present,
    /// The field must be absent.
    Absent,
    /// The callback decides.
    Callback(ValueCallback),
}

/// Things usable as a `value=`, `old=` or `new=` filter: literals (strings, numbers,
/// booleans, `serde_json::Value`), [`crate::PRESENT`], [`crate::ABSENT`], or a function
/// `fn(Option<&serde_json::Value>, &Context) -> bool`.
pub trait IntoValueFilter {
    /// Converts; a marker that makes no sense here is an error.
    fn into_value_filter(self) -> Result<ValueFilter, String>;
}

impl IntoValueFilter for ValueFilter {
    fn into_value_filter(self) -> Result<ValueFilter, String> {
        Ok(self)
    }
}

impl IntoValueFilter for Marker {
    fn into_value_filter(self) -> Result<ValueFilter, String> {
        if self.is_present() {
            Ok(ValueFilter::Present)
        } else if self.is_absent() {
            Ok(ValueFilter::Absent)
        } else {
            Err("EVERYTHING is not a filter value; use PRESENT or ABSENT".to_owned())
        }
    }
}

macro_rules! literal_value_filters {
    ($($t:ty),*) => {$(
        impl IntoValueFilter for $t {
            fn into_value_filter(self) -> Result<ValueFilter, String> {
                Ok(ValueFilter::Equals(Value::from(self)))
            }
        }
    )*};
}
literal_value_filters!(&str, String, bool, i32, i64, u32, u64, f64, Value);

impl<F> IntoValueFilter for F
where
    F: Fn(Option<&Value>, &Context) -> bool + Send + Sync + 'static,
{
    fn into_value_filter(self) -> Result<ValueFilter, String> {
        Ok(ValueFilter::Callback(Arc::new(self)))
    }
}

#[derive(Clone)]
enum Func {
    Sync(SyncFn),
    Async(AsyncFn),
}

#[derive(Clone, Default)]
struct Callbacks {
    labels: Vec<(String, MetaCallback)>,
    annotations: Vec<(String, MetaCallback)>,
    value: Option<ValueCallback>,
    old: Option<ValueCallback>,
    new: Option<ValueCallback>,
    when: Option<WhenCallback>,
    /// Not a filter: a daemon's callable `initial_delay`.
    initial_delay: Option<DelayCallback>,
    /// Not a filter: a callable resource selector.
    resource: Option<ResourceCallback>,
}

impl Callbacks {
    fn is_empty(&self) -> bool {
        self.labels.is_empty()
            && self.annotations.is_empty()
            && self.value.is_none()
            && self.old.is_none()
            && self.new.is_none()
            && self.when.is_none()
    }
}

/// Builds one handler; the macros generate calls to it. Invalid options are collected
/// and reported together by [`HandlerBuilder::build`].
#[must_use]
pub struct HandlerBuilder {
    kind: HandlerKind,
    id: String,
    args: Vec<SelectorArg>,
    keywords: SelectorKeywords,
    filters: Filters,
    options: HandlerOptions,
    callbacks: Callbacks,
    func: Option<Func>,
    problems: Vec<String>,
    crd: Option<Value>,
    owns: Vec<String>,
}

impl fmt::Debug for HandlerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerBuilder")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .finish()
    }
}

macro_rules! option_setters {
    ($($(#[$doc:meta])* $name:ident: $t:ty => $conv:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: impl Into<$t>) -> Self {
            let conv: fn($t) -> _ = $conv;
            self.options.$name = Some(conv(value.into()));
            self
        }
    )*};
}

macro_rules! selector_setters {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: impl Into<String>) -> Self {
            self.keywords.$name = Some(value.into());
            self
        }
    )*};
}

impl HandlerBuilder {
    /// A handler of this kind with this id (before any field suffix).
    pub fn new(kind: HandlerKind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
            args: Vec::new(),
            keywords: SelectorKeywords::default(),
            filters: Filters::default(),
            options: HandlerOptions::default(),
            callbacks: Callbacks::default(),
            func: None,
            problems: Vec::new(),
            crd: None,
            owns: Vec::new(),
        }
    }

    /// Selects the resource of a Rust type deriving kube's `CustomResource` (group,
    /// version and plural from the type; `#[kopf::on::create(MyCr)]`), and carries the
    /// type's CRD in the plugin's description for `kopf crd`. Needs the `typed` feature.
    pub fn custom_resource<T: crate::TypedResource>(mut self) -> Self {
        self.args = T::selector().into_iter().map(SelectorArg::from).collect();
        match T::crd() {
            Ok(crd) => self.crd = Some(crd),
            Err(error) => self
                .problems
                .push(format!("the CRD of the type cannot be serialised: {error}")),
        }
        self
    }

    /// The positional resource selector arguments, as in Kopf's decorators:
    /// `["kopf.dev", "v1", "kopfexamples"]`, `["v1", "pods"]`, `["kopfexamples"]`...
    pub fn resource<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<SelectorArg>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Event handlers: also run for an owner when an owned child of these kinds changes
    /// (`owns = "pods"`, `owns = ["pods", "v1/configmaps"]`: each a selector as one string,
    /// `group/version/plural` or a Kopf name); the child is in [`crate::Context::owned`].
    pub fn owns(mut self, kinds: impl OwnedKinds) -> Self {
        self.owns.extend(kinds.into_kinds());
        self
    }

    /// A callable resource selector (Kopf's): `f` decides for each discovered resource
    /// (any version unless `version` is given; never events) whether the handler serves
    /// it; `group`/`version` keywords narrow the candidates.
    pub fn resource_fn(mut self, f: impl Fn(&ResourceInfo) -> bool + Send + Sync + 'static) -> Self {
        self.args.clear();
        self.callbacks.resource = Some(Arc::new(f));
        self
    }

    /// Selects every resource except events (`kopf::EVERYTHING`).
    pub fn everything(mut self) -> Self {
        self.args = vec![SelectorArg::Marker(crate::EVERYTHING)];
        self
    }

    selector_setters! {
        /// The API group (`""` for core).
        group;
        /// The API version.
        version;
        /// Select by kind, e.g. `KopfExample`.
        kind;
        /// Select by plural name.
        plural;
        /// Select by singular name.
        singular;
        /// Select by short name.
        shortcut;
        /// Select by category, e.g. `all`.
        category;
    }

    /// Overrides the handler id (Kopf's `id=`); a field handler still gets the
    /// `/field.path` suffix.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The treatment of arbitrary errors (Kopf's `errors=`).
    pub fn errors(mut self, mode: ErrorsMode) -> Self {
        self.options.errors = Some(mode);
        self
    }

    /// Attempts before the handler fails permanently.
    pub fn retries(mut self, retries: u32) -> Self {
        self.options.retries = Some(retries);
        self
    }

    /// A value handed back to the handler as `ctx.param()`.
    pub fn param(mut self, value: impl Serialize) -> Self {
        match serde_json::to_value(value) {
            Ok(v) => self.options.param = Some(v),
            Err(e) => self.problems.push(format!("param cannot be serialised: {e}")),
        }
        self
    }

    option_setters! {
        /// Seconds since the first attempt before the handler fails permanently.
        timeout: f64 => |v| v;
        /// Seconds to wait after an arbitrary error.
        backoff: f64 => |v| v;
        /// Delete handlers: optional ones need no finalizer.
        optional: bool => |v| v;
        /// Resume handlers: also run for objects being deleted.
        deleted: bool => |v| v;
        /// Timers: seconds between ticks.
        interval: f64 => |v| v;
        /// Timers: run only after the object has been unchanged this long.
        idle: f64 => |v| v;
        /// Timers: align ticks to the interval grid.
        sharp: bool => |v| v;
        /// Daemons: seconds to wait after signalling stop before cancelling.
        cancellation_backoff: f64 => |v| v;
        /// Daemons: seconds to wait after cancelling before abandoning.
        cancellation_timeout: f64 => |v| v;
        /// Daemons: seconds between checks whether a stopping daemon has exited.
        cancellation_polling: f64 => |v| v;
        /// Webhooks: the subresource (`"*"` for all).
        subresource: String => |v| v;
        /// Webhooks: keep the webhook configuration on exit.
        persistent: bool => |v| v;
        /// Webhooks: the handler has side effects.
        side_effects: bool => |v| v;
        /// Webhooks: failures allow the request.
        ignore_failures: bool => |v| v;
    }

    /// Timers and daemons: seconds before the first run; daemons also take a function of
    /// the context returning the seconds (Kopf's callable `initial_delay`), asked when the
    /// daemon starts (not on its retries); a stop during the delay ends it unrun.
    pub fn initial_delay(mut self, delay: impl IntoInitialDelay) -> Self {
        match delay.into_initial_delay() {
            InitialDelay::Seconds(seconds) => self.options.initial_delay = Some(seconds),
            InitialDelay::Callback(_) if self.kind != HandlerKind::Daemon => self
                .problems
                .push("a callable initial_delay is for daemons only (as in Kopf)".to_owned()),
            InitialDelay::Callback(f) => self.callbacks.initial_delay = Some(f),
        }
        self
    }

    /// Webhooks: the operations (`CREATE`, `UPDATE`, `DELETE`, `CONNECT`).
    pub fn operations<I>(mut self, ops: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.options.operations = Some(ops.into_iter().map(Into::into).collect());
        self
    }

    /// A label filter (`labels={"key": value}` in Kopf).
    pub fn label(mut self, key: impl Into<String>, filter: impl IntoMetaFilter) -> Self {
        let key = key.into();
        match filter.into_meta_filter() {
            Ok(f) => {
                let v = meta_to_wire(&f);
                if let MetaFilter::Callback(cb) = f {
                    self.callbacks.labels.push((key.clone(), cb));
                }
                self.filters.labels.insert(key, v);
            }
            Err(e) => self.problems.push(format!("label {key:?}: {e}")),
        }
        self
    }

    /// An annotation filter (`annotations={"key": value}` in Kopf).
    pub fn annotation(mut self, key: impl Into<String>, filter: impl IntoMetaFilter) -> Self {
        let key = key.into();
        match filter.into_meta_filter() {
            Ok(f) => {
                let v = meta_to_wire(&f);
                if let MetaFilter::Callback(cb) = f {
                    self.callbacks.annotations.push((key.clone(), cb));
                }
                self.filters.annotations.insert(key, v);
            }
            Err(e) => self.problems.push(format!("annotation {key:?}: {e}")),
        }
        self
    }

    /// The dotted field path (`spec.field`): the field of a field handler, or the field of
    /// the `value`/`old`/`new` filters. Appended to the id as `id/spec.field`.
    pub fn field(mut self, path: impl Into<String>) -> Self {
        self.filters.field = Some(path.into());
        self
    }

    /// A filter on the field's value.
    pub fn value(mut self, filter: impl IntoValueFilter) -> Self {
        match filter.into_value_filter() {
            Ok(f) => self.filters.value = Some(value_to_wire(f, &mut self.callbacks.value)),
            Err(e) => self.problems.push(format!("value: {e}")),
        }
        self
    }

    /// A filter on the field's old value (update and field handlers).
    pub fn old(mut self, filter: impl IntoValueFilter) -> Self {
        match filter.into_value_filter() {
            Ok(f) => self.filters.old = Some(value_to_wire(f, &mut self.callbacks.old)),
            Err(e) => self.problems.push(format!("old: {e}")),
        }
        self
    }

    /// A filter on the field's new value (update and field handlers).
    pub fn new_value(mut self, filter: impl IntoValueFilter) -> Self {
        match filter.into_value_filter() {
            Ok(f) => self.filters.new = Some(value_to_wire(f, &mut self.callbacks.new)),
            Err(e) => self.problems.push(format!("new: {e}")),
        }
        self
    }

    /// A `when=` callback: the handler runs only if it returns true.
    pub fn when<F>(mut self, f: F) -> Self
    where
        F: Fn(&Context) -> bool + Send + Sync + 'static,
    {
        self.filters.when = true;
        self.callbacks.when = Some(Arc::new(f));
        self
    }

    /// The handler function, synchronous: it runs on the host's calling thread (or on the
    /// plugin's threads for submitted calls).
    pub fn sync_fn<F, T, E>(mut self, f: F) -> Self
    where
        F: Fn(&Context) -> Result<T, E> + Send + Sync + 'static,
        T: Serialize,
        E: Into<Error>,
    {
        self.func = Some(Func::Sync(Arc::new(move |ctx: &Context| match f(ctx) {
            Ok(v) => to_result_value(v),
            Err(e) => Err(e.into()),
        })));
        self
    }

    /// The handler function, asynchronous: it gets a clone of the context (clones share
    /// the patch) and runs on the plugin's own tokio runtime.
    pub fn async_fn<F, Fut, T, E>(mut self, f: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Serialize,
        E: Into<Error>,
    {
        self.func = Some(Func::Async(Arc::new(move |ctx: Context| {
            let fut = f(ctx);
            Box::pin(async move {
                match fut.await {
                    Ok(v) => to_result_value(v),
                    Err(e) => Err(e.into()),
                }
            })
        })));
        self
    }

    /// Validates everything and builds the handler.
    pub fn build(self) -> Result<Handler, SdkError> {
        let HandlerBuilder {
            kind,
            mut id,
            args,
            keywords,
            filters,
            options,
            callbacks,
            func,
            mut problems,
            crd,
            owns,
        } = self;
        let option_err = |id: &str, reason: String| SdkError::Option {
            handler: id.to_owned(),
            reason,
        };
        if id.is_empty() {
            problems.push("the handler id is empty".to_owned());
        }

        let selector = if kind.is_activity() {
            if !args.is_empty() || !keywords.is_empty() {
                problems.push(format!("{kind} handlers take no resource selector"));
            }
            if !filters.is_empty() {
                problems.push(format!("{kind} handlers take no object filters"));
            }
            None
        } else if callbacks.resource.is_some() {
            Some(callable_selector(kind, &args, &keywords, &mut problems))
        } else {
            match parse_selector(&args, &keywords) {
                Ok(s) => Some(s),
                Err(reason) => return Err(SdkError::Selector { handler: id, reason }),
            }
        };

        if kind == HandlerKind::Field && filters.field.is_none() {
            problems.push("field handlers need `field`".to_owned());
        }
        if filters.field.as_deref() == Some("") {
            problems.push("the field path is empty".to_owned());
        }
        let has_value_filters = filters.value.is_some() || filters.old.is_some() || filters.new.is_some();
        if has_value_filters && filters.field.is_none() {
            problems.push("value/old/new filters need `field`".to_owned());
        }
        if filters.value.is_some() && (filters.old.is_some() || filters.new.is_some()) {
            problems.push("`value` cannot be combined with `old`/`new`".to_owned());
        }
        if (filters.old.is_some() || filters.new.is_some())
            && !matches!(kind, HandlerKind::Update | HandlerKind::Field)
        {
            problems.push(format!(
                "`old`/`new` filters are only for update and field handlers, not {kind}"
            ));
        }
        if kind == HandlerKind::Index
            && (options.retries.is_some() || options.timeout.is_some() || options.backoff.is_some())
        {
            problems.push(
                "index handlers are not retried: `retries`, `timeout` and `backoff` are not supported"
                    .to_owned(),
            );
        }
        let mut options = options;
        options.owns = owned_selectors(kind, &owns, &mut problems);
        if let Some(p) = problems.first() {
            return Err(option_err(&id, p.clone()));
        }
        let Some(func) = func else {
            return Err(SdkError::NoFunction(id));
        };

        if let Some(field) = &filters.field
            && kind != HandlerKind::Index
            && !kind.is_activity()
        {
            id = format!("{id}/{field}");
        }
        let spec = HandlerSpec {
            id,
            kind,
            selector,
            is_async: matches!(func, Func::Async(_)),
            filters,
            options,
        };
        Ok(Handler {
            spec,
            func,
            callbacks,
            function: None,
            crd,
        })
    }
}

/// A callable selector's wire form: the group and version keywords narrow it; no name.
fn callable_selector(
    kind: HandlerKind,
    args: &[SelectorArg],
    keywords: &SelectorKeywords,
    problems: &mut Vec<String>,
) -> ResourceSelector {
    if !args.is_empty() {
        problems.push("a callable resource selector is the only positional argument".to_owned());
    }
    if kind.is_webhook() {
        problems.push("webhook handlers take no callable resource selector".to_owned());
    }
    let named = [
        &keywords.kind,
        &keywords.plural,
        &keywords.singular,
        &keywords.shortcut,
        &keywords.category,
    ];
    if named.iter().any(|n| n.is_some()) {
        problems.push("a callable resource selector takes no resource name besides it".to_owned());
    }
    ResourceSelector {
        group: keywords.group.clone(),
        version: keywords.version.clone(),
        callable: true,
        ..ResourceSelector::default()
    }
}

/// The kinds an `owns` option names: one string or several.
pub trait OwnedKinds {
    /// The kinds, each a selector in one string.
    fn into_kinds(self) -> Vec<String>;
}

impl OwnedKinds for &str {
    fn into_kinds(self) -> Vec<String> {
        vec![self.to_owned()]
    }
}

impl OwnedKinds for String {
    fn into_kinds(self) -> Vec<String> {
        vec![self]
    }
}

impl<const N: usize> OwnedKinds for [&str; N] {
    fn into_kinds(self) -> Vec<String> {
        self.iter().map(|s| (*s).to_owned()).collect()
    }
}

impl OwnedKinds for &[&str] {
    fn into_kinds(self) -> Vec<String> {
        self.iter().map(|s| (*s).to_owned()).collect()
    }
}

impl OwnedKinds for Vec<String> {
    fn into_kinds(self) -> Vec<String> {
        self
    }
}

/// Parses `owns` kinds into selectors: `plural`, `plural.group`, `version/plural` or
/// `group/version/plural`, as a positional selector would be.
fn owned_selectors(
    kind: HandlerKind,
    owns: &[String],
    problems: &mut Vec<String>,
) -> Option<Vec<ResourceSelector>> {
    if owns.is_empty() {
        return None;
    }
    if kind != HandlerKind::Event {
        problems.push(format!("`owns` is only for event handlers, not {kind}"));
        return None;
    }
    let mut selectors = Vec::new();
    for owned in owns {
        let args: Vec<SelectorArg> = match owned.rsplit_once('/') {
            Some((head, name)) => vec![head.into(), name.into()],
            None => vec![owned.as_str().into()],
        };
        match parse_selector(&args, &SelectorKeywords::default()) {
            Ok(selector) => selectors.push(selector),
            Err(reason) => problems.push(format!("`owns` kind {owned:?}: {reason}")),
        }
    }
    Some(selectors)
}

fn meta_to_wire(f: &MetaFilter) -> FilterValue {
    match f {
        MetaFilter::Equals(s) => FilterValue::Equals(Value::String(s.clone())),
        MetaFilter::Present => FilterValue::Present,
        MetaFilter::Absent => FilterValue::Absent,
        MetaFilter::Callback(_) => FilterValue::Callback,
    }
}

fn value_to_wire(f: ValueFilter, slot: &mut Option<ValueCallback>) -> FilterValue {
    match f {
        ValueFilter::Equals(v) => FilterValue::Equals(v),
        ValueFilter::Present => FilterValue::Present,
        ValueFilter::Absent => FilterValue::Absent,
        ValueFilter::Callback(cb) => {
            *slot = Some(cb);
            FilterValue::Callback
        }
    }
}

/// A built handler: its description and its function.
#[derive(Clone)]
pub struct Handler {
    spec: HandlerSpec,
    func: Func,
    callbacks: Callbacks,
    /// The annotated function of an attribute-declared handler (see [`Registry::collect`]).
    function: Option<&'static str>,
    /// The CRD of the type it selects by (see [`HandlerBuilder::custom_resource`]).
    crd: Option<Value>,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler").field("spec", &self.spec).finish()
    }
}

fn panicked(message: String) -> HandlerError {
    HandlerError {
        kind: HandlerErrorKind::Arbitrary,
        message,
        delay: None,
        code: None,
        panicked: true,
    }
}

fn object_span(ctx: &Context) -> tracing::Span {
    let object = ctx.object_ref();
    if object.is_empty() {
        tracing::Span::none()
    } else {
        // The name must stay equal to `logging::OBJECT_SPAN`.
        tracing::error_span!(target: "kopf", "kopf.object", object = object.as_str())
    }
}

fn into_outcome(result: std::thread::Result<HandlerResult>, ctx: &Context) -> Outcome {
    let mut outcome = Outcome::default();
    match result {
        Ok(Ok(value)) => {
            outcome.result = value;
            subhandlers::finish(ctx, &mut outcome, None);
        }
        Ok(Err(error)) => {
            outcome.error = Some(error.to_handler_error());
            subhandlers::finish(ctx, &mut outcome, Some(&error));
        }
        Err(payload) => {
            outcome.error = Some(panicked(panic_message(payload.as_ref())));
            subhandlers::finish(ctx, &mut outcome, Some(&Error::msg("panicked")));
        }
    }
    context::finish(ctx, &mut outcome);
    outcome
}

impl Handler {
    /// The handler's description, as sent to the host.
    pub fn spec(&self) -> &HandlerSpec {
        &self.spec
    }

    /// The handler id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// Whether the function is `async`.
    pub fn is_async(&self) -> bool {
        matches!(self.func, Func::Async(_))
    }

    /// Evaluates the callback filters (labels, annotations, value/old/new, when) for
    /// [`Purpose::Filter`]. Literal and PRESENT/ABSENT filters are the host's business.
    /// `old=`/`new=` belong to a cause: without one (the host's pre-match, which decides
    /// the finalizer) they are not asked, as in Kopf's `prematch`.
    pub fn matches(&self, ctx: &Context) -> bool {
        let for_cause = ctx.reason().is_some();
        let cb = &self.callbacks;
        let labels = ctx.labels();
        let annotations = ctx.annotations();
        let field_value = self
            .spec
            .filters
            .field
            .as_deref()
            .and_then(|f| resolve_path(ctx.body(), f));
        cb.labels
            .iter()
            .all(|(k, f)| f(labels.get(k).map(String::as_str), ctx))
            && cb
                .annotations
                .iter()
                .all(|(k, f)| f(annotations.get(k).map(String::as_str), ctx))
            && cb.value.as_ref().is_none_or(|f| f(field_value, ctx))
            && (!for_cause || cb.old.as_ref().is_none_or(|f| f(ctx.old(), ctx)))
            && (!for_cause || cb.new.as_ref().is_none_or(|f| f(ctx.new(), ctx)))
            && cb.when.as_ref().is_none_or(|f| f(ctx))
    }

    fn filter_outcome(&self, ctx: &Context) -> Outcome {
        let _quiet = QuietPanics::enter();
        let selecting = ctx.extra("select_resource") == Some(&Value::Bool(true));
        let decide = || match (&self.callbacks.resource, ctx.resource()) {
            (Some(select), Some(resource)) if selecting => select(resource),
            // Asked to select without a callable or a resource: no (fail closed).
            _ if selecting => false,
            _ => self.matches(ctx),
        };
        match catch_unwind(AssertUnwindSafe(decide)) {
            Ok(m) => Outcome {
                matches: Some(m),
                ..Outcome::default()
            },
            Err(p) => Outcome {
                matches: Some(false),
                error: Some(panicked(panic_message(p.as_ref()))),
                ..Outcome::default()
            },
        }
    }

    /// Runs the handler (or its filters) and blocks until done. Async handlers run on the
    /// plugin's runtime. Panics become an arbitrary error with `panicked: true`.
    pub fn run(&self, invocation: Invocation) -> Outcome {
        let ctx = Context::from_invocation(self.spec.id.clone(), invocation);
        if ctx.purpose() == Purpose::Filter {
            return self.filter_outcome(&ctx);
        }
        if let Some(delay) = self.start_delay(&ctx)
            && ctx.stopped().wait(Some(delay))
        {
            return Outcome::default();
        }
        let span = object_span(&ctx);
        let result = match &self.func {
            Func::Sync(f) => {
                let _quiet = QuietPanics::enter();
                let _entered = span.enter();
                catch_unwind(AssertUnwindSafe(|| f(&ctx)))
            }
            Func::Async(f) => match runtime::runtime() {
                Err(e) => Ok(Err(Error::msg(e))),
                Ok(rt) => {
                    let (tx, rx) = std::sync::mpsc::channel();
                    let f = Arc::clone(f);
                    let task_ctx = ctx.clone();
                    rt.spawn(crate::host::with_operator(
                        async move {
                            let result = AssertUnwindSafe(async move { f(task_ctx).await })
                                .catch_unwind()
                                .await;
                            let _ = tx.send(result);
                        }
                        .instrument(span),
                    ));
                    rx.recv()
                        .unwrap_or_else(|_| Ok(Err(Error::msg("the plugin runtime shut down"))))
                }
            },
        };
        into_outcome(result, &ctx)
    }

    /// A daemon's callable `initial_delay`, before its first attempt: the seconds it
    /// returns (a panic, a negative or non-finite number: no delay, logged).
    fn start_delay(&self, ctx: &Context) -> Option<std::time::Duration> {
        let f = self
            .callbacks
            .initial_delay
            .as_ref()
            .filter(|_| ctx.retry() == 0)?;
        let seconds = {
            let _quiet = QuietPanics::enter();
            catch_unwind(AssertUnwindSafe(|| f(ctx)))
        };
        match seconds {
            Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
                Some(std::time::Duration::from_secs_f64(seconds))
            }
            Ok(seconds) => {
                tracing::error!(
                    "The initial_delay of {:?} returned {seconds}: starting at once.",
                    self.spec.id
                );
                None
            }
            Err(_) => {
                tracing::error!(
                    "The initial_delay of {:?} panicked: starting at once.",
                    self.spec.id
                );
                None
            }
        }
    }

    /// Runs the handler (or its filters) on the plugin's runtime: async handlers are
    /// awaited, sync ones run on the blocking pool. Must be awaited inside that runtime.
    pub async fn run_async(&self, invocation: Invocation) -> Outcome {
        let ctx = Context::from_invocation(self.spec.id.clone(), invocation);
        let span = object_span(&ctx);
        if ctx.purpose() == Purpose::Filter {
            let this = self.clone();
            let fctx = ctx.clone();
            return crate::host::spawn_blocking(move || this.filter_outcome(&fctx))
                .await
                .unwrap_or_else(|e| Outcome {
                    error: Some(panicked(e.to_string())),
                    ..Outcome::default()
                });
        }
        if let Some(delay) = self.start_delay(&ctx)
            && ctx.stopped().wait_async(Some(delay)).await
        {
            return Outcome::default();
        }
        let result = match &self.func {
            Func::Sync(f) => {
                let f = Arc::clone(f);
                let task_ctx = ctx.clone();
                crate::host::spawn_blocking(move || {
                    let _quiet = QuietPanics::enter();
                    let _entered = span.enter();
                    catch_unwind(AssertUnwindSafe(|| f(&task_ctx)))
                })
                .await
                .unwrap_or_else(|e| Ok(Err(Error::msg(e))))
            }
            Func::Async(f) => {
                let f = Arc::clone(f);
                let task_ctx = ctx.clone();
                AssertUnwindSafe(async move { f(task_ctx).await })
                    .catch_unwind()
                    .instrument(span)
                    .await
            }
        };
        if subhandlers::has_pending(&ctx) {
            // Sub-handlers are synchronous: run them off the runtime's workers.
            let task_ctx = ctx.clone();
            return crate::host::spawn_blocking(move || into_outcome(result, &task_ctx))
                .await
                .unwrap_or_else(|e| Outcome {
                    error: Some(panicked(e.to_string())),
                    ..Outcome::default()
                });
        }
        into_outcome(result, &ctx)
    }
}

/// A set of handlers: the plugin's (see [`handlers`]) or one assembled by hand.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    plugin: PluginInfo,
    handlers: Vec<Handler>,
    by_id: HashMap<String, usize>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the plugin's name and version for [`Registry::describe`].
    pub fn set_plugin_info(&mut self, name: impl Into<String>, version: impl Into<String>) -> &mut Self {
        self.plugin = PluginInfo {
            name: name.into(),
            version: version.into(),
        };
        self
    }

    /// Collects every handler declared with the attribute macros and every
    /// [`crate::setup!`] function linked into this binary, in source order.
    pub fn collect() -> Result<Self, SdkError> {
        let mut regs: Vec<&crate::__private::Registration> =
            inventory::iter::<crate::__private::Registration>().collect();
        regs.sort_by_key(|r| (r.file, r.line));
        let mut setups: Vec<&crate::__private::Setup> =
            inventory::iter::<crate::__private::Setup>().collect();
        setups.sort_by_key(|s| (s.file, s.line));
        let mut registry = Self::new();
        if let Some(meta) = regs
            .first()
            .map(|r| r.plugin)
            .or_else(|| setups.first().map(|s| s.plugin))
        {
            registry.set_plugin_info(meta.name, meta.version);
        }
        for r in regs {
            let mut handler = (r.build)().build()?;
            handler.function = Some(r.function);
            registry.add(handler)?;
        }
        for s in setups {
            (s.setup)(&mut registry)?;
        }
        Ok(registry)
    }

    /// Adds a handler; ids must be unique within a plugin, except for changing handlers
    /// declared by attributes stacked on one function (Kopf's `@on.resume` +
    /// `@on.create`), which share the function's id.
    pub fn add(&mut self, handler: Handler) -> Result<&mut Self, SdkError> {
        let index = self.handlers.len();
        if self.by_id.contains_key(handler.id()) {
            self.check_shared_id(&handler)?;
            // Filters are asked for by id: they go to the one handler with callbacks.
            if !handler.callbacks.is_empty() {
                self.by_id.insert(handler.id().to_owned(), index);
            }
        } else {
            self.by_id.insert(handler.id().to_owned(), index);
        }
        self.handlers.push(handler);
        Ok(self)
    }

    /// Whether `handler` may share its id with the handlers already added under it.
    fn check_shared_id(&self, handler: &Handler) -> Result<(), SdkError> {
        let id = handler.id();
        let shared = |reason: &str| SdkError::SharedId {
            id: id.to_owned(),
            reason: reason.to_owned(),
        };
        for other in self.handlers.iter().filter(|h| h.id() == id) {
            if handler.function.is_none() || handler.function != other.function {
                return Err(SdkError::DuplicateId {
                    id: id.to_owned(),
                    first: other.spec.kind.to_string(),
                    second: handler.spec.kind.to_string(),
                });
            }
            if !handler.spec.kind.is_changing() || !other.spec.kind.is_changing() {
                return Err(shared(
                    "only changing handlers (resume, create, update, delete, field) can share an id",
                ));
            }
            if handler.spec.kind == other.spec.kind && handler.spec.selector == other.spec.selector {
                return Err(shared(
                    "two attributes declare the same kind for the same resource",
                ));
            }
            if !handler.callbacks.is_empty() && !other.callbacks.is_empty() {
                return Err(shared(
                    "more than one of the attributes has callback filters (the operator asks for \
                     a handler's filters by its id)",
                ));
            }
        }
        Ok(())
    }

    /// All handlers, in registration order.
    pub fn handlers(&self) -> &[Handler] {
        &self.handlers
    }

    /// The handler with this id.
    pub fn get(&self, id: &str) -> Option<&Handler> {
        self.by_id.get(id).map(|&i| &self.handlers[i])
    }

    /// The description the host receives from `describe`.
    pub fn describe(&self) -> PluginDescription {
        PluginDescription {
            abi_revision: kopf_abi::ABI_REVISION,
            sdk_version: crate::SDK_VERSION.to_owned(),
            plugin: self.plugin.clone(),
            handlers: self.handlers.iter().map(|h| h.spec.clone()).collect(),
            crds: self.crds(),
        }
    }

    /// The CRDs of the types handlers select by, once each (by name), in handler order.
    fn crds(&self) -> Vec<Value> {
        let mut crds: Vec<Value> = Vec::new();
        for crd in self.handlers.iter().filter_map(|h| h.crd.as_ref()) {
            let name = |c: &Value| c.pointer("/metadata/name").cloned();
            if !crds.iter().any(|known| name(known) == name(crd)) {
                crds.push(crd.clone());
            }
        }
        crds
    }

    /// Runs a handler by id and blocks until done (see [`Handler::run`]).
    pub fn invoke(&self, id: &str, invocation: Invocation) -> Result<Outcome, InvokeError> {
        let handler = self
            .get(id)
            .ok_or_else(|| InvokeError::UnknownHandler(id.to_owned()))?;
        Ok(handler.run(invocation))
    }

    /// Counts handlers by kind (for summaries).
    pub fn kinds(&self) -> BTreeMap<HandlerKind, usize> {
        let mut m = BTreeMap::new();
        for h in &self.handlers {
            *m.entry(h.spec.kind).or_insert(0) += 1;
        }
        m
    }
}

/// The plugin's registry: every handler declared in this binary, collected once.
pub fn handlers() -> Result<&'static Registry, SdkError> {
    static REGISTRY: OnceLock<Result<Registry, SdkError>> = OnceLock::new();
    REGISTRY
        .get_or_init(Registry::collect)
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &Context) -> Result<(), Error> {
        Ok(())
    }

    fn yes(_: &Context) -> bool {
        true
    }

    /// A handler as an attribute on the function `function` would declare it.
    fn declared(
        kind: HandlerKind,
        function: &'static str,
        edit: fn(HandlerBuilder) -> HandlerBuilder,
    ) -> Handler {
        let builder = HandlerBuilder::new(kind, "reconcile")
            .resource(["kopfexamples"])
            .sync_fn(ok);
        let mut handler = edit(builder).build().unwrap();
        handler.function = Some(function);
        handler
    }

    fn same(b: HandlerBuilder) -> HandlerBuilder {
        b
    }

    #[test]
    fn a_callable_initial_delay_is_for_daemons_only() {
        let build = |kind| {
            HandlerBuilder::new(kind, "late")
                .resource(["kopfexamples"])
                .initial_delay(|_: &Context| 1.0)
                .sync_fn(ok)
                .build()
        };
        let daemon = build(HandlerKind::Daemon).unwrap();
        assert_eq!(
            daemon.spec.options.initial_delay, None,
            "the plugin waits, not the host"
        );
        let err = build(HandlerKind::Timer).unwrap_err().to_string();
        assert!(err.contains("daemons only"), "{err}");
    }

    #[test]
    fn stacked_changing_attributes_share_the_id() {
        let mut registry = Registry::new();
        registry.add(declared(HandlerKind::Resume, "f", same)).unwrap();
        registry.add(declared(HandlerKind::Create, "f", same)).unwrap();
        registry
            .add(declared(HandlerKind::Update, "f", |b| b.when(yes)))
            .unwrap();
        let kinds: Vec<HandlerKind> = registry.describe().handlers.iter().map(|h| h.kind).collect();
        assert_eq!(
            kinds,
            [HandlerKind::Resume, HandlerKind::Create, HandlerKind::Update]
        );
        // Filters are asked for by id: the one with callbacks answers.
        assert_eq!(
            registry.get("reconcile").map(|h| h.spec.kind),
            Some(HandlerKind::Update)
        );
    }

    #[test]
    fn sharing_an_id_is_refused_where_it_cannot_work() {
        let refused = |first: Handler, second: Handler| {
            let mut registry = Registry::new();
            registry.add(first).unwrap();
            registry.add(second).unwrap_err().to_string()
        };
        let err = refused(
            declared(HandlerKind::Create, "f", same),
            declared(HandlerKind::Resume, "g", same),
        );
        assert!(err.contains("duplicate handler id \"reconcile\""), "{err}");
        let err = refused(
            declared(HandlerKind::Create, "f", same),
            declared(HandlerKind::Event, "f", same),
        );
        assert!(err.contains("only changing handlers"), "{err}");
        let err = refused(
            declared(HandlerKind::Create, "f", same),
            declared(HandlerKind::Create, "f", same),
        );
        assert!(err.contains("the same kind for the same resource"), "{err}");
        let err = refused(
            declared(HandlerKind::Create, "f", |b| {
                b.label("app", |_: Option<&str>, _: &Context| true)
            }),
            declared(HandlerKind::Update, "f", |b| b.when(yes)),
        );
        assert!(err.contains("callback filters"), "{err}");
    }
}
