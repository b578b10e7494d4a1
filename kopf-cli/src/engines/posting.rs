//! Object log lines as Kubernetes Events (Kopf's `settings.posting.loggers`).
//!
//! Off by default, as in Kopf since 1.44 (log lines such as "Handler 'x' succeeded."
//! were the main source of Event spam). When enabled (`posting.loggers`, or `kopf run
//! --post-logs`), every log line about an object at or above `posting.level` is posted
//! as an Event with `reason: Logging` and a type by level (`Debug`, `Normal`, `Warning`,
//! `Error`), like Kopf's `K8sPoster`: the engine's own lines (`[namespace/name] ...`)
//! and the plugins' object loggers alike.
//!
//! Log lines name objects by `namespace/name` only; the full reference (apiVersion,
//! kind, uid) comes from the objects the operator is currently handling, which the
//! multiplexer registers here ([`register`]) while the poster is active. Lines about
//! objects not handled at that moment are not posted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::clients::events::{self, InvolvedObject, Reporter};
use crate::logging::Collected;

/// The `reason` of posted log lines (Kopf's).
pub const REASON: &str = "Logging";

/// Python's level names and numbers, as Kopf's `settings.posting.level` holds them.
pub const LEVELS: [(&str, u32); 5] = [
    ("DEBUG", 10),
    ("INFO", 20),
    ("WARNING", 30),
    ("ERROR", 40),
    ("CRITICAL", 50),
];

/// A level's Python number, from its name (`WARN` and `FATAL` too) or a number.
pub fn level_number(level: &str) -> Option<u32> {
    let level = level.trim().to_ascii_uppercase();
    let name = match level.as_str() {
        "WARN" => "WARNING",
        "FATAL" => "CRITICAL",
        other => other,
    };
    LEVELS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, number)| *number)
        .or_else(|| name.parse().ok())
}

fn tracing_level_number(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// Kopf's event type for a log level.
fn event_type(level: u32) -> &'static str {
    match level {
        0..=10 => "Debug",
        11..=20 => "Normal",
        21..=30 => "Warning",
        _ => "Error",
    }
}

/// Where posted log lines go, while an operator with `posting.loggers` runs.
pub struct LogPoster {
    /// The lowest level posted (Python's numbers).
    pub level: u32,
    /// The operator's event queue.
    pub events: mpsc::UnboundedSender<Value>,
    /// The reporting fields of the events.
    pub reporter: Reporter,
}

static ACTIVE: AtomicBool = AtomicBool::new(false);

fn poster() -> &'static RwLock<Option<Arc<LogPoster>>> {
    static POSTER: RwLock<Option<Arc<LogPoster>>> = RwLock::new(None);
    &POSTER
}

/// `namespace/name` → the stubs (apiVersion, kind, metadata) of the objects handled now.
fn objects() -> &'static Mutex<HashMap<String, Vec<Value>>> {
    static OBJECTS: std::sync::OnceLock<Mutex<HashMap<String, Vec<Value>>>> = std::sync::OnceLock::new();
    OBJECTS.get_or_init(Default::default)
}

/// Starts posting object log lines; the returned guard stops it when dropped.
pub fn activate(poster: LogPoster) -> ActiveGuard {
    *self::poster().write() = Some(Arc::new(poster));
    ACTIVE.store(true, Ordering::Release);
    ActiveGuard(())
}

/// Stops posting log lines when dropped (see [`activate`]).
#[must_use = "posting stops when the guard is dropped"]
pub struct ActiveGuard(());

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.store(false, Ordering::Release);
        *poster().write() = None;
        objects().lock().clear();
    }
}

/// Whether log lines are being posted (then objects should be registered).
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

fn reference_key(stub: &Value) -> Option<String> {
    let name = stub.pointer("/metadata/name").and_then(Value::as_str)?;
    Some(
        match stub.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
            _ => name.to_owned(),
        },
    )
}

/// Makes an object (its stub: apiVersion, kind, metadata name/namespace/uid) known
/// as handled now, so that log lines naming it can be posted. No-op while inactive.
pub fn register(stub: &Value) {
    if !is_active() {
        return;
    }
    if let Some(key) = reference_key(stub) {
        objects().lock().entry(key).or_default().push(stub.clone());
    }
}

/// Forgets an object registered with [`register`].
pub fn unregister(stub: &Value) {
    if !is_active() {
        return;
    }
    let Some(key) = reference_key(stub) else { return };
    let uid = stub.pointer("/metadata/uid");
    let mut objects = objects().lock();
    if let Some(stubs) = objects.get_mut(&key) {
        if let Some(index) = stubs.iter().position(|s| s.pointer("/metadata/uid") == uid) {
            stubs.remove(index);
        }
        if stubs.is_empty() {
            objects.remove(&key);
        }
    }
}

/// The `tracing` layer that posts object log lines while a [`LogPoster`] is active.
/// Installed by [`crate::logging::init`]; applications embedding the engine with their
/// own subscriber may add it to theirs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjectEventsLayer;

/// The object a line is about and the line without its `[namespace/name]` prefix.
fn split_reference(target: &str, fields: Collected) -> Option<(String, String)> {
    if !fields.object.is_empty() {
        return Some((fields.object, fields.message));
    }
    if target != "kopf.objects" {
        return None;
    }
    let rest = fields.message.strip_prefix('[')?;
    let (object, message) = rest.split_once("] ")?;
    Some((object.to_owned(), message.to_owned()))
}

impl<S: Subscriber> Layer<S> for ObjectEventsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !is_active() {
            return;
        }
        let Some(poster) = poster().read().clone() else {
            return;
        };
        let meta = event.metadata();
        let level = tracing_level_number(meta.level());
        if level < poster.level {
            return;
        }
        let mut fields = Collected::default();
        event.record(&mut fields);
        let Some((object, message)) = split_reference(meta.target(), fields) else {
            return;
        };
        let stub = objects().lock().get(&object).and_then(|s| s.last().cloned());
        let Some(stub) = stub else { return };
        let posted = events::build_event(
            &InvolvedObject::from_body(&stub),
            &poster.reporter,
            event_type(level),
            REASON,
            &message,
        );
        // A closed queue means the operator is stopping: the line is not posted.
        let _ = poster.events.send(posted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn object_lines_at_or_above_the_level_are_posted_for_handled_objects() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let subscriber = tracing_subscriber::registry().with(ObjectEventsLayer);
        let _guard = activate(LogPoster {
            level: 20,
            events: tx,
            reporter: Reporter::default(),
        });
        let stub = json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": "x", "namespace": "ns", "uid": "u-1"}});
        register(&stub);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "kopf.objects", "[ns/x] Handler \"a\" succeeded.");
            tracing::debug!(target: "kopf.objects", "[ns/x] too low");
            tracing::warn!(target: "kopf.objects", "[ns/other] not handled now");
            tracing::info!(target: "kopf.reactor", "[ns/x] not an object logger");
            tracing::warn!(target: "kopf.plugin", object = "ns/x", "from the plugin");
        });
        let first = rx.try_recv().unwrap();
        assert_eq!(first["reason"], "Logging");
        assert_eq!(first["type"], "Normal");
        assert_eq!(first["message"], "Handler \"a\" succeeded.");
        assert_eq!(first["involvedObject"]["uid"], "u-1");
        assert_eq!(first["involvedObject"]["kind"], "KopfExample");
        let second = rx.try_recv().unwrap();
        assert_eq!(second["type"], "Warning");
        assert_eq!(second["message"], "from the plugin");
        assert!(rx.try_recv().is_err(), "nothing else is posted");
        unregister(&stub);
        assert!(objects().lock().is_empty());
    }
}
