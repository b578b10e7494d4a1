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

use serde_json::Value;
use tokio::sync::mpsc;

use crate::clients::events::{self, InvolvedObject, Reporter};
use crate::observability::objects::{LinesGuard, LogLines, ObjectLine};

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
pub fn start(
    lines: &LogLines,
    level: u32,
    events: mpsc::UnboundedSender<Value>,
    reporter: Reporter,
) -> LinesGuard {
    let (tx, mut rx) = mpsc::unbounded_channel::<ObjectLine>();
    // Ends when the guard drops the switch's sender (and what was queued is forwarded).
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            // A closed queue means the operator is stopping: the line is not posted.
            let _ = events.send(event_of(&line, &reporter));
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
        let (tx, mut rx) = mpsc::unbounded_channel();
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
}
