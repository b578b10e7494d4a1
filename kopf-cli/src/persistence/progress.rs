//! Handler progress: the per-handler records Kopf persists between processing cycles
//! (Kopf's `progress.py` + `progression.py`).
//!
//! Storage, as Kopf's default `SmartProgressStorage`:
//! - read: annotation `prefix/<V2 key>`, then `prefix/<V1 key>`, then the legacy
//!   `status.kopf.progress.<raw id>` (written by Kopf ≤ 1.43);
//! - write: annotations only (V2, plus V1 when different), only records that changed
//!   compared to what was read, compact JSON in Kopf's key order with `null`s omitted;
//! - purge: `null` for every key present in the body (annotations and legacy status);
//!   keys only pending in the patch are dropped from the patch.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::conventions::ConventionError;
use super::times::{TimeError, Timestamp};
use crate::structs::pyjson::{self, py_eq_exact, py_truthy};

/// Errors of progress storage.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// A stored record is not valid JSON.
    #[error("progress record of {key:?} is not valid JSON: {source}")]
    Json {
        /// The annotation key.
        key: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A stored record is not a JSON object.
    #[error("progress record of {0:?} is not an object")]
    NotAnObject(String),
    /// A stored timestamp cannot be parsed.
    #[error("progress record of {key:?} has a bad timestamp: {source}")]
    Time {
        /// The handler id.
        key: String,
        /// The parser's error.
        source: TimeError,
    },
    /// The storage configuration is invalid.
    #[error(transparent)]
    Convention(#[from] ConventionError),
}

/// A raw progress record as stored (any fields, including unknown ones).
pub type ProgressRecord = Map<String, Value>;

/// The record fields in the order Kopf writes them.
pub const RECORD_FIELDS: [&str; 9] = [
    "started", "stopped", "delayed", "purpose", "retries", "success", "failure", "message", "subrefs",
];

/// The persisted state of one handler (Kopf's `HandlerState`).
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerState {
    /// Whether the handler takes part in the current cycle (vs. only carried for purging).
    pub active: bool,
    /// The first attempt.
    pub started: Timestamp,
    /// When it finished (succeeded or failed for good).
    pub stopped: Option<Timestamp>,
    /// Not to be retried before this time.
    pub delayed: Option<Timestamp>,
    /// The cause reason the state belongs to; `None` is a catch-all (old Kopf versions).
    pub purpose: Option<String>,
    /// Attempts so far.
    pub retries: i64,
    /// Finished successfully.
    pub success: bool,
    /// Finished with a permanent failure.
    pub failure: bool,
    /// The last error text.
    pub message: Option<String>,
    /// Ids of all sub-handlers (any depth), for purging.
    pub subrefs: Vec<String>,
    /// The record as read from storage, to detect changes.
    pub origin: Option<ProgressRecord>,
}

/// The outcome of one handler attempt, as far as the state cares (Kopf's `Outcome`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutcome {
    /// No more attempts (success, permanent failure, or an ignored error).
    pub final_: bool,
    /// Retry after this many seconds (non-final outcomes).
    pub delay: Option<f64>,
    /// The error text, if the attempt failed.
    pub error: Option<String>,
    /// Sub-handler ids seen in this attempt.
    pub subrefs: Vec<String>,
}

fn parse_time(record: &ProgressRecord, field: &str, key: &str) -> Result<Option<Timestamp>, ProgressError> {
    match record.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Timestamp::parse(text)
            .map(Some)
            .map_err(|source| ProgressError::Time {
                key: key.to_owned(),
                source,
            }),
        Some(other) => Err(ProgressError::Time {
            key: key.to_owned(),
            source: TimeError::Unparseable(other.to_string()),
        }),
    }
}

/// The longest error message stored in a progress record, in bytes as written into the
/// record (JSON-escaped, non-ASCII as `\uXXXX`): records of every handler share the
/// object's 256 KiB of annotations with the diff-base, and a handler's error text (a
/// dump, a stack) must not push them over it.
pub const MAX_STORED_MESSAGE: usize = 1024;

