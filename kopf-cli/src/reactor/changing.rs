//! The changing cycles of one object: from its newest body to the cause, the finalizer
//! decision, the selected handlers, their batch, and the patch that ends the cause; and
//! the loop that persists each cycle's patch and runs another one on news
//! (`ResourceProcessor::run_cycles`).
//!
//! Kopf's `processing.process_changing_cause` and `handling.execute`, in four steps (see
//! `ResourceProcessor::changing_cycle`): decide the finalizer, select the handlers, run
//! the batch, finish the cause. The batching rule and what a crash can make re-run are
//! described in [`super::processing`]'s header.

use std::time::Duration;

use kopf_abi::protocol::{HandlerKind, Invocation};
use serde_json::Value;
use tokio::time::Instant;

use super::{
    memory::{ObjectMemory, adopt_patched},
    processing::{ResourceProcessor, Stall},
    queueing::Verdict,
    subhandling,
};
use crate::{
    actions::{
        application::{self, Applied, Failed},
        execution::{self, Attempt, Decision},
        invocation::{self, Call, FilterError},
    },
    clients::ApiError,
    intents::{
        causes::{self, CauseInputs, ChangingCause, Reason},
        filters::FilterSubject,
    },
    persistence::{
        diffbase::{self, ANNOTATIONS_SIZE_LIMIT},
        progress::{HandlerState, State, StepOutcome},
        times::Timestamp,
    },
    plugin::HandlerRef,
    settings::seconds,
    structs::{
        bodies::Body,
        dicts,
        diffs::{self, DiffItem},
        patches::{Patch, PatchFn},
    },
};

/// A cycle's handlers run as one batch (one persisting patch) while they take less than
/// this in total; once a batch took longer, each further handler starts only after the
/// outcomes so far are persisted. Bounds what a crash can make re-run (see the header of
/// [`super::processing`]).
const BATCH_WINDOW: Duration = Duration::from_millis(200);

/// How soon a deleted object held only for exiting daemons and timers is looked at again.
const BACKGROUND_EXIT_RECHECK: f64 = 0.5;

/// Cycles per processing run at most (finalizer changes, persisted slow batches).
const MAX_CYCLES: usize = 64;

/// Refused patches (failed `test` of the resourceVersion) re-cycled at once per processing
/// run; beyond, the object is throttled like after an error (a 422 that is no conflict
/// would otherwise be re-sent in a tight loop).
const MAX_CONFLICTS: usize = 3;

/// The result of one changing cycle.
#[derive(Debug, Default)]
pub(super) struct Cycle {
    /// Run another cycle at once on the patched body (the finalizer was just changed).
    pub again: bool,
    /// Seconds until the next delayed handler is due.
    pub delay: Option<f64>,
    /// The essence the cycle saw (to tell whether the patch response brings news).
    pub essence: Option<Value>,
}

impl Cycle {
    fn again() -> Self {
        Cycle {
            again: true,
            ..Default::default()
        }
    }

    fn recheck_in(delay: f64) -> Self {
        Cycle {
            delay: Some(delay),
            ..Default::default()
        }
    }
}

/// One object's cause, as every handler of the cycle sees it.
struct CauseView<'a> {
    body: &'a Value,
    cause: &'a ChangingCause,
    old: Option<&'a Value>,
    new: &'a Value,
    diff: &'a [DiffItem],
}

/// The handlers a batch ran, and how they ended.
#[derive(Default)]
struct Batch {
    outcomes: Vec<(String, StepOutcome)>,
    children: Vec<subhandling::Settled>,
    /// The batch got slow: what is done is persisted before the rest run.
    persist_first: bool,
}

