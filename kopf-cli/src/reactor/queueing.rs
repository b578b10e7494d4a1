//! Multiplexing one watch stream into per-object workers.
//!
//! As in Kopf (`kopf/_core/reactor/queueing.py`): events are keyed by the object's
//! uid, each object gets one worker task (serial per object, parallel across objects),
//! and a worker exits after an idle timeout. Differences: a worker with a scheduled
//! retry stays alive and wakes itself up in memory (Kopf writes a `touch-dummy`
//! annotation to provoke an event); objects that vanished during a re-list get a
//! synthetic `DELETED` event; and the number of workers processing at once is bounded
//! by a semaphore shared by all watchers.

use std::{
    cell::RefCell,
    cmp::Ordering,
    collections::{HashMap, HashSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use serde_json::Value;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
    time::Instant,
};

use super::mailbox::Mailbox;
pub use super::mailbox::RawEvent;
use crate::clients::watching::{EventType, WatchItem};
use crate::signals::shards::Ownership;
use tracing::Instrument as _;

use crate::observability::{metrics::Metrics, objects::object_span};
use crate::structs::{backoff::sleep_until_opt, dicts, versions};

/// How long a call may keep its worker slot (see [`release_slot_if_slow`]).
pub const SLOT_HOLD_LIMIT: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// The worker slot held by the processing that runs in this task, if any. Set by each
    /// worker around its own processing future only, so it is per task, never shared
    /// between objects or operators (ARCHITECTURE.md, "Process globals").
    static SLOT: RefCell<WorkerSlot>;
}

/// A worker's place among those processing at once (`settings.queueing.worker_limit`).
struct WorkerSlot {
    limit: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

/// Awaits `call`; if it takes longer than [`SLOT_HOLD_LIMIT`], the processing that runs
/// it gives its worker slot back until it is done (then waits for a slot again). The
/// limit keeps the memory of objects in processing bounded during bursts, while a
/// handler that runs for minutes does not hold up other objects.
pub async fn release_slot_if_slow<F: Future>(call: F) -> F::Output {
    let mut call = std::pin::pin!(call);
    tokio::select! {
        biased;
        output = &mut call => return output,
        () = tokio::time::sleep(SLOT_HOLD_LIMIT) => {}
    }
    let released = SLOT
        .try_with(|slot| {
            let mut slot = slot.borrow_mut();
            slot.permit.take().map(|_| slot.limit.clone())
        })
        .ok()
        .flatten();
    let output = call.await;
    if let Some(limit) = released
        && let Ok(permit) = limit.acquire_owned().await
    {
        let _ = SLOT.try_with(|slot| slot.borrow_mut().permit = Some(permit));
    }
    output
}

/// Why a worker runs its processor now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// New events arrived.
    Events,
    /// A scheduled time came (a delayed retry, a timer).
    Scheduled,
    /// The operator is stopping: the last chance to flush.
    Stopping,
}

/// What the per-object processing decides after a run.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Run again at this time even if no event comes (delayed handlers).
    pub wake_at: Option<Instant>,
    /// Keep the worker (and its memory) alive although idle (daemons, timers).
    pub keep_alive: bool,
    /// Run again once this turns true (e.g. indices are ready), waiting without holding
    /// a worker slot.
    pub blocked_until: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The per-object logic a worker drives. One processor serves all objects of a watch.