/// `message`, cut (on a character boundary, with an ellipsis) so that it takes at most
/// [`MAX_STORED_MESSAGE`] bytes in the stored record.
fn bounded_message(message: &str) -> String {
    let escaped = |c: char| {
        let mut out = String::new();
        pyjson::write_string(&mut out, c.encode_utf8(&mut [0; 4]));
        out.len() - 2
    };
    let ellipsis = escaped('…');
    let mut used = 0;
    let mut end = None;
    for (at, c) in message.char_indices() {
        let size = escaped(c);
        if used + size > MAX_STORED_MESSAGE - ellipsis && end.is_none() {
            end = Some(at);
        }
        used += size;
        if used > MAX_STORED_MESSAGE {
            let end = end.unwrap_or(at);
            return format!("{}…", &message[..end]);
        }
    }
    message.to_owned()
}

/// The largest record text a handler without sub-handlers can have: every field set,
/// the longest message (a handler's records count this much in the annotation size check).
pub fn max_record_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        let now = Timestamp::now();
        let longest = "\u{1}".repeat(MAX_STORED_MESSAGE);
        let state = HandlerState {
            stopped: Some(now),
            delayed: Some(now),
            purpose: Some("resume".into()),
            retries: i64::MAX,
            message: Some(bounded_message(&longest)),
            ..HandlerState::from_scratch(now, None)
        };
        state.to_json_text(true).len()
    })
}

/// Python's `str(value)` for the JSON scalars that may sit in a `message` field.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

impl HandlerState {
    /// A fresh state for a handler that has not run yet.
    pub fn from_scratch(now: Timestamp, purpose: Option<&str>) -> Self {
        Self {
            active: true,
            started: now,
            stopped: None,
            delayed: None,
            purpose: purpose.map(str::to_owned),
            retries: 0,
            success: false,
            failure: false,
            message: None,
            subrefs: Vec::new(),
            origin: None,
        }
    }

    /// A (passive) state from a stored record; a missing `started` becomes `now`.
    /// `key` is used only in error messages.
    pub fn from_record(record: &ProgressRecord, now: Timestamp, key: &str) -> Result<Self, ProgressError> {
        let retries = match record.get("retries") {
            Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
            _ => 0,
        };
        let subrefs = match record.get("subrefs") {
            Some(Value::Array(items)) => items.iter().map(py_str).collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            active: false,
            started: parse_time(record, "started", key)?.unwrap_or(now),
            stopped: parse_time(record, "stopped", key)?,
            delayed: parse_time(record, "delayed", key)?,
            purpose: record.get("purpose").filter(|v| py_truthy(v)).map(py_str),
            retries,
            success: record.get("success").is_some_and(py_truthy),
            failure: record.get("failure").is_some_and(py_truthy),
            message: record.get("message").filter(|v| !v.is_null()).map(py_str),
            subrefs,
            origin: Some(record.clone()),
        })
    }

    /// Finished for good (succeeded or failed).
    pub fn finished(&self) -> bool {
        self.success || self.failure
    }

    /// Not finished and delayed into the future.
    pub fn sleeping(&self, now: &Timestamp) -> bool {
        !self.finished() && self.delayed.is_some_and(|d| d.instant() > now.instant())
    }

    /// Not finished and not sleeping: due to run.
    pub fn awakened(&self, now: &Timestamp) -> bool {
        !self.finished() && !self.sleeping(now)
    }

    /// Seconds since the first attempt.
    pub fn runtime(&self, now: &Timestamp) -> f64 {
        self.started.seconds_until(now)
    }

    /// The state after one attempt (Kopf's `with_outcome`).
    pub fn with_outcome(&self, outcome: &StepOutcome, now: Timestamp) -> Self {
        let mut subrefs: BTreeSet<String> = self.subrefs.iter().cloned().collect();
        subrefs.extend(outcome.subrefs.iter().cloned());
        Self {
            active: self.active,
            started: self.started,
            stopped: self.stopped.or(if outcome.final_ { Some(now) } else { None }),
            delayed: outcome.delay.map(|d| now.plus_seconds(d)),
            purpose: self.purpose.clone(),
            retries: self.retries + 1,
            success: outcome.final_ && outcome.error.is_none(),
            failure: outcome.final_ && outcome.error.is_some(),
            message: outcome.error.as_deref().map(bounded_message),
            subrefs: subrefs.into_iter().collect(),
            origin: self.origin.clone(),
        }
    }

    /// The full record with `null`s (Kopf's `for_storage`), in Kopf's key order.
    pub fn for_storage(&self) -> Vec<(&'static str, Value)> {
        let time = |t: &Option<Timestamp>| t.map_or(Value::Null, |t| Value::String(t.to_string()));
        let mut subrefs = self.subrefs.clone();
        subrefs.sort();
        vec![
            ("started", Value::String(self.started.to_string())),
            ("stopped", time(&self.stopped)),
            ("delayed", time(&self.delayed)),
            ("purpose", self.purpose.clone().map_or(Value::Null, Value::String)),
            ("retries", Value::from(self.retries)),
            ("success", Value::Bool(self.success)),
            ("failure", Value::Bool(self.failure)),
            ("message", self.message.clone().map_or(Value::Null, Value::String)),
            (
                "subrefs",
                if subrefs.is_empty() {
                    Value::Null
                } else {
                    Value::Array(subrefs.into_iter().map(Value::String).collect())
                },
            ),
        ]
    }

    /// The record as Kubernetes would keep it: without `null`s.
    pub fn as_in_storage(&self) -> ProgressRecord {
        self.for_storage()
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    /// Whether the record differs from what was read (so it must be written).
    pub fn is_changed(&self) -> bool {
        match &self.origin {
            None => true,
            Some(origin) => {
                let pure = self.as_in_storage();
                !py_eq_exact(&Value::Object(pure), &Value::Object(origin.clone()))
            }
        }
    }

    /// The annotation value as Kopf writes it: compact JSON, Kopf's key order, `null`s
    /// omitted unless `verbose`.
    pub fn to_json_text(&self, verbose: bool) -> String {
        let mut out = String::with_capacity(160);
        out.push('{');
        let mut first = true;
        for (key, value) in self.for_storage() {
            if value.is_null() && !verbose {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            pyjson::write_string(&mut out, key);
            out.push(':');
            pyjson::write_value(&mut out, &value);
        }
        out.push('}');
        out
    }
}

/// Success/failure/running counters of a [`State`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounters {
    /// Succeeded handlers.
    pub success: usize,
    /// Permanently failed handlers.
    pub failure: usize,
    /// Not yet finished handlers.
    pub running: usize,
}

