//! Sub-handlers (Kopf's `@kopf.subhandler`, `kopf.register`, `kopf.execute`): the host's
//! side.
//!
//! The plugin registers and calls sub-handlers while the parent handler runs (closures
//! exist only during that call) and reports what each did in `Outcome.children`. The host
//! keeps their progress, exactly as Kopf stores it:
//!
//! - each child has its own progress record under its full id `parent/child` (annotation
//!   `kopf.zalando.org/parent.child`), and its result goes to `status["parent/child"]`;
//! - the parent's record lists all children in its sorted `subrefs`, and stays unfinished
//!   while any child is (retried with Kopf's `HandlerChildrenRetry`, whose message Kopf
//!   persists as the literal `"None"`), delayed until the earliest child is due;
//! - the parent is called again in each cycle while children are pending; the host tells
//!   it which children are finished (not called again) or sleeping, and the attempt
//!   counters of the others ([`Invocation::subhandlers`]);
//! - the parent finishes when all children have finished, successfully or not (as in
//!   Kopf 1.45, a child's permanent failure does not fail the parent);
//! - when the cause is fully handled, the records of the children are purged together
//!   with the parent's (through `subrefs`), as in Kopf;
//! - a child may register children in turn (reported in its own `children`): it is then
//!   a parent as above, and the top parent's `subrefs` lists all depths, as Kopf's.
//!
//! [`Invocation::subhandlers`]: kopf_abi::protocol::Invocation::subhandlers

use std::collections::{BTreeMap, BTreeSet};

use kopf_abi::protocol::{HandlerSpec, Outcome, SubhandlerOutcome, SubhandlerState};
use serde_json::Value;

use crate::actions::{
    application,
    execution::{self, Attempt, Decision},
};
use crate::persistence::{
    progress::{HandlerState, StepOutcome},
    progress_storage::ProgressStorage,
    times::Timestamp,
};
use crate::structs::patches::Patch;

/// The message Kopf persists for a parent with unfinished children (`str()` of its
/// message-less `HandlerChildrenRetry`).
pub const CHILDREN_RETRY_MESSAGE: &str = "None";

/// The stored states of a parent's children, found through the parent's `subrefs`.
///
/// Only ids under `parent_id/` are returned (the sub-handlers of all depths: Kopf lists
/// them all in the top parent's `subrefs`), and only records of the current
/// `purpose` (records of a superseded cause are treated as absent, so those children start
/// over). Unreadable records are logged and treated as absent.
pub fn known_children(
    storage: &ProgressStorage,
    body: &Value,
    parent_id: &str,
    parent: &HandlerState,
    purpose: Option<&str>,
    now: Timestamp,
) -> BTreeMap<String, HandlerState> {
    let prefix = format!("{parent_id}/");
    let mut known = BTreeMap::new();
    for id in &parent.subrefs {
        let Some(rest) = id.strip_prefix(&prefix) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let record = match storage.fetch(id, body) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(target: "kopf.objects", "The progress record of sub-handler {id:?} is unreadable, starting it over: {error}");
                continue;
            }
        };
        match HandlerState::from_record(&record, now, id) {
            Ok(mut state) => {
                if state.purpose.is_some() && purpose.is_some() && state.purpose.as_deref() != purpose {
                    continue;
                }
                state.active = true;
                known.insert(id.clone(), state);
            }
            Err(error) => {
                tracing::warn!(target: "kopf.objects", "The progress record of sub-handler {id:?} is unreadable, starting it over: {error}");
            }
        }
    }
    known
}

/// What the plugin is told about the known children (finished, sleeping, attempts).
pub fn invocation_states(
    known: &BTreeMap<String, HandlerState>,
    now: &Timestamp,
) -> BTreeMap<String, SubhandlerState> {
    known
        .iter()
        .map(|(id, state)| {
            let sub = SubhandlerState {
                retry: u32::try_from(state.retries.max(0)).unwrap_or(u32::MAX),
                started: Some(state.started.to_string()),
                runtime: state.runtime(now),
                finished: state.finished(),
                sleeping: state.sleeping(now),
            };
            (id.clone(), sub)
        })
        .collect()
}

/// The children's part of a parent's attempt, once settled by [`settle`].
#[derive(Debug, Default)]
pub struct Settled {
    /// Decisions on the sub-handlers of any depth that were called (or failed without a
    /// call), each sub-handler's own sub-handlers before it.
    pub decisions: Vec<(String, Decision)>,
    /// The sub-handlers whose retry is only a wait for their own sub-handlers (Kopf logs
    /// these quietly: "has unfinished sub-handlers").
    pub waiting: BTreeSet<String>,
    /// The new states of all registered sub-handlers of any depth (store the changed ones).
    pub states: BTreeMap<String, HandlerState>,
    /// All registered sub-handlers' ids, of any depth: the parent's new `subrefs`.
    pub subrefs: Vec<String>,
    /// Seconds until the earliest unfinished direct child is due; `None` when all finished.
    pub pending_delay: Option<f64>,
}

