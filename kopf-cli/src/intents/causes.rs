//! Cause detection for resource-changing handlers, as Kopf's
//! `causes.detect_changing_cause` and `ChangingRegistry.iter_handlers`.
//!
//! Order of detection: a `DELETED` event is GONE; a deletion without our finalizer is FREE;
//! a deletion is DELETE; no stored diff-base is CREATE; no diff for an object from the
//! initial listing not yet fully handled in this process is RESUME; no diff is NOOP;
//! anything else is UPDATE. Resume handlers are also mixed into UPDATE (and, with
//! `deleted=true`, DELETE) causes of such initially listed objects ("cuckoo" style);
//! CREATE never mixes with resuming.

use std::fmt;

use kopf_abi::protocol::HandlerKind;
use serde_json::Value;

use crate::structs::bodies::Body;
use crate::structs::dicts;
use crate::structs::diffs::{self, DiffItem};

/// Why changing handlers are (or are not) invoked (Kopf's `Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The object is new to this operator (no diff-base).
    Create,
    /// The essence changed.
    Update,
    /// The object is being deleted and our finalizer holds it.
    Delete,
    /// The object was listed at startup and is unchanged.
    Resume,
    /// Nothing essential changed.
    Noop,
    /// The object is being deleted and our finalizer is gone: nothing to do.
    Free,
    /// The object is gone from the cluster (a `DELETED` event).
    Gone,
}

impl Reason {
    /// Kopf's value: `create`, `update`, `delete`, `resume`, `noop`, `free`, `gone`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Resume => "resume",
            Self::Noop => "noop",
            Self::Free => "free",
            Self::Gone => "gone",
        }
    }

    /// Parse Kopf's value.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "create" => Self::Create,
            "update" => Self::Update,
            "delete" => Self::Delete,
            "resume" => Self::Resume,
            "noop" => Self::Noop,
            "free" => Self::Free,
            "gone" => Self::Gone,
            _ => return None,
        })
    }

    /// Whether handlers are invoked for this reason (Kopf's `HANDLER_REASONS`).
    pub fn invokes_handlers(self) -> bool {
        matches!(self, Self::Create | Self::Update | Self::Delete | Self::Resume)
    }

    /// The noun Kopf logs: "Creation", "Updating", "Deletion", "Resuming", ….
    pub fn title(self) -> &'static str {
        match self {
            Self::Create => "creation",
            Self::Update => "updating",
            Self::Delete => "deletion",
            Self::Resume => "resuming",
            Self::Noop => "no-op",
            Self::Free => "freeing",
            Self::Gone => "gone",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The inputs of cause detection, all explicit.
#[derive(Debug, Clone, Copy)]
pub struct CauseInputs<'a> {
    /// The raw watch event type: `ADDED`, `MODIFIED`, `DELETED`, or `None` for listings.
    pub event_type: Option<&'a str>,
    /// The object body.
    pub body: &'a Value,
    /// The operator's finalizer name.
    pub finalizer: &'a str,
    /// The stored diff-base (cleaned), `None` if never stored.
    pub old: Option<&'a Value>,
    /// The fresh essence.
    pub new: Option<&'a Value>,
    /// `diff(old, new)`.
    pub diff: &'a [DiffItem],
    /// The object came from the initial listing and was not yet fully handled in this process.
    pub initial: bool,
}

/// A detected changing cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangingCause {
    /// What happened.
    pub reason: Reason,
    /// Whether resume handlers are mixed in (forced `false` for CREATE).
    pub initial: bool,
    /// Whether the object is being deleted (resume handlers skip such objects by default).
    pub deleted: bool,
}

