//! Sub-handlers: Kopf's `@kopf.subhandler`, `kopf.register()` and `kopf.execute()`.
//!
//! A changing handler (create, update, delete, resume, field) may register sub-handlers
//! while it runs, for example one per item of a list in the spec:
//!
//! ```
//! use serde_json::json;
//!
//! #[kopf::on::create("kopfexamples")]
//! fn create_fn(ctx: &kopf::Context) -> kopf::Result<()> {
//!     let items: Vec<String> = ctx.spec_as::<serde_json::Value>()?["items"]
//!         .as_array()
//!         .into_iter()
//!         .flatten()
//!         .filter_map(|v| v.as_str().map(str::to_owned))
//!         .collect();
//!     for item in items {
//!         ctx.register(format!("item-{item}"), move |_ctx: &kopf::Context| -> kopf::Result<_> {
//!             Ok(json!({"item": item}))
//!         })?;
//!     }
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! As in Kopf:
//!
//! - each sub-handler's id is `parent/child` (`create_fn/item-a`); its result goes into
//!   `status["create_fn/item-a"]`, and its progress is persisted under that id;
//! - sub-handlers run after the parent returns `Ok`, unless the parent runs them earlier
//!   with [`Context::execute`]; if the parent fails, the sub-handlers it registered after
//!   its last `execute()` do not run in that attempt;
//! - while any sub-handler is unfinished (for example retrying after a
//!   [`crate::TemporaryError`]), the parent is not finished either: it is called again in
//!   the next cycle and must register the same sub-handlers again. **The parent must be
//!   idempotent.** Sub-handlers that already finished are not called again;
//! - the parent finishes when all its sub-handlers have finished, successfully or not (a
//!   sub-handler's permanent failure is recorded on the sub-handler; the parent still
//!   succeeds, exactly as Kopf 1.45 does).
//!
//! Sub-handlers are closures, synchronous ([`SubhandlerBuilder::register`]) or `async`
//! ([`SubhandlerBuilder::register_async`]), with Kopf's options (errors, timeout, retries,
//! backoff, param) and a `when` filter ([`SubhandlerBuilder::when`]). All due sub-handlers
//! run in the same cycle, one after another (Kopf's default lifecycle runs one per cycle).
//! Label, annotation and field filters on sub-handlers are not supported (check them in
//! `when`).
//!
//! Sub-handlers may register sub-handlers in turn (Kopf's sub-sub-handlers), to any depth:
//! `create_fn/item-a/step-1`. A sub-handler is then finished only when all its own
//! sub-handlers are: until then it is called again in each cycle, as its parent is, and
//! its progress record keeps Kopf's `"message":"None"` and `subrefs`; the top parent's
//! `subrefs` lists the sub-handlers of all depths, as Kopf's does.
//!
//! Functions can also be run as sub-handlers on the spot, Kopf's
//! `await kopf.execute(fns=...)`: [`Context::execute_fns`] with [`crate::Fns`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use kopf_abi::protocol::{ErrorsMode, HandlerErrorKind, HandlerOptions, SubhandlerOutcome, SubhandlerState};
use serde::Serialize;

use crate::context::Context;
use crate::error::Error;
use crate::handler::{HandlerResult, to_result_value};
use crate::runtime::{QuietPanics, panic_message};

/// The default backoff of arbitrary errors when the sub-handler sets none (Kopf's
/// `settings.execution.default_backoff`; the host applies its own setting).
const DEFAULT_BACKOFF: f64 = 60.0;

pub(crate) type SubFn = Arc<dyn Fn(&Context) -> HandlerResult + Send + Sync>;
pub(crate) type WhenFn = Arc<dyn Fn(&Context) -> bool + Send + Sync>;

/// Why a sub-handler could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubhandlerError {
    /// The id is empty.
    #[error("a sub-handler id must not be empty")]
    EmptyId,
    /// The id was already registered by this parent in this call.
    #[error("the sub-handler id {0:?} is registered twice")]
    DuplicateId(String),
    /// Only changing handlers (create, update, delete, resume, field) have sub-handlers.
    #[error(
        "sub-handlers can be registered only by changing handlers (create, update, delete, resume, field)"
    )]
    NotChanging,
    /// A function given to [`crate::Fns::named`] has no name to make its id of (a
    /// closure): give it an id with [`crate::Fns::add`].
    #[error("{0} has no name to make a sub-handler id of: give it an id with `Fns::add`")]
    Unnamed(String),
}

