//! Kopf's `05-handlers` example in Rust: several handlers per cause, and a field handler.
//!
//! Each handler logs a line as Kopf's does and returns a small result (stored in
//! `status.<handler id>`), so the stages are visible on the object.

use serde_json::{Value, json};

fn diff_json(ctx: &kopf::Context) -> Value {
    ctx.invocation().diff.clone().unwrap_or_else(|| json!([]))
}

/// Runs when the operator starts and finds the object already handled.
#[kopf::on::resume("kopf.dev", "v1", "kopfexamples")]
pub fn resume_fn_1(ctx: &kopf::Context) -> Value {
    tracing::info!("RESUMED 1st");
    json!({"cause": ctx.reason()})
}

/// The first create handler.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
pub fn create_fn_1() -> Value {
    tracing::info!("CREATED 1st");
    json!({"order": 1})
}

/// The second resume handler.
#[kopf::on::resume("kopf.dev", "v1", "kopfexamples")]
pub fn resume_fn_2(ctx: &kopf::Context) -> Value {
    tracing::info!("RESUMED 2nd");
    json!({"cause": ctx.reason()})
}

/// The second create handler.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
pub fn create_fn_2() -> Value {
    tracing::info!("CREATED 2nd");
    json!({"order": 2})
}

/// Any change of the object's essence (spec, labels, annotations).
#[kopf::on::update("kopf.dev", "v1", "kopfexamples")]
pub fn update_fn(ctx: &kopf::Context) -> Value {
    tracing::info!("UPDATED");
    json!({
        "diff": diff_json(ctx),
        "old_field": ctx.old().and_then(|o| o.pointer("/spec/field")).cloned(),
        "new_field": ctx.new().and_then(|n| n.pointer("/spec/field")).cloned(),
    })
}

/// The first delete handler (its presence puts Kopf's finalizer on the object).
#[kopf::on::delete("kopf.dev", "v1", "kopfexamples")]
pub fn delete_fn_1() {
    tracing::info!("DELETED 1st");
}

/// The second delete handler.
#[kopf::on::delete("kopf.dev", "v1", "kopfexamples")]
pub fn delete_fn_2() {
    tracing::info!("DELETED 2nd");
}

/// Changes of `spec.field` only, with the field's old and new values (id
/// `field_fn/spec.field`).
#[kopf::on::field("kopf.dev", "v1", "kopfexamples", field = "spec.field")]
pub fn field_fn(ctx: &kopf::Context) -> Value {
    tracing::info!("FIELD CHANGED: {:?} -> {:?}", ctx.old(), ctx.new());
    json!({"old": ctx.old(), "new": ctx.new(), "diff": diff_json(ctx)})
}
