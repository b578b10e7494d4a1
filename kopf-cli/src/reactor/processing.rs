//! Per-object processing: from an object's newest state to handler invocations and the
//! patches that persist their outcome.
//!
//! The steps follow Kopf's `processing.process_resource_event` (event handlers, the
//! finalizer decision, cause detection, changing handlers, progress, results, the
//! diff-base), with these deliberate differences, all to spend fewer API requests:
//!
//! - **All handlers of a cause run in one cycle** (Kopf's default lifecycle runs one
//!   handler per cycle and patches after each). Their records, results and the diff-base
//!   go out in one body patch and one `/status` patch. If all succeed at once, no progress
//!   record is ever written: the records Kopf would write and purge cancel out.
//! - **Processing continues from the patch response** instead of waiting for the watch to
//!   echo it; the echo (and anything older) is then skipped (Kopf's consistency wait).
//! - **Delayed retries wake the worker in memory**; no `touch-dummy` writes.
//! - **No-op patches are not sent**: a patch that would not change the body is dropped.
//! - **Results of deletion handlers are not written** when the same cycle releases the
//!   object's last finalizer (the object vanishes right after).
//!
//! ## Restart safety: what a crash (`kill -9`) can make re-run
//!
//! Handlers have side effects outside the cluster, so what matters is which of them run
//! again after the operator dies and restarts. The rule, for every object:
//!
//! - A handler whose success reached the API (a progress record, or the diff-base and
//!   purge of a finished cause) never runs again for that cause.
//! - Handlers of one cycle run as one batch and are persisted by one patch (that is what
//!   keeps the request budget) **only while the batch is fast**: once the handlers of a
//!   cycle took `BATCH_WINDOW` (200 ms) in total, the outcomes so far are persisted
//!   before the next handler starts. So a crash re-runs the handler that was running, plus
//!   at most the handlers that completed within the last 200 ms of the same batch and
//!   were not persisted yet. For handlers that take longer than the window (those where a
//!   re-run is expensive), this is Kopf's own guarantee: **at most one handler per object
//!   re-runs per crash** (the one in flight, whose success may not have been persisted).
//! - The `/status` patch (results) goes out before the body patch (progress, diff-base,
//!   finalizer): a crash between them re-runs a handler whose result is already stored,
//!   rather than marking a handler done whose result was lost. Nothing is skipped.
//! - Deletion handlers release the finalizer in the same patch that ends the cause; a
//!   crash before it re-runs the deletion handler in flight, and no finalizer stays.
//!
//! `tests/tests/reactor_restart.rs` kills the operator at random moments of a
//! multi-handler lifecycle over many objects and asserts exactly this.

use std::{cmp::Ordering, sync::Arc, time::Duration};

use kopf_abi::protocol::{HandlerKind, Invocation, Outcome, Purpose};
use kube::Client;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    daemons::{Background, StopReason, StopRegistry},
    execution::{self, Attempt, Decision},
    indexing::{self, Indices},
    queueing::{ObjectProcessor, RawEvent, Verdict, Wakeup},
    subhandling,
};
use crate::{
    clients::{ApiError, patching},
    intents::{
        causes::{self, CauseInputs, ChangingCause, Reason},
        filters::{self, FilterMatch, FilterSubject},
    },
    persistence::{
        diffbase::{ANNOTATIONS_SIZE_LIMIT, DiffBaseStorage},
        progress::{ProgressStorage, State, StepOutcome},
        times::Timestamp,
    },
    plugin::{HandlerRef, PluginSet},
    settings::{OperatorSettings, seconds},
    structs::{
        backoff::Delays,
        dicts::{self, FieldPath},
        diffs,
        patches::{Patch, PatchFn, is_deletion_blocked, is_deletion_ongoing},
        references::Resource,
        versions,
    },
};

/// A cycle's handlers run as one batch (one persisting patch) while they take less than
/// this in total; once a batch took longer, each further handler starts only after the
/// outcomes so far are persisted. Bounds what a crash can make re-run (see the header).
const BATCH_WINDOW: Duration = Duration::from_millis(200);

/// Cycles per processing run at most (finalizer changes, persisted slow batches).
const MAX_CYCLES: usize = 64;

/// Refused patches (failed `test` of the resourceVersion) re-cycled at once per processing
/// run; beyond, the object is throttled like after an error (a 422 that is no conflict
/// would otherwise be re-sent in a tight loop).
const MAX_CONFLICTS: usize = 3;

/// What all processors of an operator share.
pub struct Shared {
    /// The API client.
    pub client: Client,
    /// The loaded plugins.
    pub plugins: PluginSet,
    /// The settings in force.
    pub settings: OperatorSettings,
    /// Where progress records live.
    pub progress: ProgressStorage,
    /// Where the diff-base lives.
    pub diffbase: DiffBaseStorage,
    /// Stop flags of running daemons, for the `daemon.*` host methods.
    pub stops: Arc<StopRegistry>,
    /// Cancelled when the operator exits (as opposed to pausing).
    pub exiting: tokio_util::sync::CancellationToken,
    /// The in-memory indices of `index` handlers.
    pub indices: Arc<Indices>,
}

/// The processor of one served resource.
pub struct ResourceProcessor {
    shared: Arc<Shared>,
    resource: Resource,
    /// Changing handlers (resume, create, update, delete, field) of this resource.
    changing: Vec<HandlerRef>,
    /// Event handlers of this resource.
    watching: Vec<HandlerRef>,
    /// Handlers that need the finalizer (non-optional delete, daemons, timers).
    finalizing: Vec<HandlerRef>,
    /// `field=` paths of all handlers, kept in the essence (Kopf's "extra fields").
    extra_fields: Vec<FieldPath>,
    /// Daemons and timers of this resource's objects.
    background: Background,
    /// Index handlers of this resource.
    indexers: Vec<HandlerRef>,
    /// Uids of objects fully handled once in this process: listings (after a relist or a
    /// pause) do not make them "initial" again, so resume handlers run once per process.
    handled: parking_lot::Mutex<std::collections::HashSet<String>>,
}

