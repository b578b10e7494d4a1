//! # kopf: Kubernetes operator handlers in Rust, Kopf-style
//!
//! Write handlers as plain functions with attributes, build your crate as a `cdylib`,
//! and run it with the `kopf` binary (`kopf run target/debug/libmy_operator.so`).
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! kopf = "0.1"
//! serde_json = "1"
//! ```
//!
//! ```no_run
//! use serde_json::{Value, json};
//!
//! #[derive(serde::Deserialize)]
//! struct Spec {
//!     field: String,
//! }
//!
//! /// Runs once per new object; the result lands in `status.create_fn`.
//! #[kopf::on::create("kopf.dev", "v1", "kopfexamples", retries = 3, backoff = 5.0)]
//! fn create_fn(ctx: &kopf::Context) -> kopf::Result<Value> {
//!     let spec: Spec = ctx.spec_as()?;
//!     tracing::info!("creating with field={}", spec.field); // logged as [ns/name]
//!     ctx.info("Created", "the object was seen");           // a Kubernetes Event
//!     ctx.patch().status()["seen"] = json!(true);           // a merge patch
//!     if spec.field.is_empty() {
//!         return Err(kopf::TemporaryError::new("field not set yet").delay(10.0).into());
//!     }
//!     Ok(json!({"message": format!("hello {}", spec.field)}))
//! }
//!
//! /// Async handlers run on the plugin's own tokio runtime.
//! #[kopf::on::update("kopfexamples", field = "spec.field", old = kopf::PRESENT)]
//! async fn field_changed(ctx: &kopf::Context) -> kopf::Result<()> {
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//!     ctx.logger().info(format_args!("{:?} -> {:?}", ctx.old(), ctx.new()));
//!     Ok(())
//! }
//!
//! #[kopf::timer("kopfexamples", interval = 60.0, labels = {"app": "demo", "tier": kopf::PRESENT})]
//! fn tick(ctx: &kopf::Context) {
//!     tracing::debug!("tick for {}", ctx.object_ref());
//! }
//!
//! #[kopf::on::startup]
//! fn started() -> kopf::Result<()> {
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! That is the whole plugin: with the default `export` feature the SDK exports the ABI's
//! root module itself, so no other line is needed.
//!
//! ## Handler functions
//!
//! * **Parameters**: none, or one `ctx: &kopf::Context` (shared reference, for sync and
//!   async handlers alike). The context gives Kopf's kwargs as methods: [`Context::body`],
//!   [`Context::spec`], [`Context::meta`], [`Context::status`], [`Context::name`],
//!   [`Context::namespace`], [`Context::uid`], [`Context::labels`],
//!   [`Context::annotations`], [`Context::patch`] (with Kopf's `patch.fns`:
//!   [`patch_fns`]), [`Context::logger`],
//!   [`Context::retry`], [`Context::started`], [`Context::runtime`], [`Context::diff`],
//!   [`Context::old`], [`Context::new`], [`Context::reason`], [`Context::param`],
//!   [`Context::spec_as`], [`Context::stopped`], [`Context::index`], webhook details
//!   ([`Context::operation`], [`Context::dryrun`], [`Context::userinfo`],
//!   [`Context::headers`], [`Context::add_warning`]...), events
//!   ([`Context::info`], [`Context::warn`], [`Context::exception`]; about other objects:
//!   [`info`], [`warn`], [`exception`], [`event`]), and the in-memory [`Context::memo`]
//!   (see the [`memo`] module); sub-handlers of any depth ([`Context::register`],
//!   [`Context::execute`], [`Context::execute_fns`]: the [`subhandlers`] and [`fns`](mod@fns)
//!   modules).
//! * **Return types**: `Result<T, E>` with `T: Serialize` (`()`, `serde_json::Value` or your
//!   own struct; `null` means "no result") and `E: Into<kopf::Error>` (any
//!   `std::error::Error`, or [`TemporaryError`], [`PermanentError`], [`AdmissionError`]);
//!   or any plain `T: Serialize`, or nothing. A return type is treated as a `Result` when
//!   its last path segment is named `Result`.
//! * **sync or async**: sync handlers run on the SDK's thread pool (sync daemons on threads
//!   of their own); `async fn` handlers run on the plugin's own multi-thread tokio runtime
//!   (a plugin's tokio is separate from the host's). An async handler's first poll runs on
//!   the operator's calling thread, so one that never waits completes without a hand-off
//!   between threads; whatever waits goes on on the runtime. As in Kopf, where async
//!   handlers share the operator's event loop, do not compute for long (or block) in an
//!   `async fn` before its first `.await`: use a sync handler for that.
//! * **Panics** never cross into the host: a panicking handler yields an arbitrary error
//!   with `panicked: true`, treated per the `errors` mode.
//!
//! ## The attributes
//!
//! `kopf::on::{resume, create, update, delete, field, event, startup, cleanup, login,
//! probe, validate, mutate, timer, daemon, index}`, plus `kopf::timer`, `kopf::daemon` and
//! `kopf::index` as in Kopf. Arguments mirror Kopf's decorators:
//!
//! * positional resource selector, by Kopf's rules (see [`parse_selector`]):
//!   `("kopf.dev", "v1", "kopfexamples")`, `("kopf.dev/v1", "kopfexamples")`,
//!   `("v1", "pods")`, `("kopf.dev", "kopfexamples")`, `("kopfexamples.kopf.dev")`,
//!   `("kopfexamples.v1.kopf.dev")`, `("kopfexamples")`, `(kopf::EVERYTHING)`; or keywords
//!   `group =`, `version =`, `kind =`, `plural =`, `singular =`, `shortcut =`, `category =`;
//! * `id = "..."` (default: the function's name; field handlers get `/spec.field` appended),
//!   `param = <any Serialize>`, `errors = kopf::Errors::Permanent`, `timeout = 60.0`,
//!   `retries = 3`, `backoff = 1.0`;
//! * filters: `labels = {"app": "x", "env": kopf::PRESENT, "old": kopf::ABSENT, "tier":
//!   tier_fn}`, `annotations = {...}`, `field = "spec.x"`, `value = ...`, `old = ...`,
//!   `new = ...`, `when = when_fn`. Callbacks are functions `fn(Option<&str>, &Context) ->
//!   bool` (labels, annotations), `fn(Option<&serde_json::Value>, &Context) -> bool`
//!   (value, old, new) or `fn(&Context) -> bool` (when); the host asks the plugin to
//!   evaluate them with [`Purpose::Filter`] and reads `Outcome.matches`. Label and
//!   annotation callbacks get the object's value of that key, `value` callbacks the
//!   body's value at `field`, `old`/`new` callbacks the invocation's `old`/`new` as the
//!   host sent them (field values for handlers with a `field`, as in Kopf);
//! * kind-specific: `optional` (delete), `deleted` (resume), `interval`, `idle`, `sharp`,
//!   `initial_delay` (timer), `initial_delay` (seconds or `fn(&Context) -> f64`), `cancellation_backoff`,
//!   `cancellation_timeout`, `cancellation_polling` (daemon), `operations = ["CREATE"]`,
//!   `subresource`, `persistent`, `side_effects`, `ignore_failures` (validate, mutate).
//!
//! Options that Kopf does not accept for a handler kind are compile errors, and so are
//! `retries`, `timeout` and `backoff` on `#[kopf::index]` (Kopf accepts them; this
//! operator does not retry failed indexers, so it refuses them rather than ignore them).
//! The compile-fail tests in `plugin-sdk/tests/compile_fail/` show each case.
//!
//! Attributes stack on one function, as Kopf's decorators do (`@kopf.on.resume` +
//! `@kopf.on.create`):
//!
//! ```no_run
//! #[kopf::on::resume("kopfexamples")]
//! #[kopf::on::create("kopfexamples")]
//! #[kopf::on::update("kopfexamples")]
//! fn reconcile(ctx: &kopf::Context) {
//!     tracing::info!("reconciling for {:?}", ctx.reason());
//! }
//! # fn main() {}
//! ```
//!
//! All of them get the function's id (`reconcile`), so, as in Kopf, they share one progress
//! record and one `status.reconcile` result, and the function runs once per cause even when
//! several of them match it (a resumed object that was changed while the operator was
//! down runs it once, as an update). Sharing an id is for changing handlers (resume,
//! create, update, delete, field) on one function, and at most one of the stacked
//! attributes may have callback filters (the operator asks a plugin for filters by id);
//! otherwise, and for different functions, handler ids must be unique within a plugin and
//! `describe` fails with a clear "duplicate handler id" error.
//!
//! ## Without macros
//!
//! [`HandlerBuilder`] and [`Registry`] do the same by hand; register such handlers in a
//! plugin with [`setup!`].
//!
//! ## Children and the Kubernetes API
//!
//! The [`hierarchies`] toolkit (Kopf's `kopf.adopt`, `kopf.label`, `kopf.harmonize_naming`,
//! `kopf.adjust_namespace`, owner references) makes child objects belong to the handled
//! object. With the cargo feature `client`, [`Context::client`] gives a `kube::Client` with
//! the operator's credentials (see the `client` module); sync handlers run async calls
//! with [`block_on`].
//!
//! ## Logging
//!
//! `tracing` events inside handlers reach the host's log with the object's
//! `[namespace/name]` prefix; [`Context::logger`] does the same explicitly.
//!
//! ## Testing
//!
//! Unit tests call handler functions directly with a context from
//! [`testing::ContextBuilder`] (no cluster, no `kopf` binary) and check the result, the
//! patch and [`testing::posted_events`]. End-to-end tests run the plugin with the real
//! `kopf` binary against an emulated cluster: `kopf_testing::KopfRunner` in the
//! `kopf-testing` crate. See `docs/testing.md`.
#![deny(missing_docs)]
#![deny(unsafe_code)]