impl ResourceProcessor {
    /// Changing cycles on the object's newest body, each persisted by its patch (with
    /// what `patch` already holds): a finalizer change is persisted before handlers run,
    /// and news in a patch response makes another cycle at once.
    pub(super) async fn run_cycles(
        &self,
        memory: &mut ObjectMemory,
        mut body: Value,
        mut patch: Patch,
    ) -> Verdict {
        let mut delay = None;
        let mut conflicts = 0;
        let mut patched = false;
        for _ in 0..MAX_CYCLES {
            let (cycle, undecided) = match self.changing_cycle(memory, &body, &mut patch).await {
                Ok(cycle) => (cycle, None),
                // Nothing is decided on a guess: what earlier steps collected is sent,
                // then the object waits (the finalizer stays, no handler runs).
                Err(error) => (Cycle::default(), Some(error)),
            };
            delay = cycle.delay;
            let mut news = false;
            if patch.is_empty() {
                if let Some(error) = undecided {
                    return self.throttle(memory, body, &Stall::Filters(error), false);
                }
                break;
            }
            let plugins = &self.shared.plugins;
            let applied =
                application::apply(&self.shared.client, plugins, &self.resource, &body, &patch).await;
            // A refused JSON patch leaves the handlers' functions undone: they go again on
            // the re-read body (Kopf's remaining patch); otherwise the plugins forget them.
            let carried = match &applied {
                Ok(Applied::Conflicted(_)) if conflicts < MAX_CONFLICTS => patch.plugin_fns_only(),
                _ => {
                    plugins.release_patch_fns(&patch.plugin_fns());
                    Patch::new()
                }
            };
            match applied {
                Ok(Applied::Unchanged) => memory.errors = 0,
                Ok(Applied::Fresh(fresh)) => {
                    memory.errors = 0;
                    patched = true;
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
                        return self.throttle(memory, body, &Stall::Api(error), false);
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
                Err(error) => return self.throttle(memory, body, &Stall::Api(error), true),
            }
            patch = carried;
            if let Some(error) = undecided {
                self.shared.plugins.release_patch_fns(&patch.plugin_fns());
                return self.throttle(memory, body, &Stall::Filters(error), false);
            }
            if !cycle.again && !news {
                break;
            }
        }
        // Cycles ran out with functions still carried: given up.
        self.shared.plugins.release_patch_fns(&patch.plugin_fns());
        if patched {
            self.background.refresh(&body);
        }
        memory.body = Some(body);
        memory.retry_at = delay.map(|delay| Instant::now() + Duration::from_secs_f64(delay.max(0.0)));
        let mut verdict = self.idle_verdict(memory);
        if let Some(retry_at) = memory.retry_at {
            verdict.wake_at = Some(retry_at);
        }
        verdict
    }

    /// Whether the patch response `after` differs from `before` (the body the cycle saw,
    /// with essence `seen`) in what decides the causes: someone else's change that landed
    /// between our read and our patch, or a handler's own patch of the spec. Such news
    /// needs another cycle now: the echo of the patch is not processed again.
    fn brings_news(&self, before: &Value, seen: Option<&Value>, after: &Value) -> bool {
        if Body::new(before).is_deleting() != Body::new(after).is_deleting() {
            return true;
        }
        let Some(seen) = seen else { return false };
        let now = self
            .shared
            .diffbase
            .essence(&self.shared.progress, after, &self.extra_fields);
        &now != seen
    }

    /// One changing cycle on `body`: decides the cause, runs the due handlers, and
    /// accumulates everything to persist in `patch`. A filter that cannot decide stops the
    /// cycle before it adds anything to `patch`.
    pub(super) async fn changing_cycle(
        &self,
        memory: &mut ObjectMemory,
        body: &Value,
        patch: &mut Patch,
    ) -> Result<Cycle, FilterError> {
        let new = self
            .shared
            .diffbase
            .essence(&self.shared.progress, body, &self.extra_fields);
        let mut cycle = self.changing_cycle_on(memory, body, &new, patch).await?;
        cycle.essence = Some(new);
        Ok(cycle)
    }

    async fn changing_cycle_on(
        &self,
        memory: &mut ObjectMemory,
        body: &Value,
        new: &Value,
        patch: &mut Patch,
    ) -> Result<Cycle, FilterError> {
        let deleting = Body::new(body).is_deleting();
        let old = match self.shared.diffbase.fetch(body) {
            Ok(old) => old,
            // Treating it as absent would invent a creation (and re-run create handlers);
            // a deletion needs no diff-base, so only deletions go on.
            Err(error) if !deleting => {
                tracing::error!(target: "kopf.objects", "The diff-base is unreadable; the object is left as it is until it is fixed: {error}");
                return Ok(Cycle::default());
            }
            Err(_) => None,
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
            return Ok(Cycle::default());
        }
        if let Some(cycle) = self.decide_finalizer(body, patch).await? {
            return Ok(cycle);
        }
        if !cause.reason.invokes_handlers() {
            self.mark_handled(memory, body);
            return Ok(Cycle::default());
        }
        // Objects that no changing handler pre-matches get no change-handling at all (no
        // progress, no diff-base), as in Kopf.
        if !self.any_changing_prematches(body).await? {
            return Ok(self.release_unhandled(body, &cause, patch));
        }
        // An essence too big for the annotations could never be stored: the handlers would
        // re-run after every failed patch. Refuse the change clearly and touch nothing.
        if cause.reason != Reason::Delete && old.as_ref() != Some(new) {
            let size = self.shared.diffbase.annotations_size_with(body, new);
            if size > ANNOTATIONS_SIZE_LIMIT {
                tracing::error!(target: "kopf.objects", "{} is not handled: its diff-base would make the annotations {size} bytes, over Kubernetes' limit of {ANNOTATIONS_SIZE_LIMIT} bytes. The handlers are not invoked and the object is left unchanged until it shrinks.",
                    capitalize(cause.reason.title()));
                return Ok(Cycle::default());
            }
        }
        let view = CauseView {
            body,
            cause: &cause,
            old: old.as_ref(),
            new,
            diff: &diff,
        };
        let handlers = self.select_handlers(&view).await?;
        if self.records_would_not_fit(&view, &handlers) {
            return Ok(Cycle::default());
        }
        let now = Timestamp::now();
        let mut state = self.load_state(&view, &handlers, now);
        let batch = self.run_batch(&view, &handlers, &state, now, patch).await;
        let now = Timestamp::now();
        state = state.with_outcomes(batch.outcomes.iter().map(|(id, o)| (id.as_str(), o)), now);
        // Children's records go first; if the cause is done, the purge drops them.
        for settled in &batch.children {
            subhandling::store(&self.shared.progress, settled, body, patch);
        }
        Ok(self.finish_cause(memory, &view, &handlers, &state, batch.persist_first, now, patch))
    }

    /// Whether the handlers' progress records (at their largest), with the diff-base,
    /// could push the annotations over Kubernetes' limit: then nothing could be stored,
    /// not even a retry count, and `retries=` would never stop a failing handler. The
    /// change is refused clearly before any handler runs, as for a too-big diff-base.
    fn records_would_not_fit(&self, view: &CauseView<'_>, handlers: &[HandlerRef]) -> bool {
        let body = view.body;
        let stores_diffbase = view.cause.reason != Reason::Delete && view.old != Some(view.new);
        let base = if stores_diffbase {
            self.shared.diffbase.annotations_size_with(body, view.new)
        } else {
            diffbase::annotations_size(body)
        };
        let ids = handlers.iter().map(HandlerRef::id);
        let size = base + self.shared.progress.growth_bound(body, ids);
        if size <= ANNOTATIONS_SIZE_LIMIT {
            return false;
        }
        tracing::error!(target: "kopf.objects", "{} is not handled: the progress records of its {} handler(s) could make the annotations {size} bytes, over Kubernetes' limit of {ANNOTATIONS_SIZE_LIMIT} bytes, and a handler whose progress cannot be stored would be retried for ever. The handlers are not invoked and the object is left unchanged until it shrinks.",
            capitalize(view.cause.reason.title()), handlers.len());
        true
    }

    /// The finalizer goes on before any handler runs, and comes off when unneeded: then
    /// the cycle ends with that change alone. A failed filter changes nothing.
    async fn decide_finalizer(&self, body: &Value, patch: &mut Patch) -> Result<Option<Cycle>, FilterError> {
        if Body::new(body).is_deleting() {
            return Ok(None);
        }
        let needed = self.needs_finalizer(body).await?;
        let blocked = Body::new(body).has_finalizer(self.finalizer());
        if needed && !blocked {
            tracing::debug!(target: "kopf.objects", "Adding the finalizer, thus preventing the actual deletion.");
            patch.push_fn(PatchFn::AddFinalizer(self.finalizer().to_owned()));
            return Ok(Some(Cycle::again()));
        }
        if !needed && blocked {
            tracing::debug!(target: "kopf.objects", "Removing the finalizer, as there are no handlers requiring it.");
            patch.push_fn(PatchFn::RemoveFinalizer(self.finalizer().to_owned()));
            return Ok(Some(Cycle::again()));
        }
        Ok(None)
    }

    /// A deleted object that no changing handler matches, held only for daemons and
    /// timers, is released once they have exited.
    fn release_unhandled(&self, body: &Value, cause: &ChangingCause, patch: &mut Patch) -> Cycle {
        if cause.reason == Reason::Delete {
            if self.background.alive(body) {
                return Cycle::recheck_in(BACKGROUND_EXIT_RECHECK);
            }
            patch.push_fn(PatchFn::RemoveFinalizer(self.finalizer().to_owned()));
        }
        Cycle::default()
    }

    /// The changing handlers selected for a cause, after all filters. Callback filters get
    /// what the handler would get (reason, old, new, diff: narrowed to its field), as in
    /// Kopf, where they receive every kwarg of the handler.
    async fn select_handlers(&self, view: &CauseView<'_>) -> Result<Vec<HandlerRef>, FilterError> {
        let now = Timestamp::now();
        let first = Attempt {
            retries: 0,
            runtime: 0.0,
        };
        let subject = FilterSubject {
            body: view.body,
            essences: Some((view.old, Some(view.new))),
        };
        let mut selected: Vec<HandlerRef> = Vec::new();
        for handler in &self.changing {
            if !causes::changing_handler_applies(handler.kind(), handler.spec().options.deleted, view.cause) {
                continue;
            }
            if selected.iter().any(|h| h.id() == handler.id()) {
                continue;
            }
            let invocation = || self.changing_invocation(handler, view, first, &now);
            if self.matches(handler, &subject, true, Some(&invocation)).await? {
                selected.push(handler.clone());
            }
        }
        Ok(selected)
    }

    /// The object's progress for this cause: records of other causes are superseded,
    /// the selected handlers are added.
    fn load_state(&self, view: &CauseView<'_>, handlers: &[HandlerRef], now: Timestamp) -> State {
        let all_ids = self.changing.iter().map(HandlerRef::id);
        let (state, unreadable) = State::from_storage(&self.shared.progress, view.body, all_ids, now);
        for (id, error) in unreadable {
            tracing::warn!(target: "kopf.objects", "The progress record of {id:?} is unreadable; that handler starts over: {error}");
        }
        let reason = view.cause.reason;
        let selected_ids = handlers.iter().map(HandlerRef::id);
        let mut state = state.with_purpose(Some(reason.as_str()), selected_ids.clone());
        for (purpose, counts) in state.extras() {
            if counts.running > 0 {
                tracing::info!(target: "kopf.objects", "{} is superseded by {}: {} succeeded; {} failed; {} left to the moment.",
                    capitalize(&purpose), reason.title(), counts.success, counts.failure, counts.running);
            }
        }
        state
            .states
            .retain(|_, s| s.purpose.is_none() || s.purpose.as_deref() == Some(reason.as_str()));
        state.with_handlers(selected_ids, now)
    }

    /// Runs every handler that is due, in declaration order, all in this cycle, unless the
    /// batch gets slow: then what is done is persisted before the next one starts.
    async fn run_batch(
        &self,
        view: &CauseView<'_>,
        handlers: &[HandlerRef],
        state: &State,
        now: Timestamp,
        patch: &mut Patch,
    ) -> Batch {
        let mut batch = Batch::default();
        let started = Instant::now();
        for handler in handlers {
            let Some(handler_state) = state.states.get(handler.id()) else {
                continue;
            };
            if handler_state.finished() || handler_state.sleeping(&now) {
                continue;
            }
            if !batch.outcomes.is_empty() && started.elapsed() >= BATCH_WINDOW {
                batch.persist_first = true;
                break;
            }
            let (decision, settled) = self
                .run_changing_handler(view, handler, handler_state, now, patch)
                .await;
            match (&decision, &settled) {
                (Decision::Retry { .. }, Some(s)) if s.pending_delay.is_some() => {
                    tracing::debug!(target: "kopf.objects", "{} has unfinished sub-handlers. Will retry soon.", execution::handler_name(handler.kind(), handler.id()));
                }
                _ => execution::log_decision(handler.kind(), handler.id(), &decision),
            }
            let mut step = subhandling::step_outcome(decision);
            if let Some(s) = settled {
                step.subrefs = s.subrefs.clone();
                batch.children.push(s);
            }
            batch.outcomes.push((handler.id().to_owned(), step));
        }
        batch
    }

    /// One attempt of one changing handler (unless it is past its limits), its
    /// sub-handlers settled, its outcome collected into `patch`.
    async fn run_changing_handler(
        &self,
        view: &CauseView<'_>,
        handler: &HandlerRef,
        handler_state: &HandlerState,
        now: Timestamp,
        patch: &mut Patch,
    ) -> (Decision, Option<subhandling::Settled>) {
        let shared = &self.shared;
        let attempt = Attempt {
            retries: u32::try_from(handler_state.retries.max(0)).unwrap_or(u32::MAX),
            runtime: handler_state.runtime(&now),
        };
        if let Some(decision) = execution::precheck(handler.spec(), attempt) {
            return (decision, None);
        }
        let purpose = Some(view.cause.reason.as_str());
        let mut inv = self.changing_invocation(handler, view, attempt, &handler_state.started);
        let known = subhandling::known_children(
            &shared.progress,
            view.body,
            handler.id(),
            handler_state,
            purpose,
            now,
        );
        inv.subhandlers = subhandling::invocation_states(&known, &now);
        // A handler with a timeout is not waited for past it (Kopf only checks between
        // attempts): a hung call is abandoned and fails the handler.
        let timeout = handler
            .spec()
            .options
            .timeout
            .map(|timeout| seconds(timeout - attempt.runtime));
        let call = Call::new(handler, &inv).with_timeout(timeout);
        let outcome =
            super::queueing::release_slot_if_slow(invocation::invoke(&shared.metrics, &shared.plugins, call))
                .await;
        let default_backoff = shared.settings.execution.default_backoff;
        let mut decision = execution::conclude(
            &shared.metrics,
            handler.spec(),
            attempt,
            &outcome,
            default_backoff,
        );
        let mut settled = None;
        if !outcome.children.is_empty() {
            let s = subhandling::settle(
                handler.spec(),
                &outcome.children,
                known,
                purpose,
                Timestamp::now(),
                default_backoff,
                patch,
            );
            for (id, child_decision) in &s.decisions {
                if s.waiting.contains(id) {
                    tracing::debug!(target: "kopf.objects", "{} has unfinished sub-handlers. Will retry soon.", execution::handler_name(handler.kind(), id));
                } else {
                    execution::log_decision(handler.kind(), id, child_decision);
                }
                execution::count_retry(&shared.metrics, handler.kind(), id, child_decision);
            }
            decision = subhandling::parent_decision(decision, &s);
            settled = Some(s);
        }
        application::collect(patch, handler.id(), &outcome, decision == Decision::Success);
        application::collect_fns(patch, handler.plugin().index(), &outcome);
        (decision, settled)
    }

    fn changing_invocation(
        &self,
        handler: &HandlerRef,
        view: &CauseView<'_>,
        attempt: Attempt,
        started: &Timestamp,
    ) -> Invocation {
        let spec = handler.spec();
        let mut inv = self.base_invocation(view.body);
        inv.reason = Some(view.cause.reason.as_str().to_owned());
        inv.retry = attempt.retries;
        inv.runtime = attempt.runtime;
        inv.started = Some(started.to_string());
        inv.param = spec.options.param.clone();
        match spec.filters.field.as_deref() {
            Some(field) if spec.kind != HandlerKind::Resume => {
                let path = dicts::parse_field(field);
                let (old, new, diff) = causes::narrow_to_field(&path, view.old, Some(view.new), view.diff);
                inv.old = Some(old);
                inv.new = Some(new);
                inv.diff = Some(diffs::diff_to_json(&diff));
            }
            _ => {
                inv.old = Some(view.old.cloned().unwrap_or(Value::Null));
                inv.new = Some(view.new.clone());
                inv.diff = Some(diffs::diff_to_json(view.diff));
            }
        }
        inv
    }

    /// Ends the cycle: a finished cause purges its records and stores the diff-base (or,
    /// for a deletion, releases the finalizer); an unfinished one stores its progress.
    #[allow(clippy::too_many_arguments)]
    fn finish_cause(
        &self,
        memory: &mut ObjectMemory,
        view: &CauseView<'_>,
        handlers: &[HandlerRef],
        state: &State,
        persist_first: bool,
        now: Timestamp,
        patch: &mut Patch,
    ) -> Cycle {
        let shared = &self.shared;
        let body = view.body;
        let reason = view.cause.reason;
        if !state.done() {
            state.store(&shared.progress, body, patch);
            shared.progress.touch(body, patch, None);
            return Cycle {
                // Handlers left for after the persisting patch go on at once.
                again: persist_first,
                delay: state.delay(&now),
                ..Default::default()
            };
        }
        if !handlers.is_empty() {
            let counts = state.counts();
            tracing::info!(target: "kopf.objects", "{} is processed: {} succeeded; {} failed.",
                capitalize(reason.title()), counts.success, counts.failure);
        }
        state.purge(
            &shared.progress,
            body,
            patch,
            self.changing.iter().map(HandlerRef::id),
        );
        self.mark_handled(memory, body);
        if reason == Reason::Delete {
            if self.background.alive(body) {
                // Daemons and timers are still exiting: keep the finalizer, look again soon.
                return Cycle::recheck_in(BACKGROUND_EXIT_RECHECK);
            }
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
        } else if view.old != Some(view.new) {
            shared.diffbase.store(body, patch, view.new);
        }
        shared.progress.touch(body, patch, None);
        Cycle::default()
    }

    /// Whether any finalizer-requiring handler pre-matches the object.
    async fn needs_finalizer(&self, body: &Value) -> Result<bool, FilterError> {
        let subject = FilterSubject { body, essences: None };
        for handler in &self.finalizing {
            if self.matches(handler, &subject, false, None).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether any changing handler pre-matches the object.
    pub(super) async fn any_changing_prematches(&self, body: &Value) -> Result<bool, FilterError> {
        let subject = FilterSubject { body, essences: None };
        for handler in &self.changing {
            if self.matches(handler, &subject, false, None).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The text with its first letter in upper case (Kopf's cause titles start sentences).
pub(super) fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