/// Returned by [`Context::execute`] when some sub-handlers are not finished yet (Kopf's
/// internal `HandlerChildrenRetry`). Propagate it with `?`: the parent is then called
/// again in a later cycle, without logging an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildrenPending;

impl fmt::Display for ChildrenPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sub-handlers are not finished yet")
    }
}

impl std::error::Error for ChildrenPending {}

/// One registered sub-handler.
#[derive(Clone)]
pub(crate) struct Subhandler {
    /// The full id, `parent/child`.
    pub(crate) id: String,
    pub(crate) options: HandlerOptions,
    pub(crate) when: Option<WhenFn>,
    pub(crate) func: SubFn,
}

/// The sub-handlers of one handler call: registered, and already executed.
#[derive(Default)]
pub(crate) struct Children {
    pending: Vec<Subhandler>,
    ids: BTreeSet<String>,
    done: Vec<SubhandlerOutcome>,
}

impl Children {
    pub(crate) fn add(&mut self, sub: Subhandler) -> Result<(), SubhandlerError> {
        self.claim(&sub.id)?;
        self.pending.push(sub);
        Ok(())
    }

    /// Reserves a full id for this call: ids are unique among all sub-handlers of a call,
    /// registered or given to `execute_fns` (they share the object's progress records).
    pub(crate) fn claim(&mut self, id: &str) -> Result<(), SubhandlerError> {
        if !self.ids.insert(id.to_owned()) {
            return Err(SubhandlerError::DuplicateId(id.to_owned()));
        }
        Ok(())
    }

    pub(crate) fn take_pending(&mut self) -> Vec<Subhandler> {
        std::mem::take(&mut self.pending)
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub(crate) fn record(&mut self, outcome: SubhandlerOutcome) {
        self.done.push(outcome);
    }

    pub(crate) fn take_done(&mut self) -> Vec<SubhandlerOutcome> {
        std::mem::take(&mut self.done)
    }
}

/// A sub-handler with options, started by [`Context::subhandler`]; finish it with
/// [`SubhandlerBuilder::register`].
///
/// ```
/// # fn parent(ctx: &kopf::Context) -> kopf::Result<()> {
/// ctx.subhandler("item-a")
///     .retries(3)
///     .backoff(1.0)
///     .errors(kopf::Errors::Temporary)
///     .param("a")
///     .register(|ctx: &kopf::Context| -> kopf::Result<_> {
///         Ok(serde_json::json!({"param": ctx.param()}))
///     })?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a sub-handler is registered only by `.register(...)`"]
pub struct SubhandlerBuilder<'a> {
    ctx: &'a Context,
    id: String,
    options: HandlerOptions,
    when: Option<WhenFn>,
}

impl<'a> SubhandlerBuilder<'a> {
    pub(crate) fn new(ctx: &'a Context, id: String) -> Self {
        Self {
            ctx,
            id,
            options: HandlerOptions::default(),
            when: None,
        }
    }

    /// How arbitrary errors are treated (default: retried after the backoff).
    pub fn errors(mut self, mode: ErrorsMode) -> Self {
        self.options.errors = Some(mode);
        self
    }

    /// Seconds since the first attempt before the sub-handler fails permanently.
    pub fn timeout(mut self, secs: impl Into<f64>) -> Self {
        self.options.timeout = Some(secs.into());
        self
    }

    /// Attempts before the sub-handler fails permanently.
    pub fn retries(mut self, retries: u32) -> Self {
        self.options.retries = Some(retries);
        self
    }

    /// Seconds to wait after an arbitrary error.
    pub fn backoff(mut self, secs: impl Into<f64>) -> Self {
        self.options.backoff = Some(secs.into());
        self
    }

    /// A value handed to the sub-handler as [`Context::param`].
    pub fn param(mut self, value: impl Serialize) -> Self {
        self.options.param = serde_json::to_value(value).ok();
        self
    }

    /// A `when=` filter (Kopf's `when`): the sub-handler exists for this call only if it
    /// returns true (evaluated at execution, with the parent's context). A sub-handler
    /// filtered out is not called, has no record and is not waited for, as in Kopf.
    pub fn when<F>(mut self, f: F) -> Self
    where
        F: Fn(&Context) -> bool + Send + Sync + 'static,
    {
        self.when = Some(Arc::new(f));
        self
    }