/// The states of the handlers of one object for one cause (Kopf's `State`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// States by handler id.
    pub states: BTreeMap<String, HandlerState>,
    /// The reason of the current cause (`create`, `update`, `delete`, `resume`).
    pub purpose: Option<String>,
}

impl State {
    /// Set the current purpose; re-purpose the given handlers' states.
    pub fn with_purpose<'a>(
        mut self,
        purpose: Option<&str>,
        handler_ids: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        for id in handler_ids {
            if let Some(state) = self.states.get_mut(id) {
                state.purpose = purpose.map(str::to_owned);
            }
        }
        self.purpose = purpose.map(str::to_owned);
        self
    }

    /// Activate the handlers selected for this cause, creating fresh states for new ones.
    pub fn with_handlers<'a>(
        mut self,
        handler_ids: impl IntoIterator<Item = &'a str>,
        now: Timestamp,
    ) -> Self {
        for id in handler_ids {
            match self.states.get_mut(id) {
                Some(state) => state.active = true,
                None => {
                    let fresh = HandlerState::from_scratch(now, self.purpose.as_deref());
                    self.states.insert(id.to_owned(), fresh);
                }
            }
        }
        self
    }

    /// Apply attempt outcomes; unknown ids are ignored.
    pub fn with_outcomes<'a>(
        mut self,
        outcomes: impl IntoIterator<Item = (&'a str, &'a StepOutcome)>,
        now: Timestamp,
    ) -> Self {
        for (id, outcome) in outcomes {
            if let Some(state) = self.states.get_mut(id) {
                *state = state.with_outcome(outcome, now);
            }
        }
        self
    }

    /// All active handlers finished (true when there are none).
    pub fn done(&self) -> bool {
        self.states
            .values()
            .filter(|s| s.active)
            .all(HandlerState::finished)
    }

    /// Counters of states left from other purposes (superseded causes), by purpose.
    pub fn extras(&self) -> BTreeMap<String, StateCounters> {
        let mut out: BTreeMap<String, StateCounters> = BTreeMap::new();
        for state in self.states.values() {
            if let Some(p) = &state.purpose
                && Some(p) != self.purpose.as_ref()
            {
                let c = out.entry(p.clone()).or_default();
                c.success += usize::from(state.success);
                c.failure += usize::from(state.failure);
                c.running += usize::from(!state.finished());
            }
        }
        out
    }

    /// Counters of the states of the current purpose (and catch-all states).
    pub fn counts(&self) -> StateCounters {
        let mut c = StateCounters::default();
        for s in self.states.values() {
            if self.purpose.is_none() || s.purpose.is_none() || s.purpose == self.purpose {
                c.success += usize::from(s.success);
                c.failure += usize::from(s.failure);
                c.running += usize::from(!s.finished());
            }
        }
        c
    }

    /// Seconds to wait for each active unfinished handler (0 when due now).
    pub fn delays(&self, now: &Timestamp) -> Vec<f64> {
        self.states
            .values()
            .filter(|s| s.active && !s.finished())
            .map(|s| s.delayed.map_or(0.0, |d| now.seconds_until(&d).max(0.0)))
            .collect()
    }

    /// The shortest of [`Self::delays`].
    pub fn delay(&self, now: &Timestamp) -> Option<f64> {
        self.delays(now).into_iter().reduce(f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::progress_storage::ProgressStorage;
    use crate::structs::patches::Patch;
    use serde_json::json;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn lifecycle_text() {
        let now = t("2026-11-21T23:59:12.501810+00:00");
        let s = HandlerState::from_scratch(now, Some("create"));
        assert_eq!(
            s.to_json_text(false),
            r#"{"started":"2026-11-21T23:59:12.501810+00:00","purpose":"create","retries":0,"success":false,"failure":false}"#
        );
        let later = t("2026-11-21T23:59:12.503028+00:00");
        let done = s.with_outcome(
            &StepOutcome {
                final_: true,
                ..Default::default()
            },
            later,
        );
        assert!(done.finished() && done.success);
        assert_eq!(done.stopped, Some(later));
    }

    #[test]
    fn store_and_purge() {
        let storage = ProgressStorage::default();
        let body = json!({"metadata": {"annotations": {"kopf.zalando.org/a": "{}"}}});
        let mut patch = Patch::new();
        let mut state = State::default().with_handlers(["a", "b"], t("2026-01-01T00:00:00Z"));
        if let Some(s) = state.states.get_mut("a") {
            s.origin = Some(s.as_in_storage());
        }
        state.store(&storage, &body, &mut patch);
        assert!(patch.annotation("kopf.zalando.org/b").is_some());
        assert!(patch.annotation("kopf.zalando.org/a").is_none());
        state.purge(&storage, &body, &mut patch, ["a", "b"]);
        assert_eq!(patch.annotation("kopf.zalando.org/a"), Some(None));
        assert_eq!(patch.annotation("kopf.zalando.org/b"), None);
    }

    #[test]
    fn one_unreadable_record_does_not_reset_the_others() {
        let storage = ProgressStorage::default();
        let now = t("2026-01-01T00:00:10Z");
        let readable = HandlerState::from_scratch(t("2026-01-01T00:00:00Z"), Some("create"))
            .with_outcome(&StepOutcome::default(), now)
            .to_json_text(false);
        let body = json!({"metadata": {"annotations": {
            "kopf.zalando.org/a": readable,
            "kopf.zalando.org/b": "{not json",
        }}});
        let (state, unreadable) = State::from_storage(&storage, &body, ["a", "b", "c"], now);
        assert_eq!(state.states.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(state.states["a"].retries, 1, "{:?}", state.states["a"]);
        assert_eq!(unreadable.len(), 1, "{unreadable:?}");
        assert_eq!(unreadable[0].0, "b");
    }

    #[test]
    fn stored_messages_are_bounded() {
        let now = t("2026-01-01T00:00:00Z");
        let long = "é".repeat(MAX_STORED_MESSAGE);
        let outcome = StepOutcome {
            error: Some(long),
            ..Default::default()
        };
        let state = HandlerState::from_scratch(now, None).with_outcome(&outcome, now);
        let message = state.message.unwrap_or_default();
        let mut stored = String::new();
        pyjson::write_string(&mut stored, &message);
        assert!(stored.len() - 2 <= MAX_STORED_MESSAGE, "{}", stored.len());
        assert!(stored.len() - 2 > MAX_STORED_MESSAGE - 12, "{}", stored.len());
        assert!(message.ends_with('…'));
        let short = StepOutcome {
            error: Some("short".into()),
            ..Default::default()
        };
        let state = HandlerState::from_scratch(now, None).with_outcome(&short, now);
        assert_eq!(state.message.as_deref(), Some("short"));
    }
}