extern crate self as kopf;

#[cfg(feature = "client")]
pub mod client;
mod connection;
mod context;
mod error;
pub mod events;
mod export;
pub mod fns;
mod handler;
pub mod hierarchies;
mod host;
pub mod index;
mod logging;
pub mod memo;
pub mod patch_fns;
mod pool;
mod runtime;
mod selector;
pub mod subhandlers;
pub mod testing;
mod typed;

pub use connection::ConnectionInfo;
pub use context::{
    Context, DaemonStopped, DiffItem, DiffOperation, OwnedChild, Patch, PatchGuard, SETTINGS_KEY,
    SettingsGuard, StopState,
};
pub use error::{
    AdmissionError, DEFAULT_TEMPORARY_DELAY, Error, HostCallError, InvokeError, PermanentError, Result,
    SdkError, TemporaryError,
};
pub use events::{event, exception, info, warn};
pub use export::{IN_PROCESS_KEY, plugin_module};
pub use fns::{Fns, fns};
pub use handler::{
    DelayCallback, Handler, HandlerBuilder, HandlerResult, InitialDelay, IntoInitialDelay, IntoMetaFilter,
    IntoValueFilter, MetaCallback, MetaFilter, OwnedKinds, Registry, ResourceCallback, ValueCallback,
    ValueFilter, WhenCallback, handlers, to_result_value,
};
pub use hierarchies::{
    AdoptOptions, HierarchyError, Owner, adjust_namespace, adopt, adopt_with, append_owner_reference,
    append_owner_reference_with, build_object_reference, build_owner_reference, build_owner_reference_with,
    harmonize_naming, label, remove_owner_reference,
};
pub use host::{call as host_call, is_initialised, with_operator};
pub use index::{IndexRef, IndexSnapshot, Store};
pub use kopf_abi::protocol::{
    ErrorsMode, ErrorsMode as Errors, HandlerKind, Invocation, Outcome, Purpose, ResourceInfo,
};
pub use logging::{OBJECT_SPAN, OBJECTS_TARGET, ObjectLogger};
pub use memo::{Memo, MemoError, operator_memo};
pub use patch_fns::PatchFns;
pub use runtime::{block_on, runtime};
pub use selector::{ABSENT, EVERYTHING, Marker, PRESENT, SelectorArg, SelectorKeywords, parse_selector};
pub use subhandlers::{ChildrenPending, SubhandlerBuilder, SubhandlerError};
pub use typed::TypedResource;