/// What a worker remembers about one object between runs.
#[derive(Debug, Default)]
pub struct ObjectMemory {
    /// The freshest known body (from the watch or from our own patch responses).
    body: Option<Value>,
    /// The object came from a listing and was not fully handled in this process yet.
    initial: bool,
    /// The resourceVersion our last patch produced, and how long to wait for its echo.
    awaited: Option<(String, Instant)>,
    /// Consecutive unexpected errors (for throttling).
    errors: usize,
    /// A digest of the essence last seen (to tell idle timers about changes); a digest,
    /// not a copy, keeps objects with timers small.
    essence: Option<u64>,
    /// The object's uid (to stop its daemons and timers when the body is not kept).
    uid: Option<String>,
    /// A patch failed without a clear answer: the body must be re-read before use.
    stale: bool,
    /// Events that arrived while waiting for the indices to be ready.
    pending: Vec<RawEvent>,
    /// When the next delayed handler is due: kept across runs that only see the echo of
    /// our own patch, so that the retry is not forgotten.
    retry_at: Option<Instant>,
    /// The resourceVersion of the newest state processed (from events, patch responses
    /// and re-reads): older events are skipped when versions are comparable.
    known_version: Option<Box<str>>,
}

impl ObjectMemory {
    fn remember_version(&mut self, body: &Value) {
        if let Some(version) = text(body, &["metadata", "resourceVersion"])
            && self.known_version.as_deref() != Some(version)
        {
            self.known_version = Some(version.into());
        }
    }
}

/// The result of one changing cycle.
#[derive(Debug, Default)]
struct Cycle {
    /// Run another cycle at once on the patched body (the finalizer was just changed).
    again: bool,
    /// Seconds until the next delayed handler is due.
    delay: Option<f64>,
    /// The essence the cycle saw (to tell whether the patch response brings news).
    essence: Option<Value>,
}

fn text<'a>(body: &'a Value, path: &[&str]) -> Option<&'a str> {
    dicts::resolve(body, path).and_then(Value::as_str)
}

