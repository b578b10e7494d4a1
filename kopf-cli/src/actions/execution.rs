//! Turning a handler's outcome into Kopf's retry decisions.
//!
//! Kopf's `kopf/_core/actions/execution.py`: before invoking, a handler past its
//! `timeout` or out of `retries` fails permanently; after invoking, a temporary error is
//! retried after its delay (or turned permanent if the delay would cross the timeout or
//! the retry limit), a permanent error fails the handler for this cause, and arbitrary
//! errors follow the handler's errors mode with its backoff.
//!
//! Every handler kind that retries (resource handlers and sub-handlers, daemons and timers,
//! activities) decides with [`conclude`] and logs with [`log_decision`].

use kopf_abi::protocol::{ErrorsMode, HandlerErrorKind, HandlerKind, HandlerSpec, Outcome};

use crate::observability::metrics::Metrics;
use crate::structs::pyjson::{py_repr_str, py_timedelta};

/// How far a handler got before this attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attempt {
    /// Attempts made so far (Kopf's `retries` in the progress record).
    pub retries: u32,
    /// Seconds since the first attempt (Kopf's `runtime`).
    pub runtime: f64,
}

/// What should happen to a handler after an attempt (or instead of one).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Done, successfully; deliver the result.
    Success,
    /// Try again after this many seconds.
    Retry {
        /// Seconds to wait.
        delay: f64,
        /// The error text to record.
        message: String,
    },
    /// Done, failed for this cause; no more retries.
    Failure {
        /// The error text to record.
        message: String,
    },
}

/// The errors mode in force for a handler: its own, or Kopf's default for its kind.
pub fn errors_mode(spec: &HandlerSpec) -> ErrorsMode {
    spec.options.errors.unwrap_or(match spec.kind {
        HandlerKind::Event | HandlerKind::Index => ErrorsMode::Ignored,
        HandlerKind::Validate | HandlerKind::Mutate => ErrorsMode::Permanent,
        _ => ErrorsMode::Temporary,
    })
}

/// Whether the handler must fail without being invoked (timeout or retries exhausted).
pub fn precheck(spec: &HandlerSpec, attempt: Attempt) -> Option<Decision> {
    if let Some(timeout) = spec.options.timeout
        && attempt.runtime >= timeout
    {
        return Some(Decision::Failure {
            message: format!(
                "{} has timed out after {}.",
                handler_name(spec.kind, &spec.id),
                py_timedelta(attempt.runtime)
            ),
        });
    }
    if let Some(limit) = spec.options.retries
        && attempt.retries >= limit
    {
        return Some(Decision::Failure {
            message: format!(
                "{} has exceeded {} retries.",
                handler_name(spec.kind, &spec.id),
                attempt.retries
            ),
        });
    }
    None
}

/// Decides what an outcome means for the handler (`attempt` is the state *before* it).
pub fn decide(spec: &HandlerSpec, attempt: Attempt, outcome: &Outcome, default_backoff: f64) -> Decision {
    let Some(error) = &outcome.error else {
        return Decision::Success;
    };
    let message = error.message.clone();
    let delay = match error.kind {
        HandlerErrorKind::Permanent | HandlerErrorKind::Admission => return Decision::Failure { message },
        HandlerErrorKind::Temporary => error.delay.unwrap_or(60.0),
        HandlerErrorKind::Arbitrary => match errors_mode(spec) {
            ErrorsMode::Permanent => return Decision::Failure { message },
            ErrorsMode::Ignored => return Decision::Success,
            ErrorsMode::Temporary => spec.options.backoff.unwrap_or(default_backoff),
        },
    };
    // Look ahead: a retry that would cross the timeout or the retry limit fails now.
    if let Some(timeout) = spec.options.timeout
        && attempt.runtime + delay >= timeout
    {
        return Decision::Failure {
            message: format!("{} has timed out: {message}", handler_name(spec.kind, &spec.id)),
        };
    }
    if let Some(limit) = spec.options.retries
        && attempt.retries + 1 >= limit
    {
        return Decision::Failure {
            message: format!(
                "{} has exceeded {limit} retries: {message}",
                handler_name(spec.kind, &spec.id)
            ),
        };
    }
    Decision::Retry {
        delay: delay.max(0.0),
        message,
    }
}

/// [`decide`], counting a retry in `kopf_handler_retries_total`.
pub fn conclude(
    metrics: &Metrics,
    spec: &HandlerSpec,
    attempt: Attempt,
    outcome: &Outcome,
    default_backoff: f64,
) -> Decision {
    let decision = decide(spec, attempt, outcome, default_backoff);
    count_retry(metrics, spec.kind, &spec.id, &decision);
    decision
}

/// Counts a decision to retry in `kopf_handler_retries_total`.
pub fn count_retry(metrics: &Metrics, kind: HandlerKind, id: &str, decision: &Decision) {
    if matches!(decision, Decision::Retry { .. }) {
        metrics.handler_retried(kind.as_str(), id);
    }
}

/// Logs a decision as Kopf does, under the kind's logger: resource handlers and daemons
/// about their object (named by the `object` span the caller runs in), activities about
/// the operator. Successes of daemons and timers are logged at debug level (a timer
/// succeeds every interval).
pub fn log_decision(kind: HandlerKind, id: &str, decision: &Decision) {
    let handler = handler_name(kind, id);
    let activity = is_activity(kind);
    let background = matches!(kind, HandlerKind::Daemon | HandlerKind::Timer);
    match decision {
        Decision::Success if activity => {
            tracing::info!(target: "kopf.activities", "{handler} succeeded.")
        }
        Decision::Success if background => {
            tracing::debug!(target: "kopf.objects", "{handler} succeeded.")
        }
        Decision::Success => tracing::info!(target: "kopf.objects", "{handler} succeeded."),
        Decision::Retry { delay, message } if activity => tracing::error!(target: "kopf.activities",
            "{handler} failed temporarily: {message}; retrying in {delay}s."),
        Decision::Retry { delay, message } => tracing::error!(target: "kopf.objects",
            "{handler} failed temporarily: {message}; retrying in {delay}s."),
        Decision::Failure { message } if activity => tracing::error!(target: "kopf.activities",
            "{handler} failed permanently: {message}"),
        Decision::Failure { message } => tracing::error!(target: "kopf.objects",
            "{handler} failed permanently: {message}"),
    }
}

