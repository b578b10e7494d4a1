//! Kubernetes Events about any object: Kopf's module-level `kopf.event`, `kopf.info`,
//! `kopf.warn` and `kopf.exception`.
//!
//! [`Context::info`](crate::Context::info) and friends post about the object being handled;
//! these post about the objects given: a body (or a JSON array of bodies), such as a child
//! the handler created. As in Kopf, posting is best effort: a failure is logged at debug
//! level, and the operator's `settings.posting.level` and `posting.enabled` apply.
//!
//! ```no_run
//! use serde_json::json;
//!
//! #[kopf::on::create("kopfexamples")]
//! fn create_fn(ctx: &kopf::Context) {
//!     let child = json!({
//!         "apiVersion": "v1", "kind": "Pod",
//!         "metadata": {"name": "child-1", "namespace": ctx.namespace(), "uid": "..."},
//!     });
//!     kopf::info(&child, "Adopted", format!("by {}", ctx.object_ref()));
//! }
//! # fn main() {}
//! ```

use std::fmt;

use kopf_abi::protocol::host_methods;
use serde_json::{Value, json};

use crate::hierarchies::build_object_reference;
use crate::host;

/// Posts a `Normal` Event about each object (Kopf's `kopf.info(objs, reason=, message=)`).
/// Not posted when `settings.posting.level` is above `INFO`.
pub fn info(objs: &Value, reason: &str, message: impl fmt::Display) {
    post(objs, "Normal", Some("INFO"), reason, &message.to_string());
}

/// Posts a `Warning` Event about each object (Kopf's `kopf.warn`). Not posted when
/// `settings.posting.level` is above `WARNING`.
pub fn warn(objs: &Value, reason: &str, message: impl fmt::Display) {
    post(objs, "Warning", Some("WARNING"), reason, &message.to_string());
}

/// Posts an `Error` Event about each object (Kopf's `kopf.exception`): the message is
/// `message` followed by the error's text, if any. Kopf defaults the reason to the
/// exception's class name; here it is given. Not posted when `settings.posting.level` is
/// above `ERROR`.
pub fn exception(
    objs: &Value,
    reason: &str,
    message: impl fmt::Display,
    error: Option<&dyn std::error::Error>,
) {
    let message = match error {
        Some(e) => format!("{message} {e}").trim().to_owned(),
        None => message.to_string(),
    };
    post(objs, "Error", Some("ERROR"), reason, &message);
}

/// Posts an Event of any type about each object (Kopf's `kopf.event(objs, type=, reason=,
/// message=)`); not gated by `settings.posting.level`, as in Kopf.
pub fn event(objs: &Value, event_type: &str, reason: &str, message: impl fmt::Display) {
    post(objs, event_type, None, reason, &message.to_string());
}

fn post(objs: &Value, event_type: &str, level: Option<&str>, reason: &str, message: &str) {
    let bodies: Vec<&Value> = match objs {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    for body in bodies {
        let mut payload = json!({
            "object": build_object_reference(body),
            "type": event_type,
            "reason": reason,
            "message": message,
        });
        if let Some(level) = level {
            payload["level"] = Value::from(level);
        }
        if let Err(e) = host::call::<_, Value>(host_methods::EVENT_POST, 1, &payload) {
            tracing::debug!(target: "kopf", "Failed to post an event: {e}");
        }
    }
}