/// `[namespace/name]`-style reference for logs.
fn object_ref(body: &Value) -> String {
    let name = text(body, &["metadata", "name"]).unwrap_or("?");
    match text(body, &["metadata", "namespace"]) {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

impl ResourceProcessor {
    /// A processor for `resource`, serving the given handlers (others are ignored).
    pub fn new(shared: Arc<Shared>, resource: Resource, handlers: &[HandlerRef]) -> Self {
        let pick =
            |f: &dyn Fn(&HandlerRef) -> bool| handlers.iter().filter(|h| f(h)).cloned().collect::<Vec<_>>();
        let changing = pick(&|h| h.kind().is_changing());
        let watching = pick(&|h| h.kind() == HandlerKind::Event);
        let indexers = pick(&|h| h.kind() == HandlerKind::Index);
        for indexer in &indexers {
            shared.indices.declare(indexer.id());
        }
        let finalizing = pick(&|h| causes::requires_finalizer(h.kind(), h.spec().options.optional));
        let mut extra_fields: Vec<FieldPath> = handlers
            .iter()
            .filter(|h| {
                h.kind().is_changing()
                    || matches!(
                        h.kind(),
                        HandlerKind::Event | HandlerKind::Daemon | HandlerKind::Timer
                    )
            })
            .filter_map(|h| h.spec().filters.field.as_deref())
            .map(dicts::parse_field)
            .collect();
        extra_fields.sort();
        extra_fields.dedup();
        let background = Background::new(shared.clone(), resource.clone(), handlers, shared.stops.clone());
        Self {
            shared,
            resource,
            changing,
            watching,
            finalizing,
            extra_fields,
            background,
            indexers,
            handled: Default::default(),
        }
    }

    fn finalizer(&self) -> &str {
        &self.shared.settings.persistence.finalizer
    }

    /// Evaluates a handler's filters; callbacks are asked from the plugin with `inv`, or
    /// with a plain invocation of the subject's body (built only when a callback is due:
    /// most filters need no body copy at all).
    async fn matches(
        &self,
        handler: &HandlerRef,
        subject: &FilterSubject<'_>,
        full: bool,
        inv: Option<&Invocation>,
    ) -> bool {
        let spec = handler.spec();
        let verdict = if full {
            filters::matches(&spec.filters, subject, causes::field_needs_change(spec.kind))
        } else {
            filters::prematch(&spec.filters, subject)
        };
        match verdict {
            FilterMatch::Match => true,
            FilterMatch::NoMatch => false,
            FilterMatch::NeedsCallback => {
                let mut inv = match inv {
                    Some(inv) => inv.clone(),
                    None => self.base_invocation(subject.body),
                };
                inv.purpose = Purpose::Filter;
                match self.shared.plugins.invoke(handler, &inv).await {
                    Ok(outcome) => outcome.matches.unwrap_or(false),
                    Err(error) => {
                        tracing::error!(target: "kopf.objects", "[{}] Filters of handler {:?} failed: {error}", object_ref(subject.body), spec.id);
                        false
                    }
                }
            }
        }
    }

    fn base_invocation(&self, body: &Value) -> Invocation {
        Invocation {
            body: Some(body.clone()),
            resource: Some(self.resource.info()),
            ..Default::default()
        }
    }

    /// Runs the event handlers for one raw event; errors are logged and ignored.
    async fn run_event_handlers(&self, event: &RawEvent, patch: &mut Patch) {
        if self.watching.is_empty() {
            return;
        }
        let body = &event.body;
        let event_type = event.event_type.map(|t| t.as_str().to_owned());
        let mut inv = self.base_invocation(body);
        inv.event_type = event_type.clone();
        inv.extra
            .insert("event".into(), json!({"type": event_type, "object": body}));
        let subject = FilterSubject { body, essences: None };
        for handler in &self.watching {
            if !self.matches(handler, &subject, false, Some(&inv)).await {
                continue;
            }
            inv.param = handler.spec().options.param.clone();
            match self.shared.plugins.invoke(handler, &inv).await {
                Ok(outcome) => {
                    if let Some(error) = &outcome.error {
                        tracing::warn!(target: "kopf.objects", "[{}] Handler {:?} failed with an error (ignored): {}", object_ref(body), handler.id(), error.message);
                    } else if let Some(result) = &outcome.result {
                        patch.deliver_result(handler.id(), result);
                    }
                    if let Some(p) = &outcome.patch {
                        patch.merge_from(p);
                    }
                }
                Err(error) => {
                    tracing::warn!(target: "kopf.objects", "[{}] Handler {:?} failed (ignored): {error}", object_ref(body), handler.id());
                }
            }
        }
    }

    /// Whether any finalizer-requiring handler pre-matches the object.
    async fn needs_finalizer(&self, body: &Value) -> bool {
        let subject = FilterSubject { body, essences: None };
        for handler in &self.finalizing {
            if self.matches(handler, &subject, false, None).await {
                return true;
            }
        }
        false
    }

    /// One changing cycle on `body`: decides the cause, runs the due handlers, and
    /// accumulates everything to persist in `patch`.
    async fn changing_cycle(&self, memory: &mut ObjectMemory, body: &Value, patch: &mut Patch) -> Cycle {
        let new = self
            .shared
            .diffbase
            .essence(&self.shared.progress, body, &self.extra_fields);
        let mut cycle = self.changing_cycle_on(memory, body, &new, patch).await;
        cycle.essence = Some(new);
        cycle
    }

    /// Whether the patch response `after` differs from `before` (the body the cycle saw,
    /// with essence `seen`) in what decides the causes: someone else's change that landed
    /// between our read and our patch, or a handler's own patch of the spec. Such news
    /// needs another cycle now: the echo of the patch is not processed again.
    fn brings_news(&self, before: &Value, seen: Option<&Value>, after: &Value) -> bool {
        if is_deletion_ongoing(before) != is_deletion_ongoing(after) {
            return true;
        }
        let Some(seen) = seen else { return false };
        let now = self
            .shared
            .diffbase
            .essence(&self.shared.progress, after, &self.extra_fields);
        &now != seen
    }

    /// The changing cycle on `body` whose essence is `new`.
    #[allow(clippy::too_many_lines)] // split under issue 19
    async fn changing_cycle_on(
        &self,
        memory: &mut ObjectMemory,
        body: &Value,
        new: &Value,
        patch: &mut Patch,
    ) -> Cycle {
        let shared = &self.shared;
        let reference = object_ref(body);
        let old = match shared.diffbase.fetch(body) {
            Ok(old) => old,
            Err(error) => {
                tracing::warn!(target: "kopf.objects", "[{reference}] The diff-base is unreadable, treating as new: {error}");
                None
            }
        };
        let diff = diffs::diff(old.as_ref(), Some(new));
        let cause = causes::detect_changing_cause(&CauseInputs {
            event_type: None,
            body,
            finalizer: self.finalizer(),
            old: old.as_ref(),
            new: Some(new),
            diff: &diff,
            initial: memory.initial,
        });
        if matches!(cause.reason, Reason::Free | Reason::Gone) {
            return Cycle::default();
        }

        // The finalizer goes on before any handler runs, and comes off when unneeded.
        let deleting = is_deletion_ongoing(body);
        let blocked = is_deletion_blocked(body, self.finalizer());
        if !deleting {
            let needed = self.needs_finalizer(body).await;
            if needed && !blocked {
                tracing::debug!(target: "kopf.objects", "[{reference}] Adding the finalizer, thus preventing the actual deletion.");
                patch.push_fn(PatchFn::AddFinalizer(self.finalizer().to_owned()));
                return Cycle {
                    again: true,
                    ..Default::default()
                };
            }
            if !needed && blocked {
                tracing::debug!(target: "kopf.objects", "[{reference}] Removing the finalizer, as there are no handlers requiring it.");
                patch.push_fn(PatchFn::RemoveFinalizer(self.finalizer().to_owned()));
                return Cycle {
                    again: true,
                    ..Default::default()
                };
            }
        }

        if !cause.reason.invokes_handlers() {
            self.mark_handled(memory, body);
            return Cycle::default();
        }

        // Objects that no changing handler pre-matches get no change-handling at all (no
        // progress, no diff-base), as in Kopf.
        if !self.any_changing_prematches(body).await {
            // Still, a deleted object held only for daemons and timers is released once
            // they have exited.
            if cause.reason == Reason::Delete {
                if self.background.alive(body) {
                    return Cycle {
                        delay: Some(0.5),
                        ..Default::default()
                    };
                }
                patch.push_fn(PatchFn::RemoveFinalizer(self.finalizer().to_owned()));
            }
            return Cycle::default();
        }
        // An essence too big for the annotations could never be stored: the handlers would
        // re-run after every failed patch. Refuse the change clearly and touch nothing.
        if cause.reason != Reason::Delete && old.as_ref() != Some(new) {
            let size = shared.diffbase.annotations_size_with(body, new);
            if size > ANNOTATIONS_SIZE_LIMIT {
                tracing::error!(target: "kopf.objects", "[{reference}] {} is not handled: its diff-base would make the annotations {size} bytes, over Kubernetes' limit of {ANNOTATIONS_SIZE_LIMIT} bytes. The handlers are not invoked and the object is left unchanged until it shrinks.",
                    capitalize(cause.reason.title()));
                return Cycle::default();
            }
        }
        let handlers = self.select_handlers(body, &cause, old.as_ref(), new).await;
        let all_ids: Vec<&str> = self.changing.iter().map(HandlerRef::id).collect();
        let now = Timestamp::now();
        let state = match State::from_storage(&shared.progress, body, all_ids.iter().copied(), now) {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(target: "kopf.objects", "[{reference}] Progress records are unreadable, starting over: {error}");
                State::default()
            }
        };
        let selected_ids: Vec<&str> = handlers.iter().map(HandlerRef::id).collect();
        let mut state = state.with_purpose(Some(cause.reason.as_str()), selected_ids.iter().copied());
        for (purpose, counts) in state.extras() {
            if counts.running > 0 {
                tracing::info!(target: "kopf.objects", "[{reference}] {} is superseded by {}: {} succeeded; {} failed; {} left to the moment.",
                    capitalize(&purpose), cause.reason.title(), counts.success, counts.failure, counts.running);
            }
        }
        state
            .states
            .retain(|_, s| s.purpose.is_none() || s.purpose.as_deref() == Some(cause.reason.as_str()));
        state = state.with_handlers(selected_ids.iter().copied(), now);

        // Run every handler that is due, in declaration order, all in this cycle, unless
        // the batch gets slow: then persist what is done before starting the next one.
        let mut outcomes: Vec<(String, StepOutcome)> = Vec::new();
        let mut children: Vec<subhandling::Settled> = Vec::new();
        let batch_started = Instant::now();
        let mut persist_first = false;
        for handler in &handlers {
            let Some(handler_state) = state.states.get(handler.id()) else {
                continue;
            };
            if handler_state.finished() || handler_state.sleeping(&now) {
                continue;
            }
            if !outcomes.is_empty() && batch_started.elapsed() >= BATCH_WINDOW {
                persist_first = true;
                break;
            }
            let attempt = Attempt {
                retries: u32::try_from(handler_state.retries.max(0)).unwrap_or(u32::MAX),
                runtime: handler_state.runtime(&now),
            };
            let mut settled: Option<subhandling::Settled> = None;
            let decision = match execution::precheck(handler.spec(), attempt) {
                Some(decision) => decision,
                None => {
                    let mut inv = self.changing_invocation(
                        handler,
                        body,
                        &cause,
                        old.as_ref(),
                        new,
                        &diff,
                        attempt,
                        &handler_state.started,
                    );
                    let known = subhandling::known_children(
                        &shared.progress,
                        body,
                        handler.id(),
                        handler_state,
                        Some(cause.reason.as_str()),
                        now,
                    );
                    inv.subhandlers = subhandling::invocation_states(&known, &now);
                    // A handler with a timeout is not waited for past it (Kopf only checks
                    // between attempts): a hung call is abandoned and fails the handler.
                    let limit = handler
                        .spec()
                        .options
                        .timeout
                        .map(|timeout| seconds(timeout - attempt.runtime));
                    let outcome = self.invoke_logged(handler, &inv, &reference, limit).await;
                    if let Some(p) = &outcome.patch {
                        patch.merge_from(p);
                    }
                    let mut decision = execution::decide(
                        handler.spec(),
                        attempt,
                        &outcome,
                        shared.settings.execution.default_backoff,
                    );
                    if !outcome.children.is_empty() {
                        let s = subhandling::settle(
                            handler.spec(),
                            &outcome.children,
                            known,
                            Some(cause.reason.as_str()),
                            Timestamp::now(),
                            shared.settings.execution.default_backoff,
                            patch,
                        );
                        for (id, child_decision) in &s.decisions {
                            log_decision(&reference, id, child_decision);
                        }
                        decision = subhandling::parent_decision(decision, &s);
                        settled = Some(s);
                    }
                    if decision == Decision::Success
                        && let Some(result) = outcome.result.as_ref().filter(|r| !r.is_null())
                    {
                        patch.deliver_result(handler.id(), result);
                    }
                    decision
                }
            };
            match (&decision, &settled) {
                (Decision::Retry { .. }, Some(s)) if s.pending_delay.is_some() => {
                    tracing::debug!(target: "kopf.objects", "[{reference}] Handler {:?} has unfinished sub-handlers. Will retry soon.", handler.id());
                }
                _ => log_decision(&reference, handler.id(), &decision),
            }
            let mut step = subhandling::step_outcome(decision);
            if let Some(s) = settled {
                step.subrefs = s.subrefs.clone();
                children.push(s);
            }
            outcomes.push((handler.id().to_owned(), step));
        }
        let now = Timestamp::now();
        state = state.with_outcomes(outcomes.iter().map(|(id, o)| (id.as_str(), o)), now);
        // Children's records go first; if the cause is done, the purge below drops them.
        for settled in &children {
            subhandling::store(&shared.progress, settled, body, patch);
        }

        if state.done() {
            let counts = state.counts();
            if !handlers.is_empty() {
                tracing::info!(target: "kopf.objects", "[{reference}] {} is processed: {} succeeded; {} failed.",
                    capitalize(cause.reason.title()), counts.success, counts.failure);
            }
            state.purge(&shared.progress, body, patch, all_ids.iter().copied());
            self.mark_handled(memory, body);
            if cause.reason == Reason::Delete && self.background.alive(body) {
                // Daemons and timers are still exiting: keep the finalizer, look again soon.
                return Cycle {
                    delay: Some(0.5),
                    ..Default::default()
                };
            }
            if cause.reason == Reason::Delete {
                let others = body
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|list| list.iter().any(|f| f.as_str() != Some(self.finalizer())));
                if !others {
                    // The object vanishes with our finalizer: writing results or purging
                    // records on it would be wasted requests.
                    *patch = Patch::new();
                }
                patch.push_fn(PatchFn::RemoveFinalizer(self.finalizer().to_owned()));
            } else if old.as_ref() != Some(new) {
                shared.diffbase.store(body, patch, new);
            }
            shared.progress.touch(body, patch, None);
            Cycle::default()
        } else {
            state.store(&shared.progress, body, patch);
            shared.progress.touch(body, patch, None);
            Cycle {
                // Handlers left for after the persisting patch go on at once.
                again: persist_first,
                delay: state.delay(&now),
                ..Default::default()
            }
        }
    }

    /// The changing handlers selected for a cause, after all filters.
    async fn select_handlers(
        &self,
        body: &Value,
        cause: &ChangingCause,
        old: Option<&Value>,
        new: &Value,
    ) -> Vec<HandlerRef> {
        let subject = FilterSubject {
            body,
            essences: Some((old, Some(new))),
        };
        let mut selected: Vec<HandlerRef> = Vec::new();
        for handler in &self.changing {
            if !causes::changing_handler_applies(handler.kind(), handler.spec().options.deleted, cause) {
                continue;
            }
            if selected.iter().any(|h| h.id() == handler.id()) {
                continue;
            }
            if self.matches(handler, &subject, true, None).await {
                selected.push(handler.clone());
            }
        }
        selected
    }

    #[allow(clippy::too_many_arguments)]
    fn changing_invocation(
        &self,
        handler: &HandlerRef,
        body: &Value,
        cause: &ChangingCause,
        old: Option<&Value>,
        new: &Value,
        diff: &[diffs::DiffItem],
        attempt: Attempt,
        started: &Timestamp,
    ) -> Invocation {
        let spec = handler.spec();
        let mut inv = self.base_invocation(body);
        inv.reason = Some(cause.reason.as_str().to_owned());
        inv.retry = attempt.retries;
        inv.runtime = attempt.runtime;
        inv.started = Some(started.to_string());
        inv.param = spec.options.param.clone();
        match spec.filters.field.as_deref() {
            Some(field) if spec.kind != HandlerKind::Resume => {
                let path = dicts::parse_field(field);
                let (old, new, diff) = causes::narrow_to_field(&path, old, Some(new), diff);
                inv.old = Some(old);
                inv.new = Some(new);
                inv.diff = Some(diffs::diff_to_json(&diff));
            }
            _ => {
                inv.old = Some(old.cloned().unwrap_or(Value::Null));
                inv.new = Some(new.clone());
                inv.diff = Some(diffs::diff_to_json(diff));
            }
        }
        inv
    }

    async fn invoke_logged(
        &self,
        handler: &HandlerRef,
        inv: &Invocation,
        reference: &str,
        limit: Option<Duration>,
    ) -> Outcome {
        let started = std::time::Instant::now();
        let invocation = super::queueing::release_slot_if_slow(self.shared.plugins.invoke(handler, inv));
        let invoked = match limit {
            None => invocation.await,
            Some(limit) => match tokio::time::timeout(limit, invocation).await {
                Ok(invoked) => invoked,
                Err(_) => {
                    tracing::error!(target: "kopf.objects", "[{reference}] Handler {:?} did not return within its timeout ({:.1}s left of {:.1}s); the call is abandoned (it keeps its thread until it returns).",
                        handler.id(), limit.as_secs_f64(), handler.spec().options.timeout.unwrap_or_default());
                    crate::observability::metrics::handler_invoked(
                        handler.kind().as_str(),
                        handler.id(),
                        "timeout",
                        started.elapsed().as_secs_f64(),
                    );
                    return Outcome {
                        error: Some(kopf_abi::protocol::HandlerError {
                            kind: kopf_abi::protocol::HandlerErrorKind::Permanent,
                            message: format!(
                                "{} has timed out after {:.1}s (the call did not return).",
                                handler.id(),
                                handler.spec().options.timeout.unwrap_or_default()
                            ),
                            delay: None,
                            code: None,
                            panicked: false,
                        }),
                        ..Default::default()
                    };
                }
            },
        };
        let label = match &invoked {
            Ok(Outcome { error: None, .. }) => "success",
            Ok(Outcome { error: Some(e), .. }) => match e.kind {
                kopf_abi::protocol::HandlerErrorKind::Temporary => "temporary",
                kopf_abi::protocol::HandlerErrorKind::Permanent => "permanent",
                _ => "error",
            },
            Err(_) => "error",
        };
        crate::observability::metrics::handler_invoked(
            handler.kind().as_str(),
            handler.id(),
            label,
            started.elapsed().as_secs_f64(),
        );
        match invoked {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(target: "kopf.objects", "[{reference}] Handler {:?} could not be invoked: {error}", handler.id());
                Outcome {
                    error: Some(kopf_abi::protocol::HandlerError {
                        kind: kopf_abi::protocol::HandlerErrorKind::Arbitrary,
                        message: error.to_string(),
                        delay: None,
                        code: None,
                        panicked: false,
                    }),
                    ..Default::default()
                }
            }
        }
    }

    /// Reads the object as the API server has it now.
    async fn reread(&self, body: &Value) -> Result<Applied, Failed> {
        let Some(name) = text(body, &["metadata", "name"]) else {
            return Err(Failed::get(ApiError::Unexpected(
                "an object without a name".into(),
            )));
        };
        let url = self
            .resource
            .url(text(body, &["metadata", "namespace"]), Some(name), None);
        match patching::get(&self.shared.client, &url).await {
            Ok(fresh) => Ok(Applied::Fresh(fresh)),
            Err(e) if e.is_not_found() => Ok(Applied::Gone),
            Err(e) => Err(Failed::get(e)),
        }
    }

    /// Sends the patch (merge patches first, then JSON-patch ops computed on the freshest
    /// body); returns the freshest body, if any request was sent.
    async fn apply(&self, body: &Value, patch: &Patch) -> Result<Applied, Failed> {
        let client = &self.shared.client;
        let namespace = text(body, &["metadata", "namespace"]);
        let Some(name) = text(body, &["metadata", "name"]) else {
            return Err(Failed::patch(
                None,
                ApiError::Unexpected("an object without a name".into()),
            ));
        };
        let url = |sub: Option<&str>| self.resource.url(namespace, Some(name), sub);
        let status_sub = self.resource.has_status_subresource();
        let mut fresh: Option<Value> = None;

        // Skip merge patches that would change nothing.
        if patch.merge_changes(body) {
            let requests = patch.requests(status_sub);
            // Status first: a crash between the two requests then leaves the results
            // stored and the handlers unmarked (they re-run), never the handlers marked
            // done (progress, diff-base) with their results lost.
            for (merge, sub) in [(requests.status, Some("status")), (requests.body, None)] {
                let Some(merge) = merge else { continue };
                match patching::patch(client, &url(sub), patching::PatchType::Merge, &merge).await {
                    Ok(result) => fresh = Some(result),
                    Err(e) if e.is_not_found() => return Ok(Applied::Gone),
                    Err(e) => return Err(Failed::patch(sub, e)),
                }
            }
        }
        let base = fresh.as_ref().unwrap_or(body);
        let (body_ops, status_ops) = patch.json_requests(base, status_sub);
        for (ops, sub) in [(body_ops, None), (status_ops, Some("status"))] {
            let Some(ops) = ops else { continue };
            match patching::patch(client, &url(sub), patching::PatchType::Json, &Value::Array(ops)).await {
                Ok(result) => fresh = Some(result),
                Err(e) if e.is_not_found() => return Ok(Applied::Gone),
                Err(e) if e.is_conflict() => {
                    // The object changed under us: re-read it and let the next cycle decide.
                    tracing::debug!(target: "kopf.objects", "[{}] The object changed while patching; re-reading it.", object_ref(body));
                    return match self.reread(body).await {
                        Ok(Applied::Fresh(current)) => Ok(Applied::Conflicted(current)),
                        other => other,
                    };
                }
                Err(e) => return Err(Failed::patch(sub, e)),
            }
        }
        Ok(fresh.map_or(Applied::Unchanged, Applied::Fresh))
    }
}