/// Detect the changing cause (Kopf's `detect_changing_cause`).
pub fn detect_changing_cause(inputs: &CauseInputs<'_>) -> ChangingCause {
    let deleted = Body::new(inputs.body).is_deleting();
    let make = |reason, initial| ChangingCause {
        reason,
        initial,
        deleted,
    };
    if inputs.event_type == Some("DELETED") {
        return make(Reason::Gone, inputs.initial);
    }
    if deleted && !Body::new(inputs.body).has_finalizer(inputs.finalizer) {
        return make(Reason::Free, inputs.initial);
    }
    if deleted {
        return make(Reason::Delete, inputs.initial);
    }
    if inputs.old.is_none() {
        return make(Reason::Create, false);
    }
    if inputs.diff.is_empty() && inputs.initial {
        return make(Reason::Resume, true);
    }
    if inputs.diff.is_empty() {
        return make(Reason::Noop, inputs.initial);
    }
    make(Reason::Update, inputs.initial)
}

/// The reason a changing handler kind serves; `None` serves any reason (resume, field).
pub fn handler_reason(kind: HandlerKind) -> Option<Reason> {
    match kind {
        HandlerKind::Create => Some(Reason::Create),
        HandlerKind::Update => Some(Reason::Update),
        HandlerKind::Delete => Some(Reason::Delete),
        _ => None,
    }
}

/// Whether the handler kind's field filter requires the field to actually change
/// (update and field handlers).
pub fn field_needs_change(kind: HandlerKind) -> bool {
    matches!(kind, HandlerKind::Update | HandlerKind::Field)
}

/// Whether a handler needs the finalizer on matching objects: non-optional delete handlers,
/// daemons and timers.
pub fn requires_finalizer(kind: HandlerKind, optional: Option<bool>) -> bool {
    match kind {
        HandlerKind::Delete => !optional.unwrap_or(false),
        HandlerKind::Daemon | HandlerKind::Timer => true,
        _ => false,
    }
}

/// Whether a changing handler is selected for the cause by reason and resume rules (before
/// filters; Kopf's `ChangingRegistry.iter_handlers`). `deleted_option` is the resume
/// handlers' `deleted=` option.
pub fn changing_handler_applies(
    kind: HandlerKind,
    deleted_option: Option<bool>,
    cause: &ChangingCause,
) -> bool {
    if !kind.is_changing() {
        return false;
    }
    if handler_reason(kind).is_some_and(|r| r != cause.reason) {
        return false;
    }
    let initial = kind == HandlerKind::Resume;
    if initial && !cause.initial {
        return false;
    }
    if initial && cause.deleted && !deleted_option.unwrap_or(false) {
        return false;
    }
    true
}

/// The kwargs of a field handler: old/new narrowed to the field and the diff reduced to it
/// (Kopf's `ResourceHandler.adjust_cause`). Absent values are `null`.
pub fn narrow_to_field<S: AsRef<str>>(
    field: &[S],
    old: Option<&Value>,
    new: Option<&Value>,
    diff: &[DiffItem],
) -> (Value, Value, Vec<DiffItem>) {
    let old = dicts::resolve_opt(old, field).cloned().unwrap_or(Value::Null);
    let new = dicts::resolve_opt(new, field).cloned().unwrap_or(Value::Null);
    (old, new, diffs::reduce(diff, field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_of_detection() {
        let body = json!({"metadata": {"name": "x"}});
        let ess = json!({"spec": {}});
        let mut inputs = CauseInputs {
            event_type: Some("MODIFIED"),
            body: &body,
            finalizer: "f",
            old: None,
            new: Some(&ess),
            diff: &[],
            initial: true,
        };
        assert_eq!(detect_changing_cause(&inputs).reason, Reason::Create);
        assert!(!detect_changing_cause(&inputs).initial);
        inputs.old = Some(&ess);
        assert_eq!(detect_changing_cause(&inputs).reason, Reason::Resume);
        inputs.initial = false;
        assert_eq!(detect_changing_cause(&inputs).reason, Reason::Noop);
        inputs.event_type = Some("DELETED");
        assert_eq!(detect_changing_cause(&inputs).reason, Reason::Gone);
    }
}