    /// Registers an `async` sub-handler: `|ctx: kopf::Context| async move { ... }`. It
    /// runs to completion on the plugin's runtime while the parent waits (sub-handlers run
    /// one after another, as in Kopf).
    ///
    /// ```
    /// # fn parent(ctx: &kopf::Context) -> kopf::Result<()> {
    /// ctx.subhandler("wait").register_async(|_ctx: kopf::Context| async move {
    ///     kopf::tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    ///     Ok::<_, kopf::Error>("waited")
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn register_async<F, Fut, T, E>(self, f: F) -> Result<(), SubhandlerError>
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T, E>>,
        T: Serialize,
        E: Into<Error>,
    {
        let func: SubFn = Arc::new(
            move |ctx: &Context| match crate::runtime::block_on(f(ctx.clone())) {
                Ok(Ok(v)) => to_result_value(v),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(Error::msg(e)),
            },
        );
        self.ctx.add_subhandler(self.id, self.options, self.when, func)
    }

    /// Registers the sub-handler function (a synchronous closure).
    pub fn register<F, T, E>(self, f: F) -> Result<(), SubhandlerError>
    where
        F: Fn(&Context) -> Result<T, E> + Send + Sync + 'static,
        T: Serialize,
        E: Into<Error>,
    {
        self.ctx
            .add_subhandler(self.id, self.options, self.when, sync_fn(f))
    }
}

/// A synchronous sub-handler function, its result turned into the handler result.
pub(crate) fn sync_fn<F, T, E>(f: F) -> SubFn
where
    F: Fn(&Context) -> Result<T, E> + Send + Sync + 'static,
    T: Serialize,
    E: Into<Error>,
{
    Arc::new(move |ctx: &Context| match f(ctx) {
        Ok(v) => to_result_value(v),
        Err(e) => Err(e.into()),
    })
}

/// Whether a sub-handler is done for this cause, as the host will decide (the host has
/// the last word; this only tells [`Context::execute`] what to return). A sub-handler
/// that succeeded is done only when all its own sub-handlers are (Kopf's
/// `HandlerChildrenRetry` one level up).
fn is_final(outcome: &SubhandlerOutcome, states: &BTreeMap<String, SubhandlerState>) -> bool {
    let state = states.get(&outcome.id).cloned().unwrap_or_default();
    if !own_final(outcome, &state) {
        return false;
    }
    !outcome.invoked || outcome.error.is_some() || outcome.children.iter().all(|c| is_final(c, states))
}

/// The error kinds and options that make an attempt final, ignoring the sub-handler's own
/// sub-handlers.
fn own_final(outcome: &SubhandlerOutcome, state: &SubhandlerState) -> bool {
    let options = &outcome.options;
    if !outcome.invoked {
        return state.finished || exhausted(options, state);
    }
    let Some(error) = &outcome.error else {
        return true;
    };
    let delay = match error.kind {
        HandlerErrorKind::Permanent | HandlerErrorKind::Admission => return true,
        HandlerErrorKind::Temporary => error.delay.unwrap_or(0.0),
        HandlerErrorKind::Arbitrary => match options.errors.unwrap_or(ErrorsMode::Temporary) {
            ErrorsMode::Permanent | ErrorsMode::Ignored => return true,
            ErrorsMode::Temporary => options.backoff.unwrap_or(DEFAULT_BACKOFF),
        },
    };
    options.timeout.is_some_and(|t| state.runtime + delay >= t)
        || options.retries.is_some_and(|r| state.retry + 1 >= r)
}

/// Timeout or retries exhausted before the attempt (the host fails it without a call).
fn exhausted(options: &HandlerOptions, state: &SubhandlerState) -> bool {
    options.timeout.is_some_and(|t| state.runtime >= t) || options.retries.is_some_and(|r| state.retry >= r)
}

/// Runs the registered, not yet executed sub-handlers of `ctx` that are due; records
/// their outcomes in `ctx`. Returns whether all sub-handlers registered so far are final.
pub(crate) fn execute(ctx: &Context) -> bool {
    let subs = ctx.with_children(Children::take_pending);
    run(ctx, subs);
    let states = &ctx.invocation().subhandlers;
    ctx.with_children(|c| c.done.iter().all(|o| is_final(o, states)))
}