/// Whether a kind is an operator-level activity (Kopf's `ActivityHandler`).
fn is_activity(kind: HandlerKind) -> bool {
    matches!(
        kind,
        HandlerKind::Startup | HandlerKind::Cleanup | HandlerKind::Login | HandlerKind::Probe
    )
}

/// A handler as Kopf's log lines name it (its handler classes' `__str__`): the kind's noun
/// and the id as Python's `repr()` shows it, e.g. `Handler 'create_fn'`,
/// `Activity 'startup_fn'`, `Daemon 'monitor'`, `Timer 'tick'`, `Indexer 'by_ns'`,
/// `Webhook 'check'`.
pub fn handler_name(kind: HandlerKind, id: &str) -> String {
    let noun = match kind {
        HandlerKind::Daemon => "Daemon",
        HandlerKind::Timer => "Timer",
        HandlerKind::Index => "Indexer",
        HandlerKind::Validate | HandlerKind::Mutate => "Webhook",
        kind if is_activity(kind) => "Activity",
        _ => "Handler",
    };
    format!("{noun} {}", py_repr_str(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kopf_abi::protocol::{HandlerError, HandlerOptions};

    fn spec(options: HandlerOptions) -> HandlerSpec {
        HandlerSpec {
            id: "h".into(),
            kind: HandlerKind::Create,
            selector: None,
            is_async: false,
            filters: Default::default(),
            options,
        }
    }

    fn failed(kind: HandlerErrorKind, delay: Option<f64>) -> Outcome {
        Outcome {
            error: Some(HandlerError {
                kind,
                message: "boom".into(),
                delay,
                code: None,
                panicked: false,
            }),
            ..Default::default()
        }
    }

    const FIRST: Attempt = Attempt {
        retries: 0,
        runtime: 0.0,
    };

    #[test]
    fn temporary_errors_retry_after_their_delay() {
        let d = decide(
            &spec(Default::default()),
            FIRST,
            &failed(HandlerErrorKind::Temporary, Some(5.0)),
            60.0,
        );
        assert_eq!(
            d,
            Decision::Retry {
                delay: 5.0,
                message: "boom".into()
            }
        );
        let d = decide(
            &spec(Default::default()),
            FIRST,
            &failed(HandlerErrorKind::Temporary, None),
            60.0,
        );
        assert_eq!(
            d,
            Decision::Retry {
                delay: 60.0,
                message: "boom".into()
            }
        );
    }

    #[test]
    fn arbitrary_errors_follow_the_errors_mode() {
        let mut options = HandlerOptions {
            backoff: Some(1.5),
            ..Default::default()
        };
        let outcome = failed(HandlerErrorKind::Arbitrary, None);
        assert_eq!(
            decide(&spec(options.clone()), FIRST, &outcome, 60.0),
            Decision::Retry {
                delay: 1.5,
                message: "boom".into()
            }
        );
        options.errors = Some(ErrorsMode::Permanent);
        assert!(matches!(
            decide(&spec(options.clone()), FIRST, &outcome, 60.0),
            Decision::Failure { .. }
        ));
        options.errors = Some(ErrorsMode::Ignored);
        assert_eq!(decide(&spec(options), FIRST, &outcome, 60.0), Decision::Success);
    }

    #[test]
    fn limits_are_looked_ahead_and_prechecked() {
        let options = HandlerOptions {
            retries: Some(3),
            timeout: Some(10.0),
            ..Default::default()
        };
        let outcome = failed(HandlerErrorKind::Temporary, Some(1.0));
        let third = Attempt {
            retries: 2,
            runtime: 2.0,
        };
        assert!(matches!(
            decide(&spec(options.clone()), third, &outcome, 60.0),
            Decision::Failure { .. }
        ));
        let late = Attempt {
            retries: 0,
            runtime: 9.5,
        };
        assert!(matches!(
            decide(&spec(options.clone()), late, &outcome, 60.0),
            Decision::Failure { .. }
        ));
        assert!(
            precheck(
                &spec(options.clone()),
                Attempt {
                    retries: 3,
                    runtime: 0.0
                }
            )
            .is_some()
        );
        let timed_out = precheck(
            &spec(options.clone()),
            Attempt {
                retries: 0,
                runtime: 10.25,
            },
        );
        // Kopf's words, the runtime as Python prints a timedelta.
        assert!(
            matches!(&timed_out, Some(Decision::Failure { message })
                if message == "Handler 'h' has timed out after 0:00:10.250000."),
            "{timed_out:?}"
        );
        assert!(precheck(&spec(options), FIRST).is_none());
    }

    #[test]
    fn default_errors_modes_per_kind() {
        let mut s = spec(Default::default());
        assert_eq!(errors_mode(&s), ErrorsMode::Temporary);
        s.kind = HandlerKind::Event;
        assert_eq!(errors_mode(&s), ErrorsMode::Ignored);
        s.kind = HandlerKind::Validate;
        assert_eq!(errors_mode(&s), ErrorsMode::Permanent);
    }
}
