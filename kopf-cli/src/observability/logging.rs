//! Log setup: formats, levels and the object prefix.
//!
//! Three formats, as in Kopf (`--log-format`):
//!
//! * `plain`: the message only;
//! * `full` (default): `[2024-05-01 12:00:00,123] kopf.objects         [INFO    ] [ns/name] message`;
//! * `json`: one JSON object per line, with Kopf's fields (its python-json-logger
//!   formatter): `message`, `timestamp` (ISO 8601 in UTC with microseconds and `+00:00`,
//!   as Python's `isoformat()`), `severity` (`debug`, `info`, `warn`, `error`), and the
//!   object reference under the `--log-refkey` key (default `object`: `apiVersion`,
//!   `kind`, `name`, `uid`, `namespace`, null when unknown); plus `target` (the logger's
//!   name, which Kopf leaves out) and the event's own fields.
//!
//! Lines about an object (the object loggers' and the plugins', inside the object's span,
//! see [`super::objects`]): the plain and full formats prefix the message with
//! `[namespace/name]` unless `--no-log-prefix`; the JSON format puts the reference under
//! the refkey instead (and prefixes only with `--log-prefix`). A message that already
//! starts with its `[namespace/name]` is not prefixed twice. A `log.target` field
//! overrides the displayed target (used for plugin logs).

use std::fmt;

use serde_json::{Map, Value};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::fields::Collected;
use super::objects::{self, LogLines, ObjectsLayer};

/// The log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// The message only.
    Plain,
    /// Timestamp, target, level and message, like Kopf's default.
    #[default]
    Full,
    /// One JSON object per line.
    Json,
}

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Warnings and errors only (`-q`).
    Quiet,
    /// Informational messages (default).
    #[default]
    Normal,
    /// Debug messages of kopf itself (`-v`).
    Verbose,
    /// Everything, including dependencies' trace output (`-d`).
    Debug,
}

impl Verbosity {
    /// The `tracing` filter directives for this verbosity.
    pub fn directives(self) -> &'static str {
        match self {
            Self::Quiet => "warn",
            Self::Normal => "info",
            Self::Verbose => "info,kopf=debug,kopf_cli=debug,kopf_testing=debug",
            Self::Debug => "trace",
        }
    }
}

/// Logging settings, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The output format.
    pub format: LogFormat,
    /// The level.
    pub verbosity: Verbosity,
    /// The JSON key of the object reference.
    pub refkey: String,
    /// Whether to prefix messages with `[namespace/name]`; `None` = the format's default.
    pub prefix: Option<bool>,
    /// `tracing` filter directives replacing the verbosity's (`RUST_LOG`, read at the edge).
    pub filter: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Full,
            verbosity: Verbosity::Normal,
            refkey: "object".to_owned(),
            prefix: None,
            filter: None,
        }
    }
}

/// Errors of [`init`].
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Installs the global `tracing` subscriber writing to stderr, with the objects' spans
/// (handing object lines to `lines` while an operator posts them, see
/// [`super::objects`]).
///
/// [`LogConfig::filter`] (`RUST_LOG`), when set, replaces the level directives chosen
/// by the verbosity.
pub fn init(config: &LogConfig, lines: &LogLines) -> Result<(), LoggingError> {
    let filter = config
        .filter
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(config.verbosity.directives()));
    // The objects' spans exist at every verbosity: they name the object of a line.
    let filter = match format!("{}=info", super::objects::SPAN_TARGET).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(KopfFormat::new(config));
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(ObjectsLayer::new(lines.clone()))
        .try_init()
        .map_err(|e| LoggingError::Install(e.to_string()))
}

/// The event formatter behind all three formats.
#[derive(Debug, Clone)]
pub struct KopfFormat {
    format: LogFormat,
    refkey: String,
    prefix: bool,
}

impl KopfFormat {
    /// A formatter for the given settings.
    pub fn new(config: &LogConfig) -> Self {
        Self {
            format: config.format,
            refkey: config.refkey.clone(),
            prefix: config.prefix.unwrap_or(config.format != LogFormat::Json),
        }
    }
}

/// Python's level names, as Kopf prints them.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// Kopf's JSON severities (`ObjectJsonFormatter`): Python's `warning` is `warn`, and
/// nothing is finer than `debug`.
fn json_severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