/// Runs `subs` as sub-handlers of `ctx` (those due; a `when` filter may drop one), records
/// their outcomes in `ctx`, and returns whether all of them are final.
pub(crate) fn run(ctx: &Context, subs: Vec<Subhandler>) -> bool {
    let mut all_final = true;
    for sub in subs {
        if let Some(outcome) = run_one(ctx, &sub) {
            all_final &= is_final(&outcome, &ctx.invocation().subhandlers);
            ctx.with_children(|c| c.record(outcome));
        }
    }
    all_final
}

/// One sub-handler: filtered, called if due, its own sub-handlers run after it (Kopf's
/// implicit execution); `None` when its `when` filter drops it.
fn run_one(ctx: &Context, sub: &Subhandler) -> Option<SubhandlerOutcome> {
    if let Some(when) = &sub.when {
        let _quiet = QuietPanics::enter();
        if !catch_unwind(AssertUnwindSafe(|| when(ctx))).unwrap_or(false) {
            return None;
        }
    }
    let state = ctx
        .invocation()
        .subhandlers
        .get(&sub.id)
        .cloned()
        .unwrap_or_default();
    let mut outcome = SubhandlerOutcome {
        id: sub.id.clone(),
        options: sub.options.clone(),
        ..Default::default()
    };
    if !state.is_due() || exhausted(&sub.options, &state) {
        return Some(outcome);
    }
    let child = ctx.child(&sub.id, &state, sub.options.param.clone());
    let result = {
        let _quiet = QuietPanics::enter();
        catch_unwind(AssertUnwindSafe(|| (sub.func)(&child)))
    };
    outcome.invoked = true;
    let failed = match result {
        Ok(Ok(value)) => {
            outcome.result = value;
            None
        }
        Ok(Err(error)) => Some(error),
        Err(payload) => {
            outcome.error = Some(kopf_abi::protocol::HandlerError {
                kind: HandlerErrorKind::Arbitrary,
                message: panic_message(payload.as_ref()),
                delay: None,
                code: None,
                panicked: true,
            });
            Some(Error::msg("panicked"))
        }
    };
    let (pending, children) = conclude(&child, failed.as_ref());
    if let Some(error) = failed.filter(|_| !pending && outcome.error.is_none()) {
        outcome.error = Some(error.to_handler_error());
    }
    outcome.children = children;
    let mut patch = child.take_patch();
    // Kopf's sub-handlers share the cause's patch: their transformations join the parent's.
    ctx.patch().fns().append(patch.fns());
    if !patch.is_empty() {
        outcome.patch = Some(patch.into_value());
    }
    Some(outcome)
}

/// After a handler or sub-handler function returned: runs the remaining sub-handlers if
/// it succeeded (Kopf's implicit execution). Returns whether its error is only
/// [`ChildrenPending`] (not a handler error: the host decides about it from its
/// children's outcomes), and the outcomes of its sub-handlers.
fn conclude(ctx: &Context, failed: Option<&Error>) -> (bool, Vec<SubhandlerOutcome>) {
    let pending = match failed {
        None => {
            execute(ctx);
            false
        }
        Some(error) => error.downcast_ref::<ChildrenPending>().is_some(),
    };
    (pending, ctx.with_children(Children::take_done))
}

/// Whether `ctx` has registered sub-handlers not executed yet.
pub(crate) fn has_pending(ctx: &Context) -> bool {
    ctx.with_children(|c| c.has_pending())
}

