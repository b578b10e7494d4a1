//! Which object a log line is about: the `object` span, as kube-runtime's `reconciling
//! object` span and Kopf's `ObjectLogger` (which carries the object reference in its
//! `extra`, `kopf/_core/engines/logging.py`).
//!
//! The per-object worker runs an object's processing inside [`object_span`]. The
//! [`ObjectsLayer`] keeps each such span's [`LoggedObject`]; the log formatter reads it
//! to prefix object lines with `[namespace/name]` (or to put the reference under the JSON
//! refkey), and, while an operator posts object log lines as Kubernetes Events
//! (`settings.posting.loggers`), the layer hands those lines to the operator's poster
//! through [`LogLines`] — nothing here talks to the cluster.
//!
//! Object lines are the object loggers' (target `kopf.objects`) and the plugins'
//! (target `kopf.plugin`): other lines inside the span are not about the object.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, Scope};

use super::fields::{Collected, tracing_level_number};

/// The span's name.
pub const SPAN_NAME: &str = "object";

/// The span's target: distinct from every event target, so that the log filter can
/// always enable the span (see [`super::logging::init`]) without enabling any line.
pub const SPAN_TARGET: &str = "kopf_cli::object";

/// The targets of lines about objects: the engine's object logger and the plugins'.
pub fn is_object_line(target: &str) -> bool {
    matches!(target, "kopf.objects" | "kopf.plugin")
}

/// The object of an `object` span: what a log line needs to name it, and what an event
/// needs to be linked to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggedObject {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`; empty for cluster-scoped objects.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`; empty when only the name is known.
    pub uid: String,
}

impl LoggedObject {
    /// `namespace/name`, or `name` for cluster-scoped objects (Kopf's prefix).
    pub fn reference(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }

    /// The object's stub (apiVersion, kind, metadata name/namespace/uid), for events.
    pub fn stub(&self) -> Value {
        let mut metadata = json!({"name": self.name, "uid": self.uid});
        if !self.namespace.is_empty() {
            metadata["namespace"] = Value::from(self.namespace.as_str());
        }
        json!({"apiVersion": self.api_version, "kind": self.kind, "metadata": metadata})
    }
}

impl Visit for LoggedObject {
    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            "api_version" => &mut self.api_version,
            "kind" => &mut self.kind,
            "namespace" => &mut self.namespace,
            "name" => &mut self.name,
            "uid" => &mut self.uid,
            _ => return,
        };
        value.clone_into(slot);
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn fmt::Debug) {}
}

/// The span of an object's processing (`body` is its body or stub): enter it (or
/// instrument the future with it) so that lines about the object name it.
pub fn object_span(body: &Value) -> tracing::Span {
    let text = |pointer: &str| body.pointer(pointer).and_then(Value::as_str);
    tracing::info_span!(
        target: SPAN_TARGET,
        SPAN_NAME,
        namespace = text("/metadata/namespace"),
        name = text("/metadata/name").unwrap_or_default(),
        uid = text("/metadata/uid"),
        kind = text("/kind"),
        api_version = text("/apiVersion"),
    )
}

/// The span of a line about an object known by its `namespace/name` only (a plugin's
/// line outside the engine's span): it is prefixed, but cannot be posted (no uid).
pub fn reference_span(reference: &str) -> tracing::Span {
    let (namespace, name) = reference.split_once('/').unwrap_or(("", reference));
    tracing::info_span!(
        target: SPAN_TARGET,
        SPAN_NAME,
        namespace = (!namespace.is_empty()).then_some(namespace),
        name = name,
    )
}

/// The object of the innermost `object` span of a scope.
pub fn find<'a, R: LookupSpan<'a>>(scope: Option<Scope<'a, R>>) -> Option<LoggedObject> {
    scope?.find_map(|span| span.extensions().get::<LoggedObject>().cloned())
}

/// The object of the current span, if the global subscriber is a registry with the
/// [`ObjectsLayer`] and the current span is in an `object` span.
pub fn current() -> Option<LoggedObject> {
    let id = tracing::Span::current().id()?;
    tracing::dispatcher::get_default(|dispatch| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        find(registry.span(&id).map(|span| span.scope()))
    })
}

/// A line about an object, for the poster (see [`LogLines`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLine {
    /// The object.
    pub object: LoggedObject,
    /// Python's level number.
    pub level: u32,
    /// The message, without a `[namespace/name]` prefix.
    pub message: String,
}

struct Sink {
    level: u32,
    lines: mpsc::UnboundedSender<ObjectLine>,
}