pub trait ObjectProcessor: Send + Sync + 'static {
    /// Per-object memory kept by the worker between runs.
    type Memory: Default + Send + 'static;

    /// Processes `events` (in arrival order; empty on a scheduled wake-up) of one object.
    fn process(
        &self,
        memory: &mut Self::Memory,
        events: Vec<RawEvent>,
        wakeup: Wakeup,
    ) -> impl Future<Output = Verdict> + Send;

    /// Sees every item of a stream before it is dispatched (`stream` names the stream).
    fn observe(&self, _stream: &str, _item: &WatchItem) {}

    /// Whether [`process`](Self::process) must see every event; if not, an event
    /// queued for a busy object is replaced by a newer one (only the newest state
    /// matters for change detection), which keeps memory per busy object small.
    fn needs_every_event(&self) -> bool {
        true
    }

    /// The label selector its streams list and watch with (what all its handlers'
    /// label filters share); `None`: every object.
    fn label_selector(&self) -> Option<crate::structs::selectors::LabelSelector> {
        None
    }

    /// A stream of this processor starts for good (not after a pause).
    fn stream_started(&self, _stream: &str) {}

    /// A stream of this processor stops for good (not for a pause).
    fn stream_stopped(&self, _stream: &str) {}

    /// The newest resourceVersion the memory knows (from events, patch responses and
    /// re-reads): the multiplexer keeps it for the object's lifetime, beyond the worker.
    fn known_version(_memory: &Self::Memory) -> Option<Box<str>> {
        None
    }

    /// A new worker's memory starts with the newest resourceVersion known of the object.
    fn remember_version(_memory: &mut Self::Memory, _version: Option<&str>) {}

    /// The streams stopped for a pause: waits (bounded) until the handler calls their
    /// workers abandoned have returned, so that whoever takes over never runs a handler
    /// while this replica's call of it still runs.
    fn settle(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The object's previous worker panicked: prepares the memory to carry on from
    /// `stub` (the object's minimal body); `true` to run at once.
    fn recover(&self, _memory: &mut Self::Memory, _stub: Value) -> bool {
        false
    }
}

/// Queueing settings (Kopf's `settings.queueing`).
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// An idle worker exits after this long.
    pub idle_timeout: Duration,
    /// How long workers may take to finish after the stream stops.
    pub exit_timeout: Duration,
    /// The objects this replica owns (`--sharding`; all by default).
    pub shards: crate::signals::shards::ShardGate,
    /// The operator's metrics (queue depths, objects watched).
    pub metrics: Metrics,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(5),
            exit_timeout: Duration::from_secs(2),
            shards: crate::signals::shards::ShardGate::default(),
            metrics: Metrics::default(),
        }
    }
}

/// The identity of an object within one watch stream.
fn object_key(body: &Value) -> Option<String> {
    let text = |path: &[&str]| dicts::resolve(body, path).and_then(Value::as_str);
    if let Some(uid) = text(&["metadata", "uid"]).filter(|u| !u.is_empty()) {
        return Some(uid.to_owned());
    }
    // Kopf's fallback for objects without a uid.
    let name = text(&["metadata", "name"])?;
    Some(format!(
        "{}//{}//{}//{}//{}",
        text(&["kind"]).unwrap_or_default(),
        text(&["apiVersion"]).unwrap_or_default(),
        name,
        text(&["metadata", "namespace"]).unwrap_or_default(),
        text(&["metadata", "creationTimestamp"]).unwrap_or_default()
    ))
}

struct Entry {
    mailbox: Arc<Mailbox>,
    /// What a synthetic deletion needs, should the object vanish.
    stub: Stub,
}

/// The few fields a synthetic deletion event needs of an object: a handful of short
/// strings (~200 bytes) rather than a `Value` tree (~1.3 KB) per watched object.
#[derive(Debug, Clone, Default, PartialEq)]
struct Stub {
    api_version: Option<Box<str>>,
    kind: Option<Box<str>>,
    name: Option<Box<str>>,
    namespace: Option<Box<str>>,
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
}

impl Stub {
    fn of(body: &Value) -> Self {
        let text = |path: &[&str]| dicts::resolve(body, path).and_then(Value::as_str).map(Box::from);
        Self {
            api_version: text(&["apiVersion"]),
            kind: text(&["kind"]),
            name: text(&["metadata", "name"]),
            namespace: text(&["metadata", "namespace"]),
            uid: text(&["metadata", "uid"]),
            resource_version: text(&["metadata", "resourceVersion"]),
        }
    }

    /// Follows a newer version of the same object (only the resourceVersion changes).
    fn update(&mut self, body: &Value) {
        let version = dicts::resolve(body, &["metadata", "resourceVersion"]).and_then(Value::as_str);
        if version != self.resource_version.as_deref() {
            self.resource_version = version.map(Box::from);
        }
    }

    /// A minimal body: `apiVersion`, `kind` and `metadata` (name, namespace, uid,
    /// resourceVersion), as far as known.
    fn to_body(&self) -> Value {
        let pairs = |fields: &[(&str, &Option<Box<str>>)]| {
            fields
                .iter()
                .filter_map(|(key, value)| Some(((*key).to_owned(), Value::from(&**value.as_ref()?))))
                .collect::<serde_json::Map<_, _>>()
        };
        let meta = pairs(&[
            ("name", &self.name),
            ("namespace", &self.namespace),
            ("uid", &self.uid),
            ("resourceVersion", &self.resource_version),
        ]);
        let mut body = pairs(&[("apiVersion", &self.api_version), ("kind", &self.kind)]);
        body.insert("metadata".into(), Value::Object(meta));
        Value::Object(body)
    }
}

