//! An object's events on their way to its worker: [`RawEvent`] and the [`Mailbox`] that
//! queues them (compact while no worker slot is free, coalesced when only the newest
//! state matters).

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;

use crate::clients::watching::EventType;
use crate::structs::dicts;

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
    /// A synthetic deletion: the object was missing from a re-listing (its body is a stub).
    pub vanished: bool,
}

impl RawEvent {
    /// An event as it came from the stream.
    pub fn new(event_type: Option<EventType>, body: Value) -> Self {
        Self {
            event_type,
            body,
            superseded: Vec::new(),
            vanished: false,
        }
    }

    /// The deletion of an object that a re-listing no longer shows; `stub` is what is
    /// known of it (apiVersion, kind, name, namespace, uid, resourceVersion).
    pub fn vanished(stub: Value) -> Self {
        Self {
            vanished: true,
            ..Self::new(Some(EventType::Deleted), stub)
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
        self.absorb(older.event, older_version);
    }

    /// Replaces `older` (waiting, not processed yet, of `older_version`) with this newer
    /// event, which then counts as having seen it.
    pub(super) fn absorb(&mut self, older: RawEvent, older_version: Option<String>) {
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
pub(super) struct Mailbox {
    state: Mutex<MailboxState>,
    pub(super) notify: Notify,
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
    pub(super) fn push(&self, mut event: RawEvent, coalesce: bool, compact: bool) -> Result<(), RawEvent> {
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
    pub(super) fn take(&self) -> Vec<RawEvent> {
        let queued = {
            let mut state = self.state.lock();
            state.busy = true;
            std::mem::take(&mut state.events)
        };
        queued.into_iter().map(Queued::into_event).collect()
    }

    /// The worker finished processing what it took.
    pub(super) fn done(&self) {
        self.state.lock().busy = false;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.state.lock().events.is_empty()
    }

    pub(super) fn end(&self) {
        self.state.lock().ended = true;
        self.notify.notify_one();
    }

    pub(super) fn ended(&self) -> bool {
        self.state.lock().ended
    }

    /// Closes the mailbox if nothing is queued (the worker may exit); `false` if events
    /// slipped in meanwhile.
    pub(super) fn try_close(&self) -> bool {
        let mut state = self.state.lock();
        if state.events.is_empty() {
            state.closed = true;
        }
        state.closed
    }

    pub(super) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}

/// While the indices are not ready, an object keeps only its newest waiting event (which
/// counts as having seen the older ones): memory stays bounded however long they wait.
pub(super) fn coalesce(pending: &mut Vec<RawEvent>) {
    let Some(mut newest) = pending.pop() else { return };
    for older in pending.drain(..).rev() {
        let version = older.resource_version().map(str::to_owned);
        newest.absorb(older, version);
    }
    pending.push(newest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name, "uid": format!("uid-{name}"), "namespace": "ns"}})
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
}
