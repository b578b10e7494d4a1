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

use std::sync::Arc;

use kopf_abi::protocol::{HandlerKind, Invocation};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    daemons::Background,
    indexing,
    mailbox::coalesce,
    memory::ObjectMemory,
    owning::Owning,
    queueing::{ObjectProcessor, RawEvent, Verdict, Wakeup},
    shared::Shared,
    stopping::StopReason,
};
use crate::{
    actions::{
        application::{self, Failed},
        execution,
        invocation::{self, Call, FilterError},
    },
    intents::{
        causes,
        filters::{self, FilterMatch, FilterSubject},
    },
    plugin::HandlerRef,
    settings::OperatorSettings,
    structs::{
        backoff::{Delays, jittered},
        bodies::Body,
        dicts::{self, FieldPath},
        patches::Patch,
        references::Resource,
        selectors::LabelSelector,
    },
};

/// The processor of one served resource.
pub struct ResourceProcessor {
    pub(super) shared: Arc<Shared>,
    pub(super) resource: Resource,
    /// Changing handlers (resume, create, update, delete, field) of this resource.
    pub(super) changing: Vec<HandlerRef>,
    /// Event handlers of this resource.
    pub(super) watching: Vec<HandlerRef>,
    /// Handlers that need the finalizer (non-optional delete, daemons, timers).
    pub(super) finalizing: Vec<HandlerRef>,
    /// `field=` paths of all handlers, kept in the essence (Kopf's "extra fields").
    pub(super) extra_fields: Vec<FieldPath>,
    /// Daemons and timers of this resource's objects.
    pub(super) background: Background,
    /// Index handlers of this resource.
    pub(super) indexers: Vec<HandlerRef>,
    /// What all its handlers' label filters share: the server filters by it.
    label_selector: Option<LabelSelector>,
    /// Uids of objects fully handled once in this process: listings (after a relist or a
    /// pause) do not make them "initial" again, so resume handlers run once per process.
    handled: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Owners remembered for their children, children waking their owners (`owns`).
    pub owning: Owning,
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
        let label_selector = filters::common_label_selector(handlers.iter().map(|h| &h.spec().filters));
        Self {
            shared,
            resource,
            changing,
            watching,
            finalizing,
            extra_fields,
            background,
            indexers,
            label_selector,
            handled: Default::default(),
            owning: Owning::new(handlers),
        }
    }

    pub(super) fn finalizer(&self) -> &str {
        &self.shared.settings.persistence.finalizer
    }

    /// Evaluates a handler's filters; callbacks are asked from the plugin with `inv`, or
    /// with a plain invocation of the subject's body (built only when a callback is due:
    /// most filters need no body copy at all).
    pub(super) async fn matches(
        &self,
        handler: &HandlerRef,
        subject: &FilterSubject<'_>,
        full: bool,
        invocation: Option<&(dyn Fn() -> Invocation + Sync)>,
    ) -> Result<bool, FilterError> {
        let spec = handler.spec();
        let verdict = if full {
            filters::matches(&spec.filters, subject, causes::field_needs_change(spec.kind))
        } else {
            filters::prematch(&spec.filters, subject)
        };
        match verdict {
            FilterMatch::Match => Ok(true),
            FilterMatch::NoMatch => Ok(false),
            FilterMatch::NeedsCallback => {
                let inv = match invocation {
                    Some(make) => make(),
                    None => self.base_invocation(subject.body),
                };
                invocation::check_filters(&self.shared.plugins, handler, &inv).await
            }
        }
    }

    pub(super) fn base_invocation(&self, body: &Value) -> Invocation {
        Invocation {
            body: Some(body.clone()),
            resource: Some(self.resource.info()),
            ..Default::default()
        }
    }

    /// Event handlers, then the objects' owners (`owns`); `true`: nothing else to do.
    async fn run_watchers(&self, events: &[RawEvent], patch: &mut Patch) -> bool {
        for event in events {
            self.run_event_handlers(event, patch).await;
        }
        self.owning.wake(&self.shared, &self.resource, events).await
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
            match self
                .matches(handler, &subject, false, Some(&|| inv.clone()))
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                // The event is gone once this run ends: it is skipped for this handler,
                // loudly (nothing is released or admitted on a guess here).
                Err(error) => {
                    tracing::error!(target: "kopf.objects", "The event is not handled by {:?}: {error}", handler.id());
                    continue;
                }
            }
            inv.param = handler.spec().options.param.clone();
            let outcome = invocation::invoke(
                &self.shared.metrics,
                &self.shared.plugins,
                Call::new(handler, &inv),
            )
            .await;
            if let Some(error) = &outcome.error {
                tracing::warn!(target: "kopf.objects", "{} failed with an error (ignored): {}", execution::handler_name(handler.kind(), handler.id()), error.message);
            }
            application::collect(patch, handler.id(), &outcome, outcome.error.is_none());
            application::collect_fns(patch, handler.plugin().index(), &outcome);
        }
    }
}