/// Consumes a watch stream and dispatches its events to per-object workers until the
/// stream ends. Then lets the workers finish (bounded by `exit_timeout`).
pub async fn multiplex<P: ObjectProcessor>(
    stream: String,
    mut items: mpsc::Receiver<WatchItem>,
    processor: Arc<P>,
    settings: QueueSettings,
    limit: Arc<Semaphore>,
) {
    let mut mux = Multiplexer {
        stream,
        processor,
        settings,
        limit,
        entries: HashMap::new(),
        workers: JoinSet::new(),
        tasks: HashMap::new(),
        versions: HashMap::new(),
        nameless: HashSet::new(),
        listed: None,
    };
    let mut depth: i64 = 0;
    // `--sharding`: what arrived, and whose it was.
    let (mut received, mut mine, mut theirs) = (0_u64, 0_u64, 0_u64);
    loop {
        let now = i64::try_from(mux.workers.len()).unwrap_or(i64::MAX);
        if now != depth {
            mux.settings.metrics.queue_depth(&mux.stream, now - depth);
            depth = now;
        }
        tokio::select! {
            item = items.recv() => {
                let Some(item) = item else { break };
                // `--sharding`: other replicas' objects never enter (nor the indices).
                if let WatchItem::Listed(body) | WatchItem::Event(_, body) = &item {
                    received += 1;
                    match mux.settings.shards.ownership(body) {
                        Ownership::Mine => mine += 1,
                        Ownership::Theirs => { theirs += 1; continue; }
                        Ownership::Unknown => continue,
                    }
                }
                mux.receive(item);
            }
            Some(done) = mux.workers.join_next_with_id(), if !mux.workers.is_empty() => mux.exited(done),
        }
    }
    if mux.settings.shards.is_enabled() {
        tracing::debug!(target: "kopf.reactor", "Stream {}: {received} objects and events received, {mine} of them this replica's, {theirs} other replicas'.", mux.stream);
    }
    // The stream is over (pause or exit): close the queues and let workers finish.
    mux.settings.metrics.queue_depth(&mux.stream, -depth);
    for (_, entry) in mux.entries.drain() {
        entry.mailbox.end();
    }
    let drain = async { while mux.workers.join_next().await.is_some() {} };
    if tokio::time::timeout(mux.settings.exit_timeout, drain)
        .await
        .is_err()
    {
        mux.workers.abort_all();
    }
}

/// What a worker leaves behind when it exits.
struct WorkerExit {
    key: String,
    /// The newest resourceVersion its memory knew (patch responses and re-reads too).
    known_version: Option<Box<str>>,
}

/// How a worker starts.
#[derive(Default)]
struct Start {
    /// The newest resourceVersion known of the object (its memory starts with it).
    known_version: Option<Box<str>>,
    /// The previous worker panicked: the object's minimal body, to recover from.
    recover: Option<Value>,
}

/// The state of one [`multiplex`]: per-object workers and what outlives them.
struct Multiplexer<P: ObjectProcessor> {
    stream: String,
    processor: Arc<P>,
    settings: QueueSettings,
    limit: Arc<Semaphore>,
    entries: HashMap<String, Entry>,
    workers: JoinSet<WorkerExit>,
    /// The object of each worker task (to restart a worker that panicked).
    tasks: HashMap<tokio::task::Id, String>,
    /// The newest resourceVersion known of each object, for the object's lifetime (not
    /// only its worker's): a worker started after an idle exit never goes back to an
    /// older state, however late it comes. One short string per object.
    versions: HashMap<String, Box<str>>,
    /// Objects without a name already reported (each is logged once, then skipped).
    nameless: HashSet<String>,
    /// The keys of a listing in progress.
    listed: Option<HashSet<String>>,
}