/// A request of the object's processing that failed: what was asked, for the log (a 403
/// names the verb and the resource the operator's role lacks), and the error.
#[derive(Debug)]
struct Failed {
    verb: &'static str,
    subresource: Option<&'static str>,
    error: ApiError,
}

impl Failed {
    fn get(error: ApiError) -> Self {
        Self {
            verb: "get",
            subresource: None,
            error,
        }
    }

    fn patch(subresource: Option<&'static str>, error: ApiError) -> Self {
        Self {
            verb: "patch",
            subresource,
            error,
        }
    }

    /// The log's account of the failure.
    fn describe(&self, resource: &Resource) -> String {
        if self.error.is_permission() {
            let text = self
                .error
                .describe(self.verb, &resource.rbac_text(self.subresource));
            let mut chars = text.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect())
                .unwrap_or(text)
        } else if self.verb == "get" {
            format!("Re-reading the object failed ({})", self.error)
        } else {
            format!("Patching failed ({})", self.error)
        }
    }
}

/// What sending a patch produced.
enum Applied {
    /// The object as the API server returned it after the last request.
    Fresh(Value),
    /// A JSON patch was refused because the object changed (its `test` of the
    /// resourceVersion failed): the object as re-read. What that patch would have done is
    /// not done (merge patches before it are), so another cycle must decide on this body.
    Conflicted(Value),
    /// Nothing needed sending: the body is as it was.
    Unchanged,
    /// The object is gone.
    Gone,
}