/// After the handler function returned: runs the remaining sub-handlers if it succeeded
/// (Kopf's implicit execution), drops the [`ChildrenPending`] error (the host decides
/// about the parent from the children's outcomes), and moves the outcomes into `outcome`.
pub(crate) fn finish(ctx: &Context, outcome: &mut kopf_abi::protocol::Outcome, failed: Option<&Error>) {
    let (pending, children) = conclude(ctx, failed);
    if pending {
        outcome.error = None;
    }
    outcome.children = children;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TemporaryError;
    use kopf_abi::protocol::Invocation;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn ctx(known: BTreeMap<String, SubhandlerState>) -> Context {
        Context::from_invocation(
            "create_fn",
            Invocation {
                reason: Some("create".into()),
                body: Some(json!({"spec": {"items": ["a", "b"]}})),
                subhandlers: known,
                ..Default::default()
            },
        )
    }

    #[test]
    fn children_run_with_full_ids_and_skip_finished_ones() {
        let mut known = BTreeMap::new();
        known.insert(
            "create_fn/a".to_owned(),
            SubhandlerState {
                finished: true,
                ..Default::default()
            },
        );
        known.insert(
            "create_fn/b".to_owned(),
            SubhandlerState {
                retry: 2,
                runtime: 3.0,
                ..Default::default()
            },
        );
        let c = ctx(known);
        for id in ["a", "b"] {
            c.register(id, |ctx: &Context| -> crate::Result<_> {
                ctx.patch().status()["seen"] = json!(ctx.handler_id());
                Ok(json!({"id": ctx.handler_id(), "retry": ctx.retry()}))
            })
            .unwrap();
        }
        assert!(execute(&c));
        let done = c.with_children(Children::take_done);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].id, "create_fn/a");
        assert!(!done[0].invoked, "a finished child is not called again");
        assert_eq!(done[1].id, "create_fn/b");
        assert!(done[1].invoked);
        assert_eq!(done[1].result, Some(json!({"id": "create_fn/b", "retry": 2})));
        assert_eq!(done[1].patch, Some(json!({"status": {"seen": "create_fn/b"}})));
    }

    #[test]
    fn pending_children_make_execute_report_and_errors_are_captured() {
        let c = ctx(BTreeMap::new());
        c.register("t", |_: &Context| -> crate::Result<()> {
            Err(TemporaryError::new("later").delay(5.0).into())
        })
        .unwrap();
        c.register("p", |_: &Context| -> crate::Result<()> { panic!("boom") })
            .unwrap();
        assert_eq!(c.execute(), Err(ChildrenPending));
        let done = c.with_children(Children::take_done);
        let t = done[0].error.as_ref().unwrap();
        assert_eq!((t.kind, t.delay), (HandlerErrorKind::Temporary, Some(5.0)));
        assert!(done[1].error.as_ref().unwrap().panicked);
    }

    #[test]
    fn registration_errors_are_clear() {
        let c = ctx(BTreeMap::new());
        let ok = |_: &Context| -> crate::Result<()> { Ok(()) };
        assert_eq!(c.register("", ok), Err(SubhandlerError::EmptyId));
        c.register("x", ok).unwrap();
        assert_eq!(
            c.register("x", ok),
            Err(SubhandlerError::DuplicateId("create_fn/x".into()))
        );
        let event = Context::from_invocation("ev", Invocation::default());
        assert_eq!(event.register("x", ok), Err(SubhandlerError::NotChanging));
        let child = c.child("create_fn/y", &SubhandlerState::default(), None);
        child.register("z", ok).unwrap();
        assert_eq!(
            child.with_children(|c| c.take_pending()[0].id.clone()),
            "create_fn/y/z"
        );
    }

    #[test]
    fn async_children_and_when_filters() {
        let c = ctx(BTreeMap::new());
        c.subhandler("async")
            .register_async(|ctx: Context| async move {
                tokio::task::yield_now().await;
                Ok::<_, crate::Error>(json!({"id": ctx.handler_id()}))
            })
            .unwrap();
        c.subhandler("skipped")
            .when(|ctx: &Context| ctx.spec().get("nope").is_some())
            .register(|_: &Context| -> crate::Result<()> { panic!("filtered out") })
            .unwrap();
        assert_eq!(c.execute(), Ok(()));
        let done = c.with_children(Children::take_done);
        assert_eq!(done.len(), 1, "a filtered-out child is not reported: {done:?}");
        assert_eq!(done[0].result, Some(json!({"id": "create_fn/async"})));
    }

    #[test]
    fn a_parent_stopped_by_execute_reports_children_without_an_error() {
        let handler = crate::HandlerBuilder::new(kopf_abi::protocol::HandlerKind::Create, "create_fn")
            .resource(["kopfexamples"])
            .sync_fn(|ctx: &Context| -> crate::Result<&'static str> {
                ctx.register("t", |_: &Context| -> crate::Result<()> {
                    Err(TemporaryError::new("later").delay(5.0).into())
                })?;
                ctx.execute()?;
                panic!("not reached while a child is pending");
            })
            .build()
            .unwrap();
        let outcome = handler.run(Invocation {
            reason: Some("create".into()),
            ..Default::default()
        });
        assert_eq!(outcome.error, None, "ChildrenPending is not a handler error");
        assert_eq!(outcome.result, None);
        assert_eq!(outcome.children.len(), 1);
        assert_eq!(outcome.children[0].id, "create_fn/t");
        // A real error after registering: the children registered after the last
        // execute() do not run (Kopf's implicit execution happens only on success).
        let failing = crate::HandlerBuilder::new(kopf_abi::protocol::HandlerKind::Create, "f")
            .resource(["kopfexamples"])
            .sync_fn(|ctx: &Context| -> crate::Result<()> {
                ctx.register("never", |_: &Context| -> crate::Result<()> {
                    panic!("must not run")
                })?;
                Err(crate::PermanentError::new("no").into())
            })
            .build()
            .unwrap();
        let outcome = failing.run(Invocation {
            reason: Some("create".into()),
            ..Default::default()
        });
        assert_eq!(outcome.error.map(|e| e.message), Some("no".to_owned()));
        assert!(outcome.children.is_empty());
    }

    #[test]
    fn exhausted_children_are_not_called() {
        let mut known = BTreeMap::new();
        known.insert(
            "create_fn/r".to_owned(),
            SubhandlerState {
                retry: 3,
                ..Default::default()
            },
        );
        let c = ctx(known);
        c.subhandler("r")
            .retries(3)
            .register(|_: &Context| -> crate::Result<()> { panic!("must not run") })
            .unwrap();
        assert_eq!(c.execute(), Ok(()));
        let done = c.with_children(Children::take_done);
        assert!(!done[0].invoked);
        assert_eq!(done[0].options.retries, Some(3));
    }

    #[test]
    fn grandchildren_report_under_their_parent_and_keep_it_pending() {
        let mut known = BTreeMap::new();
        known.insert(
            "create_fn/a/done".to_owned(),
            SubhandlerState {
                finished: true,
                retry: 1,
                ..Default::default()
            },
        );
        let c = ctx(known);
        c.register("a", |ctx: &Context| -> crate::Result<()> {
            ctx.register("done", |_: &Context| -> crate::Result<()> {
                panic!("finished already")
            })?;
            ctx.register("later", |_: &Context| -> crate::Result<()> {
                Err(TemporaryError::new("later").delay(3.0).into())
            })?;
            Ok(())
        })
        .unwrap();
        assert_eq!(c.execute(), Err(ChildrenPending), "a grandchild is pending");
        let done = c.with_children(Children::take_done);
        assert_eq!(done.len(), 1);
        let a = &done[0];
        assert!(a.invoked && a.error.is_none(), "{a:?}");
        let ids: Vec<_> = a.children.iter().map(|g| (g.id.as_str(), g.invoked)).collect();
        assert_eq!(ids, [("create_fn/a/done", false), ("create_fn/a/later", true)]);
        // ChildrenPending from a child's own execute() is no error of the child.
        let c = ctx(BTreeMap::new());
        c.register("b", |ctx: &Context| -> crate::Result<()> {
            ctx.register("x", |_: &Context| -> crate::Result<()> {
                Err(TemporaryError::new("x").into())
            })?;
            ctx.execute()?;
            unreachable!("x is pending");
        })
        .unwrap();
        assert_eq!(c.execute(), Err(ChildrenPending));
        let b = &c.with_children(Children::take_done)[0];
        assert_eq!((b.error.as_ref(), b.children.len()), (None, 1), "{b:?}");
    }

    #[test]
    fn execute_fns_runs_functions_now_with_prefixed_ids() {
        fn named_fn(ctx: &Context) -> crate::Result<String> {
            Ok(ctx.handler_id().to_owned())
        }
        let c = ctx(BTreeMap::new());
        c.execute_fns(
            crate::fns()
                .add("a", |_: &Context| -> crate::Result<_> { Ok(1) })
                .named(named_fn),
        )
        .unwrap();
        let done = c.with_children(Children::take_done);
        let ids: Vec<_> = done.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["create_fn/a", "create_fn/named_fn"]);
        assert_eq!(done[1].result, Some(json!("create_fn/named_fn")));
        let pending = c.execute_fns(crate::fns().add("t", |_: &Context| -> crate::Result<()> {
            Err(TemporaryError::new("t").into())
        }));
        assert!(pending.unwrap_err().downcast_ref::<ChildrenPending>().is_some());
        let twice = c.execute_fns(crate::fns().add("a", |_: &Context| -> crate::Result<()> { Ok(()) }));
        assert_eq!(
            twice.unwrap_err().downcast_ref::<SubhandlerError>(),
            Some(&SubhandlerError::DuplicateId("create_fn/a".into()))
        );
    }
}
