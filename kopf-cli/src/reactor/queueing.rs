//! Multiplexing one watch stream into per-object workers.
//!
//! As in Kopf (`kopf/_core/reactor/queueing.py`): events are keyed by the object's
//! uid, each object gets one worker task (serial per object, parallel across objects),
//! and a worker exits after an idle timeout. Differences: a worker with a scheduled
//! retry stays alive and wakes itself up in memory (Kopf writes a `touch-dummy`
//! annotation to provoke an event); objects that vanished during a re-list get a
//! synthetic `DELETED` event; and the number of workers processing at once is bounded
//! by a semaphore shared by all watchers.

use std::{cell::RefCell, collections::HashMap, future::Future, sync::Arc, time::Duration};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
    time::Instant,
};

use crate::clients::watching::{EventType, WatchItem};
use tracing::Instrument as _;

use crate::observability::{metrics, objects::object_span};
use crate::structs::{backoff::sleep_until_opt, dicts};

/// How long a call may keep its worker slot (see [`release_slot_if_slow`]).
pub const SLOT_HOLD_LIMIT: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// The worker slot held by the processing that runs in this task, if any.
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

/// One raw event of one object, as Kopf's handlers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// `None` for objects from a listing; else the watch event type.
    pub event_type: Option<EventType>,
    /// The object body.
    pub body: Value,
    /// The resource versions of older events this one replaced while they were queued
    /// (only for processors that do not need every event, see
    /// [`ObjectProcessor::needs_every_event`]); oldest first.
    pub superseded: Vec<String>,
}

impl RawEvent {
    /// An event as it came from the stream.
    pub fn new(event_type: Option<EventType>, body: Value) -> Self {
        Self {
            event_type,
            body,
            superseded: Vec::new(),
        }
    }

    /// Whether this event says the object is gone.
    pub fn is_deletion(&self) -> bool {
        self.event_type == Some(EventType::Deleted)
    }

    /// The body's `metadata.resourceVersion`.
    pub fn resource_version(&self) -> Option<&str> {
        dicts::resolve(&self.body, &["metadata", "resourceVersion"]).and_then(Value::as_str)
    }

    /// Whether this event or one it replaced carries this resource version.
    pub fn has_seen(&self, resource_version: &str) -> bool {
        self.resource_version() == Some(resource_version)
            || self.superseded.iter().any(|rv| rv == resource_version)
    }

    /// Replaces `older` (queued, not processed yet) with this newer event: only the
    /// newest body is kept, so a busy object queues one body, not one per event.
    fn supersede(&mut self, older: Queued) {
        let older_version = older.resource_version().map(str::to_owned);
        let older = older.event;
        let mut superseded = older.superseded;
        superseded.extend(older_version);
        superseded.append(&mut self.superseded);
        self.superseded = superseded;
        // A listed object stays "listed" (that decides about resuming) when a watch
        // event replaces it before processing.
        if older.event_type.is_none() && self.event_type == Some(EventType::Modified) {
            self.event_type = None;
        }
    }
}

/// An event in a mailbox. While no worker slot is free (a burst of objects), bodies wait
/// as JSON text: a `Value` tree takes several times the memory of its text.
struct Queued {
    /// The event; its body is `Null` while the text holds it.
    event: RawEvent,
    compact: Option<CompactBody>,
}

struct CompactBody {
    json: Box<str>,
    resource_version: Option<Box<str>>,
}

impl Queued {
    fn new(mut event: RawEvent, compact: bool) -> Self {
        if !compact {
            return Self { event, compact: None };
        }
        let resource_version = event.resource_version().map(Box::from);
        let json = event.body.take().to_string().into_boxed_str();
        Self {
            event,
            compact: Some(CompactBody {
                json,
                resource_version,
            }),
        }
    }

    fn resource_version(&self) -> Option<&str> {
        match &self.compact {
            Some(compact) => compact.resource_version.as_deref(),
            None => self.event.resource_version(),
        }
    }

    fn into_event(self) -> RawEvent {
        let mut event = self.event;
        if let Some(compact) = self.compact {
            // Our own serialisation of a `Value`: it parses back (floats exactly, with
            // serde_json's `float_roundtrip`).
            match serde_json::from_str(&compact.json) {
                Ok(body) => event.body = body,
                Err(error) => tracing::error!("A queued event's body does not parse back: {error}"),
            }
        }
        event
    }
}

/// The queue between the multiplexer and one object's worker. Unlike a channel, it
/// can replace a queued event with a newer one (see [`RawEvent::supersede`]).
#[derive(Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    notify: Notify,
}

