//! Log setup: formats, levels and the object prefix.
//!
//! Three formats, as in Kopf (`--log-format`):
//!
//! * `plain`: the message only;
//! * `full` (default): `[2024-05-01 12:00:00,123] kopf.objects         [INFO    ] [ns/name] message`;
//! * `json`: one JSON object per line: `timestamp`, `severity`, `target`, `message`, and
//!   the object reference under the `--log-refkey` key (default `object`).
//!
//! Any event may carry an `object` field (`"namespace/name"`): the plain and full
//! formats prefix the message with `[namespace/name]` unless `--no-log-prefix`; the JSON
//! format puts it under the refkey instead (and prefixes only with `--log-prefix`).
//! A `log.target` field overrides the displayed target (used for plugin logs).

use std::fmt::{self, Write as _};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Full,
            verbosity: Verbosity::Normal,
            refkey: "object".to_owned(),
            prefix: None,
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

/// Installs the global `tracing` subscriber writing to stderr (and posting object log
/// lines as events when an operator enables it, see [`crate::engines::posting`]).
///
/// `RUST_LOG`, when set, replaces the level directives chosen by the verbosity.
pub fn init(config: &LogConfig) -> Result<(), LoggingError> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(config.verbosity.directives()));
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(KopfFormat::new(config));
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(crate::engines::posting::ObjectEventsLayer)
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

/// The fields of one event, as collected for formatting (and for posting object lines,
/// see [`crate::engines::posting`]).
#[derive(Default)]
pub(crate) struct Collected {
    pub(crate) message: String,
    pub(crate) object: String,
    target: String,
    extra: Vec<(&'static str, Value)>,
}

impl Visit for Collected {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "object" => self.object = value.to_owned(),
            "log.target" => self.target = value.to_owned(),
            name => self.extra.push((name, Value::from(value))),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "object" => self.object = format!("{value:?}"),
            "log.target" => self.target = format!("{value:?}"),
            name if name.starts_with("log.") => {}
            name => self.extra.push((name, Value::from(format!("{value:?}")))),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.extra.push((field.name(), Value::from(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.extra.push((field.name(), Value::from(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.extra.push((field.name(), Value::from(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.extra.push((field.name(), Value::from(value)));
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

/// `namespace/name` (or `name`) as a JSON object reference.
fn object_ref(object: &str) -> Value {
    let mut map = Map::new();
    match object.split_once('/') {
        Some((ns, name)) => {
            map.insert("namespace".to_owned(), Value::from(ns));
            map.insert("name".to_owned(), Value::from(name));
        }
        None => {
            map.insert("name".to_owned(), Value::from(object));
        }
    }
    Value::Object(map)
}

impl<S, N> FormatEvent<S, N> for KopfFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
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
        let mut message = String::new();
        if self.prefix && !fields.object.is_empty() {
            write!(message, "[{}] ", fields.object)?;
        }
        message.push_str(&fields.message);

        match self.format {
            LogFormat::Plain | LogFormat::Full => {
                if self.format == LogFormat::Full {
                    let now = jiff::Zoned::now();
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
                    Value::from(jiff::Timestamp::now().to_string()),
                );
                map.insert(
                    "severity".to_owned(),
                    Value::from(level_name(meta.level()).to_lowercase()),
                );
                map.insert("target".to_owned(), Value::from(target));
                map.insert("message".to_owned(), Value::from(message));
                for (name, value) in fields.extra {
                    map.insert(name.to_owned(), value);
                }
                if !fields.object.is_empty() {
                    map.insert(self.refkey.clone(), object_ref(&fields.object));
                }
                let line = serde_json::to_string(&Value::Object(map)).map_err(|_| fmt::Error)?;
                writeln!(writer, "{line}")
            }
        }
    }
}