impl Settled {
    /// Takes in what a child's own sub-handlers settled.
    fn absorb(&mut self, grand: Settled) {
        self.decisions.extend(grand.decisions);
        self.waiting.extend(grand.waiting);
        self.states.extend(grand.states);
        self.subrefs.extend(grand.subrefs);
    }
}

fn child_spec(parent: &HandlerSpec, child: &SubhandlerOutcome) -> HandlerSpec {
    HandlerSpec {
        id: child.id.clone(),
        kind: parent.kind,
        selector: None,
        is_async: false,
        filters: Default::default(),
        options: child.options.clone(),
    }
}

/// What every level of [`settle`] shares.
struct Settling<'a> {
    parent: &'a HandlerSpec,
    purpose: Option<&'a str>,
    now: Timestamp,
    default_backoff: f64,
}

/// Applies the children's outcomes: decides each (Kopf's retry rules, with each child's
/// own options; a child that registered sub-handlers in turn stays unfinished while any
/// of those is, as its parent does), merges their patches, delivers the results of the
/// successful ones into `patch`, and computes their new states.
pub fn settle(
    parent: &HandlerSpec,
    children: &[SubhandlerOutcome],
    mut known: BTreeMap<String, HandlerState>,
    purpose: Option<&str>,
    now: Timestamp,
    default_backoff: f64,
    patch: &mut Patch,
) -> Settled {
    let settling = Settling {
        parent,
        purpose,
        now,
        default_backoff,
    };
    let mut settled = settle_level(&settling, children, &mut known, patch);
    settled.subrefs.sort();
    settled.subrefs.dedup();
    settled
}

/// One level of sub-handlers (and, through it, the levels below).
fn settle_level(
    settling: &Settling<'_>,
    children: &[SubhandlerOutcome],
    known: &mut BTreeMap<String, HandlerState>,
    patch: &mut Patch,
) -> Settled {
    let now = settling.now;
    let mut settled = Settled::default();
    for child in children {
        if child.id.is_empty() || settled.states.contains_key(&child.id) {
            continue;
        }
        let state = known
            .remove(&child.id)
            .unwrap_or_else(|| HandlerState::from_scratch(now, settling.purpose));
        let mut step_subrefs = Vec::new();
        let decision = if state.finished() {
            None
        } else {
            let (decision, grand) = decide_child(settling, child, &state, known, patch);
            if let Some(grand) = grand {
                if is_waiting(decision.as_ref(), &grand) {
                    settled.waiting.insert(child.id.clone());
                }
                step_subrefs.clone_from(&grand.subrefs);
                settled.absorb(grand);
            }
            decision
        };
        let state = match &decision {
            None => state,
            Some(decision) => {
                let mut step = step_outcome(decision.clone());
                step.subrefs = step_subrefs;
                state.with_outcome(&step, now)
            }
        };
        if let Some(decision) = decision {
            settled.decisions.push((child.id.clone(), decision));
        }
        if !state.finished() {
            let delay = state.delayed.map_or(0.0, |d| now.seconds_until(&d).max(0.0));
            settled.pending_delay = Some(settled.pending_delay.map_or(delay, |p: f64| p.min(delay)));
        }
        settled.subrefs.push(child.id.clone());
        settled.states.insert(child.id.clone(), state);
    }
    settled
}

/// The decision on one unfinished child, with its own sub-handlers settled first.
fn decide_child(
    settling: &Settling<'_>,
    child: &SubhandlerOutcome,
    state: &HandlerState,
    known: &mut BTreeMap<String, HandlerState>,
    patch: &mut Patch,
) -> (Option<Decision>, Option<Settled>) {
    let spec = child_spec(settling.parent, child);
    let attempt = Attempt {
        retries: u32::try_from(state.retries.max(0)).unwrap_or(u32::MAX),
        runtime: state.runtime(&settling.now),
    };
    if !child.invoked {
        return (execution::precheck(&spec, attempt), None);
    }
    let outcome = Outcome {
        error: child.error.clone(),
        patch: child.patch.clone(),
        result: child.result.clone(),
        ..Default::default()
    };
    // Counted by the caller, which has the operator's metrics.
    let mut decision = execution::decide(&spec, attempt, &outcome, settling.default_backoff);
    let grand = (!child.children.is_empty()).then(|| {
        let grand = settle_level(settling, &child.children, known, patch);
        decision = parent_decision(decision.clone(), &grand);
        grand
    });
    application::collect(patch, &child.id, &outcome, decision == Decision::Success);
    (Some(decision), grand)
}