#[derive(Default)]
struct MailboxState {
    events: Vec<Queued>,
    /// The worker has exited; pushes must start a new worker.
    closed: bool,
    /// The stream is over: the worker flushes and exits once the queue is empty.
    ended: bool,
    /// The worker is processing (it holds a slot): its events will be taken soon, so
    /// they are not worth compacting (the echoes of its own patches above all).
    busy: bool,
}

impl Mailbox {
    /// Queues an event (as text if `compact`); gives it back if the worker has exited.
    fn push(&self, mut event: RawEvent, coalesce: bool, compact: bool) -> Result<(), RawEvent> {
        {
            let mut state = self.state.lock();
            if state.closed {
                return Err(event);
            }
            if coalesce && let Some(older) = state.events.pop_if(|older| !older.event.is_deletion()) {
                event.supersede(older);
            }
            let compact = compact && !state.busy;
            state.events.push(Queued::new(event, compact));
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Takes the queued events; the worker is busy until [`Mailbox::done`].
    fn take(&self) -> Vec<RawEvent> {
        let queued = {
            let mut state = self.state.lock();
            state.busy = true;
            std::mem::take(&mut state.events)
        };
        queued.into_iter().map(Queued::into_event).collect()
    }

    /// The worker finished processing what it took.
    fn done(&self) {
        self.state.lock().busy = false;
    }

    fn is_empty(&self) -> bool {
        self.state.lock().events.is_empty()
    }

    fn end(&self) {
        self.state.lock().ended = true;
        self.notify.notify_one();
    }

    fn ended(&self) -> bool {
        self.state.lock().ended
    }

    /// Closes the mailbox if nothing is queued (the worker may exit); `false` if events
    /// slipped in meanwhile.
    fn try_close(&self) -> bool {
        let mut state = self.state.lock();
        if state.events.is_empty() {
            state.closed = true;
        }
        state.closed
    }

    fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
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

    /// A stream of this processor starts for good (not after a pause).
    fn stream_started(&self, _stream: &str) {}

    /// A stream of this processor stops for good (not for a pause).
    fn stream_stopped(&self, _stream: &str) {}
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
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(5),
            exit_timeout: Duration::from_secs(2),
            shards: crate::signals::shards::ShardGate::default(),
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
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut workers: JoinSet<String> = JoinSet::new();
    let mut listed: Option<std::collections::HashSet<String>> = None;
    let mut depth: i64 = 0;
    loop {
        let now = i64::try_from(workers.len()).unwrap_or(i64::MAX);
        if now != depth {
            metrics::queue_depth(&stream, now - depth);
            depth = now;
        }
        tokio::select! {
            item = items.recv() => {
                let Some(item) = item else { break };
                // `--sharding`: other replicas' objects never enter (nor the indices).
                if let WatchItem::Listed(body) | WatchItem::Event(_, body) = &item
                    && !settings.shards.owns(body) { continue; }
                processor.observe(&stream, &item);
                match item {
                    WatchItem::ListStarted => listed = Some(Default::default()),
                    WatchItem::ListDone => {
                        // Objects we knew but the fresh listing lacks were deleted meanwhile.
                        if let Some(seen) = listed.take() {
                            metrics::set_objects_watched(&stream, i64::try_from(seen.len()).unwrap_or(i64::MAX));
                            let gone: Vec<String> = entries.keys().filter(|k| !seen.contains(*k)).cloned().collect();
                            for key in gone {
                                if let Some(entry) = entries.get(&key) {
                                    let event = RawEvent::new(Some(EventType::Deleted), entry.stub.to_body());
                                    dispatch(&mut entries, &mut workers, &processor, &settings, &limit, key, event);
                                }
                            }
                        }
                    }
                    WatchItem::Listed(body) => {
                        if let Some(key) = object_key(&body) {
                            if let Some(seen) = listed.as_mut() {
                                seen.insert(key.clone());
                            }
                            let event = RawEvent::new(None, body);
                            dispatch(&mut entries, &mut workers, &processor, &settings, &limit, key, event);
                        }
                    }
                    WatchItem::Event(kind, body) => {
                        match kind {
                            EventType::Added => metrics::objects_watched(&stream, 1),
                            EventType::Deleted => metrics::objects_watched(&stream, -1),
                            EventType::Modified => {}
                        }
                        if let Some(key) = object_key(&body) {
                            let event = RawEvent::new(Some(kind), body);
                            dispatch(&mut entries, &mut workers, &processor, &settings, &limit, key, event);
                        }
                    }
                }
            }
            Some(done) = workers.join_next(), if !workers.is_empty() => {
                // The worker closed its mailbox before exiting; a later event for the
                // object starts a new one (unless one was started meanwhile).
                if let Ok(key) = done
                    && entries.get(&key).is_some_and(|entry| entry.mailbox.is_closed())
                {
                    entries.remove(&key);
                }
            }
        }
    }
    // The stream is over (pause or exit): close the queues and let workers finish.
    metrics::queue_depth(&stream, -depth);
    for (_, entry) in entries.drain() {
        entry.mailbox.end();
    }
    let drain = async { while workers.join_next().await.is_some() {} };
    if tokio::time::timeout(settings.exit_timeout, drain).await.is_err() {
        workers.abort_all();
    }
}

fn dispatch<P: ObjectProcessor>(
    entries: &mut HashMap<String, Entry>,
    workers: &mut JoinSet<String>,
    processor: &Arc<P>,
    settings: &QueueSettings,
    limit: &Arc<Semaphore>,
    key: String,
    event: RawEvent,
) {
    let coalesce = !processor.needs_every_event();
    // No free slot: the event will wait (a burst), so it waits small.
    let compact = limit.available_permits() == 0;
    let event = match entries.get_mut(&key) {
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
    let stub = Stub::of(&event.body);
    // Lines logged while the object is processed name it (see `observability::objects`).
    let span = object_span(&event.body);
    let mailbox = Arc::new(Mailbox::default());
    // Cannot fail: the mailbox is fresh.
    let _ = mailbox.push(event, coalesce, compact);
    entries.insert(
        key.clone(),
        Entry {
            mailbox: mailbox.clone(),
            stub,
        },
    );
    let worker = worker(key, mailbox, processor.clone(), settings.clone(), limit.clone());
    workers.spawn(worker.instrument(span));
}

async fn worker<P: ObjectProcessor>(
    key: String,
    mailbox: Arc<Mailbox>,
    processor: Arc<P>,
    settings: QueueSettings,
    limit: Arc<Semaphore>,
) -> String {
    let mut memory = P::Memory::default();
    let mut verdict = Verdict::default();
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
                    return key;
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
                return key;
            }
            continue;
        }
        let Ok(permit) = limit.clone().acquire_owned().await else {
            mailbox.try_close();
            return key;
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
            return key;
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
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use serde_json::json;

    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(String, Option<EventType>, Wakeup)>>,
    }

    impl ObjectProcessor for Recorder {
        type Memory = ();
        async fn process(&self, _memory: &mut (), events: Vec<RawEvent>, wakeup: Wakeup) -> Verdict {
            let mut seen = self.seen.lock();
            for event in events {
                let name = event
                    .body
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                seen.push((name, event.event_type, wakeup));
            }
            Verdict::default()
        }
    }

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name, "uid": format!("uid-{name}"), "namespace": "ns"}})
    }

    #[tokio::test]
    async fn vanished_objects_get_a_synthetic_deletion_after_a_relist() {
        let (tx, rx) = mpsc::channel(16);
        let recorder = Arc::new(Recorder::default());
        let task = tokio::spawn(multiplex(
            "test".into(),
            rx,
            recorder.clone(),
            QueueSettings::default(),
            Arc::new(Semaphore::new(4)),
        ));
        for item in [
            WatchItem::ListStarted,
            WatchItem::Listed(obj("a")),
            WatchItem::Listed(obj("b")),
            WatchItem::ListDone,
            WatchItem::ListStarted,
            WatchItem::Listed(obj("a")),
            WatchItem::ListDone,
        ] {
            tx.send(item).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let done = recorder
                .seen
                .lock()
                .iter()
                .any(|(n, t, _)| n == "b" && *t == Some(EventType::Deleted));
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no synthetic deletion: {:?}",
                recorder.seen.lock()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(tx);
        task.await.unwrap();
        let seen = recorder.seen.lock();
        assert!(
            !seen
                .iter()
                .any(|(n, t, _)| n == "a" && *t == Some(EventType::Deleted))
        );
    }

    /// Object "slow" makes a call that only returns once "fast" was processed.
    #[derive(Default)]
    struct SlowAndFast {
        fast_done: Notify,
        order: Mutex<Vec<String>>,
    }

    impl ObjectProcessor for SlowAndFast {
        type Memory = ();
        async fn process(&self, _memory: &mut (), events: Vec<RawEvent>, _wakeup: Wakeup) -> Verdict {
            for event in events {
                let name = event.body["metadata"]["name"].as_str().unwrap_or("").to_owned();
                if name == "slow" {
                    release_slot_if_slow(self.fast_done.notified()).await;
                } else {
                    self.fast_done.notify_one();
                }
                self.order.lock().push(name);
            }
            Verdict::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_gives_its_worker_slot_to_other_objects() {
        let (tx, rx) = mpsc::channel(16);
        let processor = Arc::new(SlowAndFast::default());
        let limit = Arc::new(Semaphore::new(1));
        let task = tokio::spawn(multiplex(
            "test".into(),
            rx,
            processor.clone(),
            QueueSettings::default(),
            limit.clone(),
        ));
        tx.send(WatchItem::Event(EventType::Added, obj("slow")))
            .await
            .unwrap();
        tx.send(WatchItem::Event(EventType::Added, obj("fast")))
            .await
            .unwrap();
        // With one slot, "fast" runs only after "slow" gave the slot back (after
        // SLOT_HOLD_LIMIT of paused, auto-advancing time); "slow" then finishes.
        let deadline = Instant::now() + SLOT_HOLD_LIMIT * 10;
        while processor.order.lock().len() < 2 {
            assert!(Instant::now() < deadline, "stuck: {:?}", processor.order.lock());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*processor.order.lock(), ["fast", "slow"]);
        assert_eq!(
            limit.available_permits(),
            1,
            "the slot was taken back and returned"
        );
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_call_keeps_its_worker_slot() {
        let limit = Arc::new(Semaphore::new(1));
        let permit = limit.clone().acquire_owned().await.unwrap();
        let slot = RefCell::new(WorkerSlot {
            limit: limit.clone(),
            permit: Some(permit),
        });
        let output = SLOT
            .scope(slot, async {
                let output = release_slot_if_slow(async { 7 }).await;
                let held = SLOT.with(|slot| slot.borrow().permit.is_some());
                (output, held)
            })
            .await;
        assert_eq!(output, (7, true));
        assert_eq!(limit.available_permits(), 1);
    }

    #[test]
    fn events_queued_as_text_come_back_whole_and_coalesce() {
        let body = |rv: &str| {
            let mut body = obj("a");
            body["metadata"]["resourceVersion"] = json!(rv);
            body["spec"] =
                json!({"ratio": 0.1 + 0.2, "big": 12345678901234567_u64, "list": [1, "two", null]});
            body
        };
        let mailbox = Mailbox::default();
        mailbox.push(RawEvent::new(None, body("1")), true, true).unwrap();
        mailbox
            .push(RawEvent::new(Some(EventType::Modified), body("2")), true, true)
            .unwrap();
        let events = mailbox.take();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].body, body("2"));
        assert_eq!(events[0].event_type, None, "a listed object stays listed");
        assert_eq!(events[0].superseded, ["1"]);
        assert!(events[0].has_seen("1") && events[0].has_seen("2"));
        mailbox.done();
        // Mixed: a text event superseded by a tree event, and every event kept if asked.
        mailbox
            .push(RawEvent::new(Some(EventType::Modified), body("3")), false, true)
            .unwrap();
        mailbox
            .push(RawEvent::new(Some(EventType::Modified), body("4")), false, false)
            .unwrap();
        let events = mailbox.take();
        assert_eq!(
            events.iter().map(|e| e.body.clone()).collect::<Vec<_>>(),
            [body("3"), body("4")]
        );
    }

    #[test]
    fn events_of_an_object_in_processing_are_not_compacted() {
        let mailbox = Mailbox::default();
        let compacted = |mailbox: &Mailbox| {
            mailbox
                .state
                .lock()
                .events
                .iter()
                .map(|q| q.compact.is_some())
                .collect::<Vec<_>>()
        };
        mailbox.push(RawEvent::new(None, obj("a")), false, true).unwrap();
        assert_eq!(compacted(&mailbox), [true]);
        let _ = mailbox.take();
        // Its worker is busy: the event (e.g. the echo of its own patch) is taken soon.
        mailbox
            .push(RawEvent::new(Some(EventType::Modified), obj("a")), false, true)
            .unwrap();
        assert_eq!(compacted(&mailbox), [false]);
        let _ = mailbox.take();
        mailbox.done();
        mailbox
            .push(RawEvent::new(Some(EventType::Modified), obj("a")), false, true)
            .unwrap();
        assert_eq!(compacted(&mailbox), [true]);
    }

    #[test]
    fn stubs_keep_what_a_synthetic_deletion_needs() {
        let mut body = obj("a");
        body["apiVersion"] = json!("kopf.dev/v1");
        body["kind"] = json!("KopfExample");
        body["metadata"]["resourceVersion"] = json!("1");
        body["spec"] = json!({"big": "x".repeat(1000)});
        let mut stub = Stub::of(&body);
        body["metadata"]["resourceVersion"] = json!("2");
        stub.update(&body);
        assert_eq!(
            stub.to_body(),
            json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "metadata":
                {"name": "a", "namespace": "ns", "uid": "uid-a", "resourceVersion": "2"}})
        );
    }

    #[test]
    fn keys_fall_back_to_names_without_uid() {
        assert_eq!(object_key(&obj("a")).as_deref(), Some("uid-a"));
        let key = object_key(&json!({"kind": "K", "apiVersion": "v1", "metadata": {"name": "x"}})).unwrap();
        assert_eq!(key, "K//v1//x////");
        assert_eq!(object_key(&json!({})), None);
    }
}
