//! Kopf's `07-subhandlers` example in Rust: a create handler registers one sub-handler
//! per item of `spec.items`, with ids `item-<value>`.
//!
//! Each sub-handler's id is `create_fn/item-<value>`: its progress is persisted under
//! that id (annotation `kopf.zalando.org/create_fn.item-<value>` while it is unfinished)
//! and its result lands in `status["create_fn/item-<value>"]`, as in Kopf. The parent
//! `create_fn` finishes once all its sub-handlers have.

use serde_json::{Value, json};

/// The items of `spec.items` (strings; other values in their JSON form).
fn items(ctx: &kopf::Context) -> Vec<String> {
    ctx.spec()
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect()
}

/// Registers one sub-handler per item; they run after this function returns. The
/// function must be idempotent: it runs again in every cycle while a sub-handler is
/// unfinished (and registers the same sub-handlers again).
#[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
pub fn create_fn(ctx: &kopf::Context) -> kopf::Result<()> {
    for item in items(ctx) {
        let id = format!("item-{item}");
        ctx.register(id, move |ctx: &kopf::Context| -> kopf::Result<Value> {
            tracing::info!("=== Handling creation for {item}. ===");
            Ok(json!({"item": item, "handler": ctx.handler_id()}))
        })?;
    }
    Ok(())
}
