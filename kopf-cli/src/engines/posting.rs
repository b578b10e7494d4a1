//! Object log lines as Kubernetes Events (Kopf's `settings.posting.loggers`).
//!
//! Off by default, as in Kopf since 1.44 (log lines such as "Handler 'x' succeeded."
//! were the main source of Event spam). When enabled (`posting.loggers`, or `kopf run
//! --post-logs`), every log line about an object at or above `posting.level` is posted
//! as an Event with `reason: Logging` and a type by level (`Debug`, `Normal`, `Warning`,
//! `Error`), like Kopf's `K8sPoster`: the engine's own lines and the plugins' object
//! loggers alike.
//!
//! The log's objects layer ([`crate::observability::objects`]) finds the object of a
//! line in its span (apiVersion, kind, namespace, name, uid) and hands the line over
//! through a channel; the poster here turns it into an Event for the operator's event
//! queue. Lines outside an object's span (or of an object known by name only) are not
//! posted.
//!
//! The event queue ([`EventQueue`]) is bounded: while the API server is slow or
//! unreachable, events beyond [`EVENT_QUEUE_CAPACITY`] are dropped (counted in
//! `kopf_events_dropped_total`, warned once per episode) instead of growing the memory
//! without limit. Events are a courtesy; the objects' state never depends on them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clients::events::{self, InvolvedObject, Reporter};
use crate::observability::metrics::Metrics;
use crate::observability::objects::{LinesGuard, LogLines, ObjectLine};
use kube::Client;

/// The most events waiting to be posted; more are dropped.
pub const EVENT_QUEUE_CAPACITY: usize = 1024;

/// The operator's queue of Events to post (handlers' `kopf::info` & co., log lines).
#[derive(Debug, Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<Value>,
    dropped: Arc<AtomicU64>,
    /// The queue is full now (a warning was logged for this episode).
    full: Arc<AtomicBool>,
    /// The operator's metrics (events dropped).
    metrics: Metrics,
}

impl EventQueue {
    /// A queue of `capacity` events and its receiving end.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Value>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queue = EventQueue {
            tx,
            dropped: Arc::default(),
            full: Arc::default(),
            metrics: Metrics::default(),
        };
        (queue, rx)
    }

    /// Starts posting the queued events with `client` until `stop`, then flushes what is
    /// queued, briefly, so that events of the last moments are not lost.
    /// Drops are counted in `metrics`.
    pub fn start(client: Client, stop: CancellationToken, metrics: Metrics) -> Self {
        let (mut queue, mut rx) = EventQueue::new(EVENT_QUEUE_CAPACITY);
        queue.metrics = metrics;
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => break,
                    event = rx.recv() => match event { Some(e) => e, None => break },
                };
                if let Err(error) = events::post_event(&client, &event).await {
                    tracing::warn!(target: "kopf.objects", "Failed to post an event: {error}");
                }
            }
            while let Ok(event) = rx.try_recv() {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), events::post_event(&client, &event)).await;
            }
        });
        queue
    }

    /// Queues an event without waiting; drops it (counted) when the queue is full. A
    /// closed queue means the operator is stopping: the event is dropped silently.
    pub fn post(&self, event: Value) {
        match self.tx.try_send(event) {
            Ok(()) => {
                if self.full.load(Ordering::Relaxed) {
                    self.full.store(false, Ordering::Relaxed);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics.event_dropped();
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(target: "kopf.objects", "{EVENT_QUEUE_CAPACITY} events wait to be posted; further events are dropped until the queue drains.");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Events dropped because the queue was full.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The `reason` of posted log lines (Kopf's).
pub const REASON: &str = "Logging";

/// Kopf's event type for a log level.
fn event_type(level: u32) -> &'static str {
    match level {
        0..=10 => "Debug",
        11..=20 => "Normal",
        21..=30 => "Warning",
        _ => "Error",
    }
}

/// The Event of an object log line.
fn event_of(line: &ObjectLine, reporter: &Reporter) -> Value {
    events::build_event(
        &InvolvedObject::from_body(&line.object.stub()),
        reporter,
        event_type(line.level),
        REASON,
        &line.message,
    )
}

/// Posts object log lines at `level` (Python's numbers) and above: turns the log's
/// switch on and forwards the lines to the operator's event queue as Events, until the
/// returned guard is dropped (must run inside a tokio runtime).
pub fn start(lines: &LogLines, level: u32, events: EventQueue, reporter: Reporter) -> LinesGuard {
    let (tx, mut rx) = mpsc::unbounded_channel::<ObjectLine>();
    // Ends when the guard drops the switch's sender (and what was queued is forwarded).
    // It never waits for the event queue, so the lines do not pile up here.
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            events.post(event_of(&line, &reporter));
        }
    });
    lines.activate(level, tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::fields::level_number;
    use crate::observability::objects::{ObjectsLayer, object_span};
    use serde_json::json;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn levels_read_as_python_numbers() {
        assert_eq!(level_number("INFO"), Some(20));
        assert_eq!(level_number("warning"), Some(30));
        assert_eq!(level_number("35"), Some(35));
        assert_eq!(level_number("loud"), None);
        assert_eq!(event_type(10), "Debug");
        assert_eq!(event_type(20), "Normal");
        assert_eq!(event_type(30), "Warning");
        assert_eq!(event_type(40), "Error");
    }

    #[tokio::test]
    async fn object_lines_become_events_of_their_objects() {
        let lines = LogLines::default();
        let (tx, mut rx) = EventQueue::new(16);
        let guard = start(&lines, 20, tx, Reporter::default());
        let subscriber = tracing_subscriber::registry().with(ObjectsLayer::new(lines.clone()));
        let body = json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": "x", "namespace": "ns", "uid": "u-1"}});
        tracing::subscriber::with_default(subscriber, || {
            object_span(&body).in_scope(|| {
                tracing::info!(target: "kopf.objects", "Handler 'a' succeeded.");
                tracing::warn!(target: "kopf.plugin", "from the plugin");
            });
        });
        let first = rx.recv().await.unwrap();
        assert_eq!(first["reason"], "Logging");
        assert_eq!(first["type"], "Normal");
        assert_eq!(first["message"], "Handler 'a' succeeded.");
        assert_eq!(first["involvedObject"]["uid"], "u-1");
        assert_eq!(first["involvedObject"]["kind"], "KopfExample");
        let second = rx.recv().await.unwrap();
        assert_eq!(second["type"], "Warning");
        assert_eq!(second["message"], "from the plugin");
        drop(guard);
        assert!(rx.recv().await.is_none(), "the poster ends with the guard");
    }

    #[tokio::test]
    async fn a_full_event_queue_drops_and_counts_instead_of_growing() {
        let (queue, mut rx) = EventQueue::new(2);
        for i in 0..5 {
            queue.post(json!({"message": i}));
        }
        assert_eq!(queue.dropped(), 3);
        assert_eq!(rx.recv().await.unwrap()["message"], 0);
        assert_eq!(rx.recv().await.unwrap()["message"], 1);
        assert!(rx.try_recv().is_err(), "only the capacity was queued");
        // Drained: events are queued again.
        queue.post(json!({"message": 5}));
        assert_eq!(rx.recv().await.unwrap()["message"], 5);
        assert_eq!(queue.dropped(), 3);
    }
}
