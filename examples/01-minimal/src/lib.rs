//! Kopf's `01-minimal` example in Rust: one create handler whose result lands in
//! `status.create_fn`.

use serde_json::{Value, json};

/// Logs the object's spec and returns a message, stored by the operator as
/// `status.create_fn.message`.
#[kopf::on::create("kopfexamples")]
pub fn create_fn(ctx: &kopf::Context) -> Value {
    tracing::info!("And here we are! Creating: {}", ctx.spec());
    json!({"message": "hello world"})
}