impl<P: ObjectProcessor> Multiplexer<P> {
    fn receive(&mut self, item: WatchItem) {
        self.processor.observe(&self.stream, &item);
        match item {
            WatchItem::ListStarted => self.listed = Some(HashSet::new()),
            WatchItem::ListDone => self.list_done(),
            WatchItem::Listed(body) => {
                if let Some(key) = self.key_of(&body) {
                    if let Some(seen) = self.listed.as_mut() {
                        seen.insert(key.clone());
                    }
                    self.dispatch(key, RawEvent::new(None, body));
                }
            }
            WatchItem::Event(kind, body) => {
                match kind {
                    EventType::Added => self.settings.metrics.objects_watched(&self.stream, 1),
                    EventType::Deleted => self.settings.metrics.objects_watched(&self.stream, -1),
                    EventType::Modified => {}
                }
                if let Some(key) = self.key_of(&body) {
                    self.dispatch(key, RawEvent::new(Some(kind), body));
                }
            }
        }
    }

    /// Objects we knew but the fresh listing lacks were deleted meanwhile.
    fn list_done(&mut self) {
        let Some(seen) = self.listed.take() else { return };
        self.settings
            .metrics
            .set_objects_watched(&self.stream, i64::try_from(seen.len()).unwrap_or(i64::MAX));
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(entry) = self.entries.get(&key) {
                let event = RawEvent::vanished(entry.stub.to_body());
                self.dispatch(key, event);
            }
        }
        let entries = &self.entries;
        self.versions
            .retain(|key, _| seen.contains(key) || entries.contains_key(key));
    }

    /// The object's key; `None` (logged once per object) for an object without a name,
    /// which could be neither patched nor re-read.
    fn key_of(&mut self, body: &Value) -> Option<String> {
        let named = dicts::resolve(body, &["metadata", "name"])
            .and_then(Value::as_str)
            .is_some_and(|name| !name.is_empty());
        if named {
            return object_key(body);
        }
        let uid = dicts::resolve(body, &["metadata", "uid"])
            .and_then(Value::as_str)
            .unwrap_or_default();
        if self.nameless.insert(uid.to_owned()) {
            tracing::warn!(
                target: "kopf.objects",
                "An object of {} without metadata.name (uid {uid:?}) is skipped: it can be neither patched nor re-read.",
                self.stream
            );
        }
        None
    }

    fn dispatch(&mut self, key: String, event: RawEvent) {
        self.note_version(&key, event.resource_version());
        if event.is_deletion() {
            self.versions.remove(&key);
        }
        let coalesce = !self.processor.needs_every_event();
        // No free slot: the event will wait (a burst), so it waits small.
        let compact = self.limit.available_permits() == 0;
        let event = match self.entries.get_mut(&key) {
            Some(entry) => {
                entry.stub.update(&event.body);
                match entry.mailbox.push(event, coalesce, compact) {
                    Ok(()) => return,
                    // The worker exited just now; start a new one with this event.
                    Err(event) => event,
                }
            }
            None => event,
        };
        let mailbox = Arc::new(Mailbox::default());
        let stub = Stub::of(&event.body);
        // Lines logged while the object is processed name it (see `observability::objects`).
        let span = object_span(&event.body);
        // Cannot fail: the mailbox is fresh.
        let _ = mailbox.push(event, coalesce, compact);
        self.entries.insert(
            key.clone(),
            Entry {
                mailbox: mailbox.clone(),
                stub,
            },
        );
        let start = Start {
            known_version: self.versions.get(&key).cloned(),
            recover: None,
        };
        self.spawn(key, mailbox, start, span);
    }

    fn spawn(&mut self, key: String, mailbox: Arc<Mailbox>, start: Start, span: tracing::Span) {
        let worker = worker(
            key.clone(),
            mailbox,
            self.processor.clone(),
            self.settings.clone(),
            self.limit.clone(),
            start,
        );
        let task = self.workers.spawn(worker.instrument(span));
        self.tasks.insert(task.id(), key);
    }

    /// Keeps the newer of the known version and `version` (or `version` when they are not
    /// comparable: opaque versions are never used to skip anything).
    fn note_version(&mut self, key: &str, version: Option<&str>) {
        let Some(version) = version else { return };
        match self.versions.get_mut(key) {
            Some(known) if versions::compare(version, known).is_some_and(Ordering::is_le) => {}
            Some(known) => *known = version.into(),
            None => {
                self.versions.insert(key.to_owned(), version.into());
            }
        }
    }

    fn exited(&mut self, done: Result<(tokio::task::Id, WorkerExit), tokio::task::JoinError>) {
        let exit = match done {
            Ok((id, exit)) => {
                self.tasks.remove(&id);
                exit
            }
            Err(error) => {
                let key = self.tasks.remove(&error.id());
                if let Some(key) = key
                    && error.is_panic()
                {
                    self.restart(key);
                }
                return;
            }
        };
        // A deleted object's version is forgotten with it (its deletion removed it).
        if self.versions.contains_key(&exit.key) {
            self.note_version(&exit.key, exit.known_version.as_deref());
        }
        // The worker closed its mailbox before exiting; a later event for the
        // object starts a new one (unless one was started meanwhile).
        if self
            .entries
            .get(&exit.key)
            .is_some_and(|entry| entry.mailbox.is_closed())
        {
            self.entries.remove(&exit.key);
        }
    }

    /// A worker panicked (a bug): its object's processing must not end silently. A new
    /// worker takes over its mailbox and recovers from the object's minimal body.
    fn restart(&mut self, key: String) {
        let Some(entry) = self.entries.get(&key) else {
            return;
        };
        let body = entry.stub.to_body();
        let span = object_span(&body);
        span.in_scope(|| {
            tracing::error!(
                target: "kopf.objects",
                "The processing of the object panicked; it restarts from a fresh read of the object."
            );
        });
        let mailbox = entry.mailbox.clone();
        mailbox.done();
        let start = Start {
            known_version: self.versions.get(&key).cloned(),
            recover: Some(body),
        };
        self.spawn(key, mailbox, start, span);
    }
}

