//! The parts of a log record that the formatter ([`super::logging`]) and the objects
//! layer ([`super::objects`]) both read: an event's fields, and Python's level numbers
//! (Kopf's `settings.posting.level` and its event types are in those).

use std::fmt;

use serde_json::Value;
use tracing::Level;
use tracing::field::{Field, Visit};

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

/// Python's level number of a `tracing` level.
pub(crate) fn tracing_level_number(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// The fields of one event, as collected for formatting and for posting object lines.
#[derive(Default)]
pub(crate) struct Collected {
    pub(crate) message: String,
    pub(crate) target: String,
    pub(crate) extra: Vec<(&'static str, Value)>,
}

impl Visit for Collected {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "log.target" => self.target = value.to_owned(),
            name => self.extra.push((name, Value::from(value))),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
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