/// Takes the object as the API server answered our patch (or re-read it after a refused
/// one) as the newest state; until its echo arrives, older events are not processed.
fn adopt_patched(memory: &mut ObjectMemory, body: &mut Value, fresh: Value, settings: &OperatorSettings) {
    if let Some(rv) = text(&fresh, &["metadata", "resourceVersion"])
        && Some(rv) != text(body, &["metadata", "resourceVersion"])
    {
        let timeout = seconds(settings.persistence.consistency_timeout);
        memory.awaited = Some((rv.to_owned(), Instant::now() + timeout));
    }
    memory.remember_version(&fresh);
    *body = fresh;
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn log_decision(reference: &str, id: &str, decision: &Decision) {
    match decision {
        Decision::Success => {
            tracing::info!(target: "kopf.objects", "[{reference}] Handler {id:?} succeeded.")
        }
        Decision::Retry { delay, message } => {
            tracing::error!(target: "kopf.objects", "[{reference}] Handler {id:?} failed temporarily: {message}; retrying in {delay}s.")
        }
        Decision::Failure { message } => {
            tracing::error!(target: "kopf.objects", "[{reference}] Handler {id:?} failed permanently: {message}")
        }
    }
}

impl ObjectProcessor for ResourceProcessor {
    type Memory = ObjectMemory;

    fn observe(&self, stream: &str, item: &crate::clients::watching::WatchItem) {
        use crate::clients::watching::WatchItem;
        if self.indexers.is_empty() {
            return;
        }
        match item {
            WatchItem::Listed(body) => {
                if let Some(uid) = text(body, &["metadata", "uid"]) {
                    self.shared.indices.listed(stream, uid);
                }
            }
            WatchItem::ListDone => self.shared.indices.list_done(stream),
            _ => {}
        }
    }

    fn needs_every_event(&self) -> bool {
        // Event handlers see every event; indexers track listings event by event.
        !self.watching.is_empty() || !self.indexers.is_empty()
    }

    fn stream_started(&self, stream: &str) {
        if !self.indexers.is_empty() {
            self.shared.indices.stream_started(stream);
        }
    }

    fn stream_stopped(&self, stream: &str) {
        if !self.indexers.is_empty() {
            self.shared.indices.stream_removed(stream);
        }
    }

    #[allow(clippy::too_many_lines)] // split under issue 19
    async fn process(&self, memory: &mut ObjectMemory, events: Vec<RawEvent>, wakeup: Wakeup) -> Verdict {
        if wakeup == Wakeup::Stopping {
            if let Some(uid) = &memory.uid {
                let reason = if self.shared.exiting.is_cancelled() {
                    StopReason::OperatorExiting
                } else {
                    StopReason::OperatorPausing
                };
                let stub = json!({"metadata": {"uid": uid}});
                self.background.stop_object(&stub, reason).await;
            }
            return Verdict::default();
        }
        if memory
            .awaited
            .as_ref()
            .is_some_and(|(_, deadline)| Instant::now() >= *deadline)
        {
            memory.awaited = None;
        }
        // Index first; everything else waits until all indexed resources are indexed.
        for event in &events {
            self.run_indexers(event).await;
        }
        memory.pending.extend(events);
        if !self.shared.indices.is_ready() {
            return Verdict {
                blocked_until: Some(self.shared.indices.subscribe()),
                ..Default::default()
            };
        }
        let mut events = std::mem::take(&mut memory.pending);
        let mut patch = Patch::new();
        for event in &events {
            self.run_event_handlers(event, &mut patch).await;
        }
        let mut newest_from_events = false;
        if let Some(last) = events.last() {
            if last.is_deletion() {
                tracing::debug!(target: "kopf.objects", "[{}] Deleted, really.", object_ref(&last.body));
                if let Some(uid) = text(&last.body, &["metadata", "uid"]) {
                    self.handled.lock().remove(uid);
                }
                self.background.forget(&last.body);
                if let Some(uid) = text(&last.body, &["metadata", "uid"]) {
                    self.shared.plugins.forget_object(uid);
                }
                *memory = ObjectMemory::default();
                return Verdict::default();
            }
            if events.iter().any(|e| e.event_type.is_none())
                && let Some(uid) = text(&last.body, &["metadata", "uid"])
            {
                memory.initial = !self.handled.lock().contains(uid);
            }
            // Events come in the stream's order: the echo of our own patch is preceded by
            // older states only and followed by newer ones (others' changes that may have
            // arrived in the same batch).
            let echo_last = memory
                .awaited
                .as_ref()
                .is_some_and(|(awaited, _)| last.resource_version() == Some(awaited.as_str()));
            let echo_seen = memory
                .awaited
                .as_ref()
                .is_some_and(|(awaited, _)| events.iter().any(|e| e.has_seen(awaited)));
            // Never back to a state older than one already processed, however late it
            // comes (a watch stream lagging behind our patches and re-reads for longer
            // than the consistency timeout): comparable resource versions tell.
            let older = match (last.resource_version(), memory.known_version.as_deref()) {
                (Some(version), Some(known)) => {
                    versions::compare(version, known).is_some_and(Ordering::is_lt)
                }
                _ => false,
            };
            match (&memory.awaited, echo_seen) {
                _ if older => {
                    if patch.is_empty() {
                        return self.idle_verdict(memory);
                    }
                }
                (Some(_), true) if echo_last => {
                    // The echo of our own patch: its state was processed from the response.
                    memory.awaited = None;
                    if patch.is_empty() {
                        return self.idle_verdict(memory);
                    }
                }
                (Some((_, deadline)), false) if Instant::now() < *deadline => {
                    // Older than our own patch: our memory is fresher.
                    if patch.is_empty() {
                        return Verdict {
                            wake_at: [Some(*deadline), memory.retry_at].into_iter().flatten().min(),
                            ..Default::default()
                        };
                    }
                }
                _ => {
                    // Newer than our own patch's echo, or no patch awaited, or waited enough.
                    memory.awaited = None;
                    newest_from_events = true;
                }
            }
        }
        if newest_from_events {
            let newest = events.pop().map(|event| event.body);
            if let Some(body) = &newest {
                memory.remember_version(body);
            }
            memory.body = newest;
            memory.stale = false;
        }
        drop(events);
        // Taken out of the memory while processing (no copy); put back before returning.
        let Some(mut body) = memory.body.take() else {
            return Verdict::default();
        };
        if memory.stale {
            match self.reread(&body).await {
                Ok(Applied::Fresh(fresh) | Applied::Conflicted(fresh)) => {
                    memory.stale = false;
                    memory.remember_version(&fresh);
                    body = fresh;
                }
                Ok(Applied::Gone) => {
                    *memory = ObjectMemory::default();
                    return Verdict::default();
                }
                Ok(Applied::Unchanged) => {
                    memory.body = Some(body);
                    memory.retry_at = Some(Instant::now() + Duration::from_secs(1));
                    return Verdict {
                        wake_at: memory.retry_at,
                        ..Default::default()
                    };
                }
                // Logged (a refused GET names the verb and the resource) and throttled like
                // a failed patch; the body stays stale until a read succeeds.
                Err(failed) => return self.throttle(memory, body, &failed, true),
            }
        }
        self.adjust_background(memory, &body).await;

        // Cycles: a finalizer change is persisted before handlers run, then go on.
        let mut delay = None;
        let mut conflicts = 0;
        for _ in 0..MAX_CYCLES {
            let cycle = self.changing_cycle(memory, &body, &mut patch).await;
            delay = cycle.delay;
            let mut news = false;
            if patch.is_empty() {
                break;
            }
            match self.apply(&body, &patch).await {
                Ok(Applied::Unchanged) => memory.errors = 0,
                Ok(Applied::Fresh(fresh)) => {
                    memory.errors = 0;
                    news = !cycle.again && self.brings_news(&body, cycle.essence.as_ref(), &fresh);
                    adopt_patched(memory, &mut body, fresh, &self.shared.settings);
                }
                Ok(Applied::Conflicted(fresh)) => {
                    // The refused part is not done, and the events up to the re-read
                    // state count as our own echo: nothing else would look at it again
                    // (a finalizer's removal racing a timer's status patch stayed undone).
                    // The error count stays: repeated refusals throttle longer and longer.
                    conflicts += 1;
                    adopt_patched(memory, &mut body, fresh, &self.shared.settings);
                    if conflicts > MAX_CONFLICTS {
                        let error = Failed::patch(
                            None,
                            ApiError::Unexpected(format!(
                                "the patch was refused {conflicts} times in a row (the object keeps changing, or the patch is invalid)"
                            )),
                        );
                        // The body was just re-read: no second read before the retry.
                        return self.throttle(memory, body, &error, false);
                    }
                    news = true;
                }
                Ok(Applied::Gone) => {
                    *memory = ObjectMemory::default();
                    return Verdict::default();
                }
                // The failed request may still have been applied (e.g. a dropped
                // connection): the body is re-read before the retry, so that the retry
                // does not purge or store against a state older than the object's.
                Err(error) => return self.throttle(memory, body, &error, true),
            }
            patch = Patch::new();
            if !cycle.again && !news {
                break;
            }
        }
        memory.body = Some(body);
        memory.retry_at = delay.map(|delay| Instant::now() + Duration::from_secs_f64(delay.max(0.0)));
        let mut verdict = self.idle_verdict(memory);
        if let Some(retry_at) = memory.retry_at {
            verdict.wake_at = Some(retry_at);
        }
        verdict
    }
}

impl ResourceProcessor {
    /// Pauses the object's processing after a failed patch or re-read, longer after each
    /// failure in a row (`queueing.error_delays`, or the server's Retry-After); `stale` when
    /// `body` may be older than the object, to be re-read before the retry.
    fn throttle(&self, memory: &mut ObjectMemory, body: Value, failed: &Failed, stale: bool) -> Verdict {
        let error = &failed.error;
        let settings = &self.shared.settings;
        let pause = Delays::from_seconds(&settings.queueing.error_delays).after(memory.errors as u32);
        let pause = error
            .retry_delay(pause, settings.networking.enforce_retry_after)
            .as_secs_f64();
        memory.errors += 1;
        tracing::error!(target: "kopf.objects", "[{}] {}; throttling for {pause}s.", object_ref(&body), failed.describe(&self.resource));
        memory.body = Some(body);
        memory.stale = stale;
        // Remembered (not only returned): an echo of an earlier successful patch may
        // arrive before the wake-up and must not make us forget it.
        memory.retry_at = Some(Instant::now() + seconds(pause));
        Verdict {
            wake_at: memory.retry_at,
            ..Default::default()
        }
    }

    fn idle_verdict(&self, memory: &mut ObjectMemory) -> Verdict {
        // The body is needed later only to retry a delayed handler, or to apply event
        // handlers' patches while our own patch's echo is awaited; otherwise the next
        // event brings a fresh one (the echo of our own patch needs no body: its state
        // was handled from the patch response). So idle objects, objects with timers and
        // objects awaiting their echo keep no copy: memory per object stays small.
        if memory.retry_at.is_none() && self.watching.is_empty() {
            memory.body = None;
        }
        // While our own patch's echo is awaited, keep the memory (it is fresher) until
        // the consistency deadline at most.
        let awaited = memory.awaited.as_ref().map(|(_, deadline)| *deadline);
        Verdict {
            wake_at: [awaited, memory.retry_at].into_iter().flatten().min(),
            ..Default::default()
        }
    }

    /// Runs the index handlers on one event and updates the indices; a deletion removes
    /// the object from them.
    async fn run_indexers(&self, event: &RawEvent) {
        if self.indexers.is_empty() {
            return;
        }
        let body = &event.body;
        let object = indexing::object_key(body);
        if event.is_deletion() {
            for indexer in &self.indexers {
                self.shared.indices.remove(indexer.id(), &object);
            }
            return;
        }
        let subject = FilterSubject { body, essences: None };
        for indexer in &self.indexers {
            if !self.matches(indexer, &subject, false, None).await {
                self.shared.indices.remove(indexer.id(), &object);
                continue;
            }
            let mut inv = self.base_invocation(body);
            inv.param = indexer.spec().options.param.clone();
            let outcome = self.invoke_logged(indexer, &inv, &object_ref(body), None).await;
            match &outcome.error {
                None => self.shared.indices.store(
                    indexer.id(),
                    &object,
                    outcome.result.as_ref().unwrap_or(&Value::Null),
                ),
                Some(error) => match execution::errors_mode(indexer.spec()) {
                    // Ignored errors keep the stale values; others exclude the object.
                    kopf_abi::protocol::ErrorsMode::Ignored
                        if error.kind == kopf_abi::protocol::HandlerErrorKind::Arbitrary => {}
                    _ => self.shared.indices.remove(indexer.id(), &object),
                },
            }
        }
        if event.event_type.is_none()
            && let Some(uid) = text(body, &["metadata", "uid"])
        {
            self.shared.indices.indexed(uid);
        }
    }

    /// Spawns, keeps or stops the object's daemons and timers for its newest state.
    async fn adjust_background(&self, memory: &mut ObjectMemory, body: &Value) {
        if self.background.handlers().is_empty() {
            return;
        }
        let essence = self
            .shared
            .diffbase
            .essence(&self.shared.progress, body, &self.extra_fields);
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            essence.to_string().hash(&mut hasher);
            hasher.finish()
        };
        let changed = memory.essence != Some(digest);
        memory.essence = Some(digest);
        let uid = text(body, &["metadata", "uid"]);
        if memory.uid.as_deref() != uid {
            memory.uid = uid.map(str::to_owned);
        }
        let subject = FilterSubject { body, essences: None };
        let mut matching = Vec::new();
        for handler in self.background.handlers() {
            if self.matches(handler, &subject, false, None).await {
                matching.push(handler.id().to_owned());
            }
        }
        self.background.adjust(body, &matching, changed);
    }

    fn mark_handled(&self, memory: &mut ObjectMemory, body: &Value) {
        memory.initial = false;
        if let Some(uid) = text(body, &["metadata", "uid"]) {
            let mut handled = self.handled.lock();
            if !handled.contains(uid) {
                handled.insert(uid.to_owned());
            }
        }
    }

    async fn any_changing_prematches(&self, body: &Value) -> bool {
        let subject = FilterSubject { body, essences: None };
        for handler in &self.changing {
            if self.matches(handler, &subject, false, None).await {
                return true;
            }
        }
        false
    }
}