/// The time as python-json-logger writes it: `2026-12-05T11:04:11.123456+00:00`.
/// The local time zone of the `full` format's timestamps (Python's `asctime` is local
/// time), read once. jiff's own lookup indexes the whole zoneinfo tree to name the zone,
/// a start-up cost for a name these lines never print: read `/etc/localtime` directly
/// unless `TZ` says otherwise.
fn local_time_zone() -> &'static jiff::tz::TimeZone {
    static ZONE: std::sync::OnceLock<jiff::tz::TimeZone> = std::sync::OnceLock::new();
    ZONE.get_or_init(|| {
        if std::env::var_os("TZ").is_some() {
            return jiff::tz::TimeZone::system();
        }
        std::fs::read("/etc/localtime")
            .ok()
            .and_then(|data| jiff::tz::TimeZone::tzif("localtime", &data).ok())
            .unwrap_or(jiff::tz::TimeZone::UTC)
    })
}

fn json_timestamp(now: jiff::Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// The object's reference as Kopf's JSON logs carry it: `apiVersion`, `kind`, `name`,
/// `uid`, `namespace` (null when unknown, e.g. the namespace of a cluster-scoped object).
fn object_ref(object: &objects::LoggedObject) -> Value {
    let text = |s: &str| {
        if s.is_empty() { Value::Null } else { Value::from(s) }
    };
    let mut map = Map::new();
    map.insert("apiVersion".to_owned(), text(&object.api_version));
    map.insert("kind".to_owned(), text(&object.kind));
    map.insert("name".to_owned(), text(&object.name));
    map.insert("uid".to_owned(), text(&object.uid));
    map.insert("namespace".to_owned(), text(&object.namespace));
    Value::Object(map)
}

impl<S, N> FormatEvent<S, N> for KopfFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Collected::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let target = if fields.target.is_empty() {
            meta.target()
        } else {
            fields.target.as_str()
        };
        let object = if objects::is_object_line(meta.target()) {
            objects::find(ctx.event_scope())
        } else {
            None
        };
        let mut message = String::new();
        if self.prefix
            && let Some(object) = &object
        {
            let prefix = format!("[{}] ", object.reference());
            // Messages that still name their object by hand are not prefixed twice.
            if !fields.message.starts_with(&prefix) {
                message.push_str(&prefix);
            }
        }
        message.push_str(&fields.message);

        match self.format {
            LogFormat::Plain | LogFormat::Full => {
                if self.format == LogFormat::Full {
                    let now = jiff::Timestamp::now().to_zoned(local_time_zone().clone());
                    let target: String = target.chars().take(20).collect();
                    write!(
                        writer,
                        "[{},{:03}] {:<20} [{:<8}] ",
                        now.strftime("%Y-%m-%d %H:%M:%S"),
                        now.millisecond(),
                        target,
                        level_name(meta.level())
                    )?;
                }
                writer.write_str(&message)?;
                for (name, value) in &fields.extra {
                    if *name == "plugin" {
                        continue; // Shown as the target already; kept for JSON consumers.
                    }
                    match value {
                        Value::String(s) => write!(writer, " {name}={s}")?,
                        other => write!(writer, " {name}={other}")?,
                    }
                }
                writeln!(writer)
            }
            LogFormat::Json => {
                let mut map = Map::new();
                map.insert(
                    "timestamp".to_owned(),
                    Value::from(json_timestamp(jiff::Timestamp::now())),
                );
                map.insert("severity".to_owned(), Value::from(json_severity(meta.level())));
                map.insert("target".to_owned(), Value::from(target));
                map.insert("message".to_owned(), Value::from(message));
                for (name, value) in fields.extra {
                    map.insert(name.to_owned(), value);
                }
                if let Some(object) = &object {
                    map.insert(self.refkey.clone(), object_ref(object));
                }
                let line = serde_json::to_string(&Value::Object(map)).map_err(|_| fmt::Error)?;
                writeln!(writer, "{line}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_timestamps_use_the_system_offset() {
        let now = jiff::Timestamp::now();
        assert_eq!(
            local_time_zone().to_offset(now),
            jiff::tz::TimeZone::system().to_offset(now)
        );
    }

    #[test]
    fn json_fields_are_kopfs() {
        assert_eq!(json_severity(&Level::WARN), "warn");
        assert_eq!(json_severity(&Level::ERROR), "error");
        assert_eq!(json_severity(&Level::TRACE), "debug");
        let at: jiff::Timestamp = "2026-12-05T11:04:11.1234567Z".parse().unwrap();
        assert_eq!(json_timestamp(at), "2026-12-05T11:04:11.123456+00:00");
        let object = objects::LoggedObject {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: "ns1".into(),
            ..Default::default()
        };
        assert_eq!(
            object_ref(&object),
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "name": "ns1", "uid": null, "namespace": null})
        );
    }
}