/// Why an object's processing pauses.
pub(super) enum Stall {
    /// A request failed.
    Api(Failed),
    /// Filters could not decide.
    Filters(FilterError),
}

impl ObjectProcessor for ResourceProcessor {
    type Memory = ObjectMemory;

    fn observe(&self, stream: &str, item: &crate::clients::watching::WatchItem) {
        use crate::clients::watching::WatchItem;
        self.owning.observe(stream, item);
        if matches!(item, WatchItem::ListDone) {
            self.shared.readiness.listed(stream);
        }
        if self.indexers.is_empty() {
            return;
        }
        match item {
            WatchItem::Listed(body) => {
                if let Some(uid) = Body::new(body).uid() {
                    self.shared.indices.listed(stream, uid);
                }
            }
            WatchItem::ListDone => self.shared.indices.list_done(stream),
            _ => {}
        }
    }

    fn label_selector(&self) -> Option<LabelSelector> {
        self.label_selector.clone().filter(|_| !self.owning.has_owners())
    }

    fn known_version(memory: &ObjectMemory) -> Option<Box<str>> {
        memory.known_version.clone()
    }

    fn remember_version(memory: &mut ObjectMemory, version: Option<&str>) {
        memory.known_version = version.map(Box::from);
    }

    fn recover(&self, memory: &mut ObjectMemory, stub: Value) -> bool {
        // Re-read before anything is decided: the stub holds no more than the identity.
        memory.body = Some(stub);
        memory.stale = true;
        true
    }

    async fn settle(&self) {
        settle_plugin_calls(&self.shared.plugins, "pausing").await;
    }

    fn needs_every_event(&self) -> bool {
        // Event handlers see every event; indexers track listings event by event.
        !self.watching.is_empty() || !self.indexers.is_empty() || self.owning.has_owners()
    }

    fn stream_started(&self, stream: &str) {
        self.shared.readiness.stream_started(stream);
        if !self.indexers.is_empty() {
            self.shared.indices.stream_started(stream);
        }
    }

    fn stream_stopped(&self, stream: &str) {
        self.shared.readiness.stream_stopped(stream);
        if !self.indexers.is_empty() {
            self.shared.indices.stream_removed(stream);
        }
    }