/// Whether a child's retry is only the wait for its own sub-handlers.
fn is_waiting(decision: Option<&Decision>, grand: &Settled) -> bool {
    grand.pending_delay.is_some()
        && matches!(decision, Some(Decision::Retry { message, .. }) if message == CHILDREN_RETRY_MESSAGE)
}

/// The state-level outcome of a decision.
pub fn step_outcome(decision: Decision) -> StepOutcome {
    match decision {
        Decision::Success => StepOutcome {
            final_: true,
            ..Default::default()
        },
        Decision::Retry { delay, message } => StepOutcome {
            final_: false,
            delay: Some(delay),
            error: Some(message),
            ..Default::default()
        },
        Decision::Failure { message } => StepOutcome {
            final_: true,
            error: Some(message),
            ..Default::default()
        },
    }
}

/// The parent's decision given its own and its children's: a parent that succeeded (or
/// stopped at `execute()` for pending children) stays unfinished while children are
/// pending (Kopf's `HandlerChildrenRetry`, message `"None"`).
pub fn parent_decision(own: Decision, settled: &Settled) -> Decision {
    match (own, settled.pending_delay) {
        (Decision::Success, Some(delay)) => Decision::Retry {
            delay,
            message: CHILDREN_RETRY_MESSAGE.to_owned(),
        },
        (own, _) => own,
    }
}