pub use kopf_abi;
pub use kopf_macros::{daemon, index, timer};
pub use serde_json;
pub use tokio;
pub use tracing;
#[cfg(feature = "client")]
pub use {k8s_openapi, kube};

/// The SDK's version, reported in the plugin description.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The handler attributes, named after Kopf's `kopf.on.*` decorators.
pub mod on {
    pub use kopf_macros::{
        cleanup, create, daemon, delete, event, field, index, login, mutate, probe, resume, startup, timer,
        update, validate,
    };
}

/// Registers a setup function `fn(&mut kopf::Registry) -> Result<(), kopf::SdkError>` that
/// adds handlers built by hand with [`HandlerBuilder`]; it runs when the plugin is first
/// described, after the attribute-declared handlers are collected.
///
/// ```
/// fn setup(registry: &mut kopf::Registry) -> Result<(), kopf::SdkError> {
///     let h = kopf::HandlerBuilder::new(kopf::HandlerKind::Probe, "healthy")
///         .sync_fn(|_: &kopf::Context| -> kopf::Result<_> { Ok(true) })
///         .build()?;
///     registry.add(h)?;
///     Ok(())
/// }
/// kopf::setup!(setup);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! setup {
    ($f:path) => {
        $crate::__private::inventory::submit! {
            $crate::__private::Setup {
                plugin: $crate::__private::PluginMeta {
                    name: ::core::env!("CARGO_PKG_NAME"),
                    version: ::core::env!("CARGO_PKG_VERSION"),
                },
                file: ::core::file!(),
                line: ::core::line!(),
                setup: $f,
            }
        }
    };
}

