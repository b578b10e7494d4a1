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
        // Kopf's example uses an `async def` sub-handler; so does this one.
        ctx.subhandler(id).register_async(move |ctx: kopf::Context| {
            let item = item.clone();
            async move {
                tracing::info!("=== Handling creation for {item}. ===");
                Ok::<Value, kopf::Error>(json!({"item": item, "handler": ctx.handler_id()}))
            }
        })?;
    }
    Ok(())
}
