//! Kopf's `09-testing` example in Rust: a small operator whose own test suite
//! (`tests/operator.rs`) runs it with the real `kopf` binary against the Kubernetes API
//! emulator of the `kopf-testing` crate, and checks the objects it changes.

use serde_json::{Value, json};

/// Stores `status.create_fn.message`.
#[kopf::on::create("kopfexamples")]
pub fn create_fn(ctx: &kopf::Context) -> Value {
    let field = ctx.spec().get("field").cloned().unwrap_or(Value::Null);
    json!({"message": format!("created with {field}")})
}

/// Stores the new value of `spec.field` in `status.field_fn`.
#[kopf::on::field("kopfexamples", field = "spec.field")]
pub fn field_fn(ctx: &kopf::Context) -> Value {
    json!({"new": ctx.new()})
}

/// Runs before deletion; the operator holds a finalizer until it succeeds.
#[kopf::on::delete("kopfexamples")]
pub fn delete_fn(ctx: &kopf::Context) {
    tracing::info!("deleting {}", ctx.object_ref());
}

/// Unit tests: the handler functions called directly with contexts from the SDK's
/// `kopf::testing::ContextBuilder`, no cluster and no `kopf` binary.
#[cfg(test)]
mod tests {
    use kopf::testing::ContextBuilder;
    use serde_json::json;

    #[test]
    fn create_fn_reports_the_field() {
        let ctx = ContextBuilder::new("kopf.dev/v1", "KopfExample")
            .namespace("default")
            .name("kex-1")
            .spec(json!({"field": "one"}))
            .reason("create")
            .build();
        assert_eq!(super::create_fn(&ctx), json!({"message": "created with \"one\""}));
    }

    #[test]
    fn field_fn_returns_the_new_value() {
        let ctx = ContextBuilder::new("kopf.dev/v1", "KopfExample")
            .reason("update")
            .old(json!("one"))
            .new_value(json!("two"))
            .build();
        assert_eq!(super::field_fn(&ctx), json!({"new": "two"}));
    }
}