/// Exports the plugin's root module by hand. Needed only when the SDK's default `export`
/// feature is off (and then the plugin crate must depend on `abi_stable` too); with the
/// feature on it expands to nothing.
#[cfg(feature = "export")]
#[macro_export]
macro_rules! plugin {
    () => {};
}

/// Exports the plugin's root module by hand. Needed only when the SDK's default `export`
/// feature is off (and then the plugin crate must depend on `abi_stable` too); with the
/// feature on it expands to nothing.
#[cfg(not(feature = "export"))]
#[macro_export]
macro_rules! plugin {
    () => {
        $crate::kopf_abi::export_plugin_module!($crate::plugin_module());
    };
}

/// Support code for the macros; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;

    use crate::{Error, HandlerBuilder, Registry, SdkError};

    /// The crate a registration came from.
    #[derive(Debug, Clone, Copy)]
    pub struct PluginMeta {
        /// `CARGO_PKG_NAME`.
        pub name: &'static str,
        /// `CARGO_PKG_VERSION`.
        pub version: &'static str,
    }

    /// One attribute-declared handler.
    pub struct Registration {
        /// The declaring crate.
        pub plugin: PluginMeta,
        /// Source file, for ordering.
        pub file: &'static str,
        /// Source line, for ordering.
        pub line: u32,
        /// Builds the handler.
        pub build: fn() -> HandlerBuilder,
        /// The annotated function (path and source position): attributes stacked on one
        /// function may share its default id, as in Kopf.
        pub function: &'static str,
    }

    /// One [`crate::setup!`] function.
    pub struct Setup {
        /// The declaring crate.
        pub plugin: PluginMeta,
        /// Source file, for ordering.
        pub file: &'static str,
        /// Source line, for ordering.
        pub line: u32,
        /// Adds handlers.
        pub setup: fn(&mut Registry) -> Result<(), SdkError>,
    }

    inventory::collect!(Registration);
    inventory::collect!(Setup);

    /// Converts a handler's `Result` return value.
    pub fn result_outcome<T: serde::Serialize, E: Into<Error>>(r: Result<T, E>) -> Result<T, Error> {
        r.map_err(Into::into)
    }

    /// Converts a handler's plain return value.
    pub fn value_outcome<T: serde::Serialize>(v: T) -> Result<T, Error> {
        Ok(v)
    }
}