async fn worker<P: ObjectProcessor>(
    key: String,
    mailbox: Arc<Mailbox>,
    processor: Arc<P>,
    settings: QueueSettings,
    limit: Arc<Semaphore>,
    start: Start,
) -> WorkerExit {
    let mut memory = P::Memory::default();
    P::remember_version(&mut memory, start.known_version.as_deref());
    let mut verdict = Verdict::default();
    if let Some(stub) = start.recover {
        verdict.wake_at = processor.recover(&mut memory, stub).then(Instant::now);
    }
    let exit = |memory: &P::Memory| WorkerExit {
        key: key.clone(),
        known_version: P::known_version(memory),
    };
    loop {
        let idle_deadline = Instant::now() + settings.idle_timeout;
        // Once the stream is over, only the queue's remainder and the flush are left.
        let wakeup = if mailbox.ended() {
            Wakeup::Events
        } else {
            tokio::select! {
            biased;
            () = mailbox.notify.notified() => Wakeup::Events,
            _ = sleep_until_opt(verdict.wake_at) => Wakeup::Scheduled,
            _ = wait_unblocked(verdict.blocked_until.clone()) => Wakeup::Scheduled,
            _ = tokio::time::sleep_until(idle_deadline),
                if verdict.wake_at.is_none() && !verdict.keep_alive && verdict.blocked_until.is_none() => {
                // Idle: the multiplexer forgets the object, unless an event slipped in.
                if mailbox.try_close() {
                    return exit(&memory);
                }
                Wakeup::Events
            }
            }
        };
        if wakeup == Wakeup::Events && mailbox.is_empty() {
            if mailbox.ended() {
                // The stream stopped: flush once, then exit.
                let _permit = limit.acquire().await;
                Box::pin(processor.process(&mut memory, Vec::new(), Wakeup::Stopping)).await;
                mailbox.try_close();
                return exit(&memory);
            }
            continue;
        }
        let Ok(permit) = limit.clone().acquire_owned().await else {
            mailbox.try_close();
            return exit(&memory);
        };
        // Taken only now, with a slot: while waiting for one, the events stay compact
        // in the mailbox (and newer ones replace older ones there). The processor sees
        // all events, in order.
        let events = mailbox.take();
        let deleted = events.last().is_some_and(RawEvent::is_deletion);
        let slot = RefCell::new(WorkerSlot {
            limit: limit.clone(),
            permit: Some(permit),
        });
        // Boxed: the processing state exists only while processing, so an idle worker
        // stays small.
        verdict = SLOT
            .scope(slot, Box::pin(processor.process(&mut memory, events, wakeup)))
            .await;
        mailbox.done();
        if deleted && !verdict.keep_alive && mailbox.try_close() {
            return exit(&memory);
        }
    }
}

async fn wait_unblocked(blocker: Option<tokio::sync::watch::Receiver<bool>>) {
    match blocker {
        Some(mut blocker) => {
            if blocker.wait_for(|ready| *ready).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "queueing_tests.rs"]
mod tests;
