//! One call of a handler, or of its filter callbacks, as Kopf's `actions/invocation.py`.
//!
//! [`invoke`] is the only way the engine runs a handler: it applies the call's deadline,
//! turns a failure across the ABI into an arbitrary handler error (as Kopf treats any
//! exception), records the handler metrics, and logs what the handler could not say
//! itself (a call that never returned, a plugin that failed). [`check_filters`] asks a
//! plugin for a handler's callback filters and fails closed: a callback that panicked, or
//! a plugin that gave no answer, is [`FilterError`], never "no match".

use std::time::{Duration, Instant};

use kopf_abi::protocol::{HandlerError, HandlerErrorKind, HandlerKind, Invocation, Outcome, Purpose};
use tokio_util::sync::CancellationToken;

use super::execution::handler_name;
use crate::{
    observability::metrics::Metrics,
    plugin::{HandlerRef, PluginError, PluginSet},
    structs::pyjson::py_timedelta,
};

/// One call of a handler.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The handler to run.
    pub handler: &'a HandlerRef,
    /// What the handler gets (its `Context`).
    pub invocation: &'a Invocation,
    /// The object's body already serialised (daemons and timers serialise it once per
    /// object version); `invocation.body` is then `None`.
    pub body_json: Option<&'a str>,
    /// How long the call may take; past it the call is abandoned and the handler fails.
    pub timeout: Option<Duration>,
    /// Cancels the call in the plugin (a stopping daemon).
    pub cancel: Option<&'a CancellationToken>,
}

impl<'a> Call<'a> {
    /// A call of `handler` with `invocation`, no deadline, not cancellable.
    pub fn new(handler: &'a HandlerRef, invocation: &'a Invocation) -> Self {
        Call {
            handler,
            invocation,
            body_json: None,
            timeout: None,
            cancel: None,
        }
    }

    /// The same call, abandoned after `timeout` (if any).
    pub fn with_timeout(self, timeout: Option<Duration>) -> Self {
        Call { timeout, ..self }
    }
}

/// Logs an invocation problem under the handler kind's log target (Kopf's loggers:
/// objects, activities, admission).
macro_rules! log_for {
    ($kind:expr, $level:ident, $($arg:tt)+) => {
        match $kind {
            HandlerKind::Startup | HandlerKind::Cleanup | HandlerKind::Login | HandlerKind::Probe => {
                tracing::$level!(target: "kopf.activities", $($arg)+)
            }
            HandlerKind::Validate | HandlerKind::Mutate => tracing::$level!(target: "kopf.admission", $($arg)+),
            _ => tracing::$level!(target: "kopf.objects", $($arg)+),
        }
    };
}

/// Runs one handler call to its outcome; never fails: every failure becomes the outcome's
/// error. Records `kopf_handler_invocations_total` and `kopf_handler_duration_seconds`.
///
/// # Cancel safety
/// Dropping the future cancels the call in the plugin; nothing is recorded then.
pub async fn invoke(metrics: &Metrics, plugins: &PluginSet, call: Call<'_>) -> Outcome {
    let handler = call.handler;
    let started = Instant::now();
    let submitted = submit(plugins, &call);
    let invoked = match call.timeout {
        None => Some(submitted.await),
        Some(limit) => tokio::time::timeout(limit, submitted).await.ok(),
    };
    let (outcome, label) = match invoked {
        Some(Ok(outcome)) => {
            let label = outcome_label(&outcome);
            (outcome, label)
        }
        Some(Err(error)) => {
            log_for!(
                handler.kind(),
                error,
                "{} could not be invoked: {error}",
                handler_name(handler.kind(), handler.id())
            );
            (failed(HandlerErrorKind::Arbitrary, error.to_string()), "failure")
        }
        None => {
            let limit = call.timeout.unwrap_or_default();
            let timeout = handler.spec().options.timeout.unwrap_or(limit.as_secs_f64());
            log_for!(
                handler.kind(),
                error,
                "{} did not return within its timeout ({:.1}s left of {timeout:.1}s); the call is abandoned (it keeps its thread until it returns).",
                handler_name(handler.kind(), handler.id()),
                limit.as_secs_f64()
            );
            let message = format!(
                "{} has timed out after {} (the call did not return).",
                handler_name(handler.kind(), handler.id()),
                py_timedelta(timeout)
            );
            (failed(HandlerErrorKind::Permanent, message), "timeout")
        }
    };
    metrics.handler_invoked(
        handler.kind().as_str(),
        handler.id(),
        label,
        started.elapsed().as_secs_f64(),
    );
    outcome
}

async fn submit(plugins: &PluginSet, call: &Call<'_>) -> Result<Outcome, PluginError> {
    match (call.body_json, call.cancel) {
        (Some(body), Some(cancel)) => {
            plugins
                .invoke_submitted_with_body(call.handler, call.invocation, body, cancel)
                .await
        }
        (Some(body), None) => {
            plugins
                .invoke_submitted_with_body(call.handler, call.invocation, body, &CancellationToken::new())
                .await
        }
        (None, Some(cancel)) => {
            plugins
                .invoke_submitted(call.handler, call.invocation, cancel)
                .await
        }
        (None, None) => plugins.invoke(call.handler, call.invocation).await,
    }
}

/// An outcome carrying only an error of this kind.
pub fn failed(kind: HandlerErrorKind, message: String) -> Outcome {
    Outcome {
        error: Some(HandlerError {
            kind,
            message,
            delay: None,
            code: None,
            panicked: false,
        }),
        ..Outcome::default()
    }
}

/// The `outcome` label of `kopf_handler_invocations_total` for a returned outcome.
fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome.error.as_ref().map(|e| e.kind) {
        None => "success",
        Some(HandlerErrorKind::Temporary) => "temporary",
        Some(HandlerErrorKind::Permanent) => "permanent",
        Some(HandlerErrorKind::Arbitrary) => "arbitrary",
        Some(HandlerErrorKind::Admission) => "admission",
    }
}

/// A handler's filter callbacks could not decide: the engine must not act as if they
/// said "no" (that would, e.g., release a deleting object's finalizer unhandled, or admit
/// a request unvalidated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the filters of handler {handler:?} failed: {message}")]
pub struct FilterError {
    /// The handler id.
    pub handler: String,
    /// What went wrong.
    pub message: String,
}

/// Asks the plugin whether `handler`'s callback filters match the object of `invocation`
/// (which is sent with purpose `filter`).
pub async fn check_filters(
    plugins: &PluginSet,
    handler: &HandlerRef,
    invocation: &Invocation,
) -> Result<bool, FilterError> {
    let mut inv = invocation.clone();
    inv.purpose = Purpose::Filter;
    let error = |message: String| FilterError {
        handler: handler.id().to_owned(),
        message,
    };
    match plugins.invoke(handler, &inv).await {
        Ok(Outcome { error: Some(e), .. }) => Err(error(e.message)),
        Ok(Outcome { matches: Some(m), .. }) => Ok(m),
        Ok(_) => Err(error("the plugin gave no answer".to_owned())),
        Err(e) => Err(error(e.to_string())),
    }
}