/// The switch between the [`ObjectsLayer`] and an operator's poster: created where the
/// log is set up, handed to the layer there and to the operator, which turns it on while
/// it posts object lines. Cheap to clone; clones share the switch.
#[derive(Clone, Default)]
pub struct LogLines {
    active: Arc<AtomicBool>,
    sink: Arc<RwLock<Option<Arc<Sink>>>>,
}

impl fmt::Debug for LogLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLines")
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl LogLines {
    /// Sends object lines at `level` (Python's numbers) and above to `lines` until the
    /// returned guard is dropped.
    pub fn activate(&self, level: u32, lines: mpsc::UnboundedSender<ObjectLine>) -> LinesGuard {
        *self.sink.write() = Some(Arc::new(Sink { level, lines }));
        self.active.store(true, Ordering::Release);
        LinesGuard(self.clone())
    }

    fn sink(&self) -> Option<Arc<Sink>> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        self.sink.read().clone()
    }
}

/// Stops sending object lines when dropped (see [`LogLines::activate`]).
#[must_use = "object lines stop when the guard is dropped"]
pub struct LinesGuard(LogLines);

impl Drop for LinesGuard {
    fn drop(&mut self) {
        self.0.active.store(false, Ordering::Release);
        *self.0.sink.write() = None;
    }
}

/// The `tracing` layer that keeps the objects of `object` spans (for the formatter) and
/// hands object lines to an active [`LogLines`]. Installed by
/// [`super::logging::init`]; an application embedding the engine with its own
/// subscriber adds it to theirs (and gives the same [`LogLines`] to the operator).
#[derive(Debug, Clone, Default)]
pub struct ObjectsLayer {
    lines: LogLines,
}

impl ObjectsLayer {
    /// A layer handing object lines to `lines` while it is active.
    pub fn new(lines: LogLines) -> Self {
        Self { lines }
    }
}

impl<S> Layer<S> for ObjectsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if meta.name() != SPAN_NAME || meta.target() != SPAN_TARGET {
            return;
        }
        let mut object = LoggedObject::default();
        attrs.record(&mut object);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(object);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(sink) = self.lines.sink() else {
            return;
        };
        let meta = event.metadata();
        let level = tracing_level_number(meta.level());
        if level < sink.level || !is_object_line(meta.target()) {
            return;
        }
        let Some(object) = find(ctx.event_scope(event)) else {
            return;
        };
        if object.uid.is_empty() {
            return; // Known by name only: an event could not be linked to it.
        }
        let mut fields = Collected::default();
        event.record(&mut fields);
        let prefix = format!("[{}] ", object.reference());
        let message = match fields.message.strip_prefix(&prefix) {
            Some(rest) => rest.to_owned(),
            None => fields.message,
        };
        // A closed queue means the operator is stopping: the line is not posted.
        let _ = sink.lines.send(ObjectLine {
            object,
            level,
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn object_lines_at_or_above_the_level_are_handed_over_from_the_span() {
        let lines = LogLines::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let subscriber = tracing_subscriber::registry().with(ObjectsLayer::new(lines.clone()));
        let body = json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": "x", "namespace": "ns", "uid": "u-1"}});
        let guard = lines.activate(20, tx);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "kopf.objects", "outside any object");
            object_span(&body).in_scope(|| {
                assert_eq!(current().map(|o| o.reference()), Some("ns/x".to_owned()));
                tracing::info!(target: "kopf.objects", "[ns/x] Handler 'a' succeeded.");
                tracing::debug!(target: "kopf.objects", "too low");
                tracing::info!(target: "kopf.reactor", "not an object line");
                tracing::warn!(target: "kopf.plugin", plugin = "p", "from the plugin");
            });
            reference_span("ns/y").in_scope(|| {
                tracing::warn!(target: "kopf.plugin", "known by name only");
            });
        });
        let first = rx.try_recv().unwrap();
        assert_eq!(first.level, 20);
        assert_eq!(first.message, "Handler 'a' succeeded.");
        assert_eq!(first.object.stub()["metadata"]["uid"], "u-1");
        assert_eq!(first.object.stub()["kind"], "KopfExample");
        let second = rx.try_recv().unwrap();
        assert_eq!(second.level, 30);
        assert_eq!(second.message, "from the plugin");
        assert!(rx.try_recv().is_err(), "nothing else is handed over");
        drop(guard);
        assert!(lines.sink().is_none());
    }

    #[test]
    fn references_of_namespaced_and_cluster_objects() {
        let object = LoggedObject {
            name: "n".into(),
            ..LoggedObject::default()
        };
        assert_eq!(object.reference(), "n");
        assert!(object.stub()["metadata"].get("namespace").is_none());
    }
}