    async fn process(&self, memory: &mut ObjectMemory, events: Vec<RawEvent>, wakeup: Wakeup) -> Verdict {
        if wakeup == Wakeup::Stopping {
            self.stop_background(memory).await;
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
            coalesce(&mut memory.pending);
            return Verdict {
                blocked_until: Some(self.shared.indices.subscribe()),
                ..Default::default()
            };
        }
        let mut events = std::mem::take(&mut memory.pending);
        let mut patch = Patch::new();
        if self.run_watchers(&events, &mut patch).await {
            return Verdict::default();
        }
        if let Some(last) = events.last_mut()
            && last.is_deletion()
        {
            let Some(fresh) = self.left_while_unwatched(last).await else {
                self.forget(memory, &last.body);
                return Verdict::default();
            };
            *last = RawEvent::new(Some(crate::clients::watching::EventType::Modified), fresh);
        }
        let mut newest_from_events = false;
        if let Some(last) = events.last() {
            if events.iter().any(|e| e.event_type.is_none())
                && let Some(uid) = Body::new(&last.body).uid()
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
            let (older, newer_than_awaited) = memory.place(last.resource_version());
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
                (Some((_, deadline)), false) if Instant::now() < *deadline && !newer_than_awaited => {
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
            body = match self.reread_stale(memory, body).await {
                Ok(fresh) => fresh,
                Err(verdict) => return verdict,
            };
        }
        self.adjust_background(memory, &body).await;

        self.run_cycles(memory, body, patch).await
    }
}

/// Up to this fraction of each throttle pause is added at random, so that objects failing
/// together (an API outage) do not retry in lockstep; never less than Kopf's delay.
const THROTTLE_JITTER: f64 = 0.2;

/// Waits (up to `SETTLE_TIMEOUT`, logged) until the handler calls about objects still
/// running in the plugins (abandoned by stopped workers) have returned, before `what`
/// ("pausing", "handing the objects over"): whoever takes over must never run a handler while
/// this replica's call of it still runs.
pub(crate) async fn settle_plugin_calls(plugins: &crate::plugin::PluginSet, what: &str) {
    let running = || plugins.running_object_calls();
    let mut left = running();
    if left == 0 {
        return;
    }
    tracing::info!(target: "kopf.reactor", "Waiting for {left} handler call(s) still running in the plugins before {what}.");
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while left > 0 && Instant::now() < deadline {
        tokio::time::sleep(SETTLE_POLL).await;
        left = running();
    }
    if left > 0 {
        tracing::warn!(target: "kopf.reactor", "Still {left} handler call(s) running in the plugins after {}s; {what} anyway.", SETTLE_TIMEOUT.as_secs());
    } else {
        tracing::info!(target: "kopf.reactor", "The handler calls still running have returned.");
    }
}

/// How long a pause (or an exit with a Lease) waits for handler calls still running in the plugins.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often it looks.
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The throttle's pause after `errors` failures in a row: Kopf's `queueing.error_delays`
/// (or the server's Retry-After), and that plus its jitter.
fn throttle_pause(
    settings: &OperatorSettings,
    errors: usize,
    why: &Stall,
) -> (std::time::Duration, std::time::Duration) {
    let base = Delays::from_seconds(&settings.queueing.error_delays).after(errors as u32);
    let base = match why {
        Stall::Api(failed) => failed
            .error
            .retry_delay(base, settings.networking.enforce_retry_after),
        Stall::Filters(_) => base,
    };
    (base, jittered(base, THROTTLE_JITTER))
}

impl ResourceProcessor {
    /// With a label selector, an object missing from a re-listing may live on, having left
    /// the selection while the watch was down: then its fresh body (processed as changed,
    /// so that its finalizer comes off); `None` when it is gone (or cannot be read).
    async fn left_while_unwatched(&self, event: &RawEvent) -> Option<Value> {
        let selector = self.label_selector.as_ref().filter(|_| event.vanished)?;
        match application::reread(&self.shared.client, &self.resource, &event.body).await {
            Ok(Some(fresh)) if Body::new(&fresh).uid() == Body::new(&event.body).uid() => {
                (!selector.matches(&fresh)).then_some(fresh)
            }
            Ok(_) => None,
            Err(failed) => {
                tracing::warn!(target: "kopf.objects", "Missing from the listing, and cannot be re-read ({}): forgotten; a finalizer it still has stays until it matches the label selector {selector} again.", failed.error);
                None
            }
        }
    }

    /// The object is gone: nothing of it is kept (its daemons, its plugins' memos).
    fn forget(&self, memory: &mut ObjectMemory, body: &Value) {
        tracing::debug!(target: "kopf.objects", "Deleted, really.");
        if let Some(uid) = Body::new(body).uid() {
            self.handled.lock().remove(uid);
            self.shared.plugins.forget_object(uid);
        }
        self.background.forget(body);
        *memory = ObjectMemory::default();
    }

    /// Stops the object's daemons and timers: the operator pauses or exits.
    async fn stop_background(&self, memory: &ObjectMemory) {
        if let Some(uid) = &memory.uid {
            let reason = if self.shared.exiting.is_cancelled() {
                StopReason::OperatorExiting
            } else {
                StopReason::OperatorPausing
            };
            let stub = json!({"metadata": {"uid": uid}});
            self.background.stop_object(&stub, reason).await;
        }
    }