/// Writes the changed children's records into the patch.
pub fn store(storage: &ProgressStorage, settled: &Settled, body: &Value, patch: &mut Patch) {
    for (id, state) in &settled.states {
        if state.is_changed() {
            storage.store(id, state, body, patch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kopf_abi::protocol::{HandlerError, HandlerErrorKind, HandlerKind};
    use serde_json::json;

    /// Kopf 1.45's own records, as its test run wrote them ([sim] in the reference): the
    /// parent pending with `"message":"None"` and sorted `subrefs`, one child done.
    fn kopf_written_body() -> Value {
        json!({"metadata": {"name": "obj", "namespace": "ns", "annotations": {
            "kopf.zalando.org/create_parent": r#"{"started":"2026-11-21T23:59:40.100000+00:00","delayed":"2999-01-01T00:00:00.000000+00:00","purpose":"create","retries":1,"success":false,"failure":false,"message":"None","subrefs":["create_parent/item-i1","create_parent/item-i2"]}"#,
            "kopf.zalando.org/create_parent.item-i1": r#"{"started":"2026-11-21T23:59:40.100000+00:00","stopped":"2026-11-21T23:59:40.200000+00:00","purpose":"create","retries":1,"success":true,"failure":false}"#,
        }}})
    }

    fn now() -> Timestamp {
        Timestamp::parse("2026-11-21T23:59:50.000000+00:00").unwrap()
    }

    fn parent_state(storage: &ProgressStorage, body: &Value) -> HandlerState {
        let record = storage.fetch("create_parent", body).unwrap().unwrap();
        HandlerState::from_record(&record, now(), "create_parent").unwrap()
    }

    fn spec() -> HandlerSpec {
        HandlerSpec {
            id: "create_parent".into(),
            kind: HandlerKind::Create,
            selector: None,
            is_async: false,
            filters: Default::default(),
            options: Default::default(),
        }
    }

    fn child(id: &str, invoked: bool, error: Option<HandlerError>) -> SubhandlerOutcome {
        SubhandlerOutcome {
            id: id.into(),
            invoked,
            result: Some(json!({"item": id})),
            error,
            ..Default::default()
        }
    }

    #[test]
    fn reads_kopf_written_subrefs_and_child_records() {
        let storage = ProgressStorage::default();
        let body = kopf_written_body();
        let parent = parent_state(&storage, &body);
        assert_eq!(parent.subrefs, ["create_parent/item-i1", "create_parent/item-i2"]);
        assert_eq!(parent.message.as_deref(), Some("None"));
        let known = known_children(&storage, &body, "create_parent", &parent, Some("create"), now());
        assert_eq!(known.len(), 1, "only item-i1 has a record: {known:?}");
        let states = invocation_states(&known, &now());
        let i1 = &states["create_parent/item-i1"];
        assert!(i1.finished && !i1.sleeping && !i1.is_due());
        assert_eq!(i1.retry, 1);
        assert!(!states.contains_key("create_parent/item-i2"), "i2 is new: due");

        // Continuing: i1 is not called again, i2 succeeds now; the parent finishes.
        let mut patch = Patch::new();
        let children = [
            child("create_parent/item-i1", false, None),
            child("create_parent/item-i2", true, None),
        ];
        let settled = settle(&spec(), &children, known, Some("create"), now(), 60.0, &mut patch);
        assert_eq!(settled.pending_delay, None);
        assert_eq!(
            settled.decisions,
            [("create_parent/item-i2".to_owned(), Decision::Success)]
        );
        assert_eq!(parent_decision(Decision::Success, &settled), Decision::Success);
        assert!(!settled.states["create_parent/item-i1"].is_changed());
        let status = patch.get(&["status"]).cloned().unwrap();
        assert_eq!(
            status,
            json!({"create_parent/item-i2": {"item": "create_parent/item-i2"}})
        );
    }

    #[test]
    fn pending_children_keep_the_parent_pending_with_kopfs_message() {
        let storage = ProgressStorage::default();
        let body = json!({"metadata": {"name": "obj"}});
        let temporary = HandlerError {
            kind: HandlerErrorKind::Temporary,
            message: "not yet".into(),
            delay: Some(7.0),
            code: None,
            panicked: false,
        };
        let children = [
            child("create_parent/b", true, Some(temporary)),
            child("create_parent/a", true, None),
        ];
        let mut patch = Patch::new();
        let settled = settle(
            &spec(),
            &children,
            BTreeMap::new(),
            Some("create"),
            now(),
            60.0,
            &mut patch,
        );
        assert_eq!(settled.subrefs, ["create_parent/a", "create_parent/b"]);
        assert_eq!(settled.pending_delay, Some(7.0));
        let decision = parent_decision(Decision::Success, &settled);
        assert_eq!(
            decision,
            Decision::Retry {
                delay: 7.0,
                message: "None".into()
            }
        );
        // The parent's record as Kopf writes it: "None" message, sorted subrefs.
        let mut outcome = step_outcome(decision);
        outcome.subrefs = settled.subrefs.clone();
        let parent = HandlerState::from_scratch(now(), Some("create")).with_outcome(&outcome, now());
        let text = parent.to_json_text(false);
        assert!(
            text.ends_with(r#""retries":1,"success":false,"failure":false,"message":"None","subrefs":["create_parent/a","create_parent/b"]}"#),
            "{text}"
        );
        store(&storage, &settled, &body, &mut patch);
        let b = patch
            .annotation("kopf.zalando.org/create_parent.b")
            .flatten()
            .unwrap();
        assert!(
            b.contains(r#""message":"not yet""#) && b.contains(r#""delayed":"#),
            "{b}"
        );
        assert!(patch.annotation("kopf.zalando.org/create_parent.a").is_some());
    }

    #[test]
    fn exhausted_children_fail_without_a_call_and_the_parent_finishes() {
        let mut known = BTreeMap::new();
        let mut state = HandlerState::from_scratch(now(), Some("create"));
        state.retries = 2;
        known.insert("create_parent/r".to_owned(), state);
        let mut c = child("create_parent/r", false, None);
        c.options.retries = Some(2);
        let mut patch = Patch::new();
        let settled = settle(&spec(), &[c], known, Some("create"), now(), 60.0, &mut patch);
        assert!(matches!(settled.decisions[0].1, Decision::Failure { .. }));
        assert!(settled.states["create_parent/r"].failure);
        assert_eq!(parent_decision(Decision::Success, &settled), Decision::Success);
        assert!(patch.get(&["status"]).is_none());
    }

    #[test]
    fn a_childs_pending_grandchild_keeps_the_child_and_the_parent_pending() {
        let temporary = HandlerError {
            kind: HandlerErrorKind::Temporary,
            message: "later".into(),
            delay: Some(4.0),
            code: None,
            panicked: false,
        };
        let mut a = child("create_parent/a", true, None);
        a.children = vec![
            child("create_parent/a/x", true, None),
            child("create_parent/a/y", true, Some(temporary)),
        ];
        let mut patch = Patch::new();
        let settled = settle(
            &spec(),
            &[a],
            BTreeMap::new(),
            Some("create"),
            now(),
            60.0,
            &mut patch,
        );
        assert_eq!(
            settled.subrefs,
            ["create_parent/a", "create_parent/a/x", "create_parent/a/y"],
            "the top parent lists all depths, as Kopf"
        );
        assert!(settled.waiting.contains("create_parent/a"), "{settled:?}");
        let a = &settled.states["create_parent/a"];
        assert_eq!(a.message.as_deref(), Some("None"));
        assert_eq!(a.subrefs, ["create_parent/a/x", "create_parent/a/y"]);
        assert!(!a.finished() && a.delayed.is_some());
        assert!(settled.states["create_parent/a/x"].success);
        assert_eq!(settled.pending_delay, Some(4.0));
        assert!(matches!(
            parent_decision(Decision::Success, &settled),
            Decision::Retry { delay, .. } if delay == 4.0
        ));
        let status = patch.get(&["status"]).cloned().unwrap();
        assert_eq!(
            status,
            json!({"create_parent/a/x": {"item": "create_parent/a/x"}}),
            "a waiting child's result is not delivered yet"
        );
    }
}
