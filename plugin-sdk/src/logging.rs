//! Logging: `tracing` events inside the plugin reach the host's log, prefixed with the
//! object being handled.
//!
//! The plugin has its own copy of `tracing`, invisible to the host's subscriber. At `init`
//! the SDK installs (once) a subscriber in the plugin's copy that forwards every event to
//! [`kopf_abi::HostTable::log`]. Each handler call runs inside a span named
//! [`OBJECT_SPAN`] carrying the object's `namespace/name`, which becomes the log line's
//! object prefix.

use std::fmt::{self, Write as _};
use std::sync::Once;

use kopf_abi::LogLevel;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, span};
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

use crate::host;

/// The name of the span that carries the current object (`object` field).
pub const OBJECT_SPAN: &str = "kopf.object";

/// The default log target of [`ObjectLogger`].
pub const OBJECTS_TARGET: &str = "kopf.objects";

/// The object reference stored in the span's extensions.
struct ObjectRef(String);

#[derive(Default)]
struct ObjectVisitor(Option<String>);

impl Visit for ObjectVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "object" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "object" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// Formats an event: the message, then the other fields as `key=value`.
#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

/// The layer that forwards events to the host.
struct HostLayer;

impl<S> Layer<S> for HostLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: LayerContext<'_, S>) {
        if attrs.metadata().name() != OBJECT_SPAN {
            return;
        }
        let mut visitor = ObjectVisitor::default();
        attrs.record(&mut visitor);
        if let (Some(object), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(ObjectRef(object));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let level = to_log_level(*event.metadata().level());
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let mut message = visitor.message;
        message.push_str(&visitor.fields);
        let object = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope
                    .into_iter()
                    .find_map(|span| span.extensions().get::<ObjectRef>().map(|o| o.0.clone()))
            })
            .unwrap_or_default();
        host::log(level, event.metadata().target(), &object, &message);
    }
}

fn to_log_level(level: Level) -> LogLevel {
    match level {
        Level::ERROR => LogLevel::ERROR,
        Level::WARN => LogLevel::WARN,
        Level::INFO => LogLevel::INFO,
        Level::DEBUG => LogLevel::DEBUG,
        Level::TRACE => LogLevel::TRACE,
    }
}

fn to_level_filter(level: LogLevel) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match level.0 {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Installs the forwarding subscriber as the global default of the plugin's `tracing`
/// copy, once. If the application already set a global subscriber (in-process use), that
/// one stays and nothing is forwarded.
pub(crate) fn install_subscriber() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber =
            tracing_subscriber::registry().with(HostLayer.with_filter(to_level_filter(host::max_level())));
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// A logger bound to one object: lines go straight to the host's log with the object's
/// `[namespace/name]` prefix (Kopf's per-object `logger` kwarg). `tracing` macros inside a
/// handler get the same prefix; this is the explicit alternative.
#[derive(Debug, Clone)]
pub struct ObjectLogger {
    object: String,
    target: String,
    /// The operator whose log the lines go to (the call's, wherever the logger is used).
    host: host::Host,
}

impl ObjectLogger {
    pub(crate) fn new(object: String, host: host::Host) -> Self {
        Self {
            object,
            target: OBJECTS_TARGET.to_owned(),
            host,
        }
    }

    /// The object reference (`namespace/name`), empty for none.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// Logs at the given level.
    pub fn log(&self, level: LogLevel, message: impl fmt::Display) {
        if level <= host::max_level() {
            self.host
                .log(level, &self.target, &self.object, &message.to_string());
        }
    }

    /// Logs an error.
    pub fn error(&self, message: impl fmt::Display) {
        self.log(LogLevel::ERROR, message);
    }

    /// Logs a warning.
    pub fn warn(&self, message: impl fmt::Display) {
        self.log(LogLevel::WARN, message);
    }

    /// Logs an informational message.
    pub fn info(&self, message: impl fmt::Display) {
        self.log(LogLevel::INFO, message);
    }

    /// Logs a debug message.
    pub fn debug(&self, message: impl fmt::Display) {
        self.log(LogLevel::DEBUG, message);
    }
}