    /// Re-reads a body that may be older than the object (after a failed request); the
    /// verdict instead when the object is gone or the read failed (throttled like a failed
    /// patch: a refused GET names the verb and the resource; the body stays stale).
    async fn reread_stale(&self, memory: &mut ObjectMemory, body: Value) -> Result<Value, Verdict> {
        if memory.errors >= 2 {
            // Each failure is logged as it happens; this says the object is still stuck.
            tracing::warn!(target: "kopf.objects", "Re-reading the object again after {} failed requests in a row.", memory.errors);
        }
        match application::reread(&self.shared.client, &self.resource, &body).await {
            Ok(Some(fresh)) => {
                memory.stale = false;
                memory.remember_version(&fresh);
                Ok(fresh)
            }
            Ok(None) => {
                *memory = ObjectMemory::default();
                Err(Verdict::default())
            }
            // Throttled with `queueing.error_delays` and logged, each time (issue 18 #10).
            Err(failed) => Err(self.throttle(memory, body, &Stall::Api(failed), true)),
        }
    }

    /// Pauses the object's processing after a failed patch or re-read, or filters that
    /// could not decide: longer after each failure in a row (`queueing.error_delays`, or the
    /// server's Retry-After); `stale` when `body` may be older than the object, to be
    /// re-read before the retry.
    pub(super) fn throttle(
        &self,
        memory: &mut ObjectMemory,
        body: Value,
        why: &Stall,
        stale: bool,
    ) -> Verdict {
        let (base, pause) = throttle_pause(&self.shared.settings, memory.errors, why);
        let account = match why {
            Stall::Api(failed) => failed.describe(&self.resource),
            Stall::Filters(error) => format!("Nothing is decided: {error}"),
        };
        memory.errors += 1;
        tracing::error!(
            target: "kopf.objects",
            "{account}; throttling for {}s (+{:.2}s of jitter).",
            base.as_secs_f64(),
            (pause - base).as_secs_f64()
        );
        memory.body = Some(body);
        memory.stale = stale;
        // Remembered (not only returned): an echo of an earlier successful patch may
        // arrive before the wake-up and must not make us forget it.
        memory.retry_at = Some(Instant::now() + pause);
        Verdict {
            wake_at: memory.retry_at,
            ..Default::default()
        }
    }

    pub(super) fn idle_verdict(&self, memory: &mut ObjectMemory) -> Verdict {
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
            match self.matches(indexer, &subject, false, None).await {
                Ok(true) => {}
                Ok(false) => {
                    self.shared.indices.remove(indexer.id(), &object);
                    continue;
                }
                // Undecided: the index keeps what it had for the object.
                Err(error) => {
                    tracing::error!(target: "kopf.objects", "The index {:?} is not updated: {error}", indexer.id());
                    continue;
                }
            }
            let mut inv = self.base_invocation(body);
            inv.param = indexer.spec().options.param.clone();
            let outcome = invocation::invoke(
                &self.shared.metrics,
                &self.shared.plugins,
                Call::new(indexer, &inv),
            )
            .await;
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
            && let Some(uid) = Body::new(body).uid()
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
        let uid = Body::new(body).uid();
        if memory.uid.as_deref() != uid {
            memory.uid = uid.map(str::to_owned);
        }
        let subject = FilterSubject { body, essences: None };
        let mut matching = Vec::new();
        for handler in self.background.handlers() {
            match self.matches(handler, &subject, false, None).await {
                Ok(true) => matching.push(handler.id().to_owned()),
                Ok(false) => {}
                // Undecided: no daemon or timer is started or stopped on a guess.
                Err(error) => {
                    tracing::error!(target: "kopf.objects", "Daemons and timers are left as they are: {error}");
                    return;
                }
            }
        }
        self.background.adjust(body, &matching, changed);
    }

    pub(super) fn mark_handled(&self, memory: &mut ObjectMemory, body: &Value) {
        memory.initial = false;
        if let Some(uid) = Body::new(body).uid() {
            let mut handled = self.handled.lock();
            if !handled.contains(uid) {
                handled.insert(uid.to_owned());
            }
        }
    }
}

#[cfg(test)]
#[path = "processing_tests.rs"]
mod tests;
