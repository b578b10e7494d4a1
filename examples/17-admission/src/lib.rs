//! Kopf's `17-admission` example in Rust: validating and mutating admission webhooks.
//!
//! Run with a webhook server and managed webhook configurations, e.g.:
//!
//! ```text
//! kopf run -A --webhook-server https://127.0.0.1:9443 --webhook-managed auto.kopf.dev \
//!     target/debug/libexample_17_admission.so
//! ```
//!
//! * `check_spec` rejects objects with `spec.field: wrong` (HTTP 422 and the handler's
//!   message), and warns about objects without `spec.field`;
//! * `defaults` fills in `spec.replicas: 1` and the label `defaulted-by: kopf` when absent,
//!   and marks dry-run requests with the annotation `kopf.dev/dryrun: "true"`;
//! * `audit_dryrun` records dry-run requests in a warning (it has side effects, so it
//!   declares `side_effects = true`: the API server then calls it on dry runs too);
//! * `stamp` (mutating, all operations) annotates objects labelled `stamp` with the
//!   operation; as in Kopf, mutating handlers are not called for deletions unless their
//!   operations are exactly `["DELETE"]`;
//! * `strict_panics` panics on objects labelled `panic: "yes"` (a failure: the request is
//!   denied); `lenient_panics` panics on objects labelled `panic: "lenient"` and has
//!   `ignore_failures = true`: as in Kopf, that is the configuration's `failurePolicy:
//!   Ignore` (the API server admits when the webhook cannot be reached), so its own panic
//!   still denies;
//! * `guarded` runs only when its `when=` callback says so; the callback panics on objects
//!   with `spec.filter: undecidable`: a webhook never admits on a guess, so the request is
//!   denied (500), also with `ignore_failures = true` (only the failure policy, as above).

use serde_json::{Value, json};

/// Rejects `spec.field: wrong`; warns when `spec.field` is missing.
#[kopf::on::validate("kopfexamples", operations = ["CREATE", "UPDATE"])]
pub fn check_spec(ctx: &kopf::Context) -> kopf::Result<()> {
    match ctx.spec().get("field").and_then(Value::as_str) {
        Some("wrong") => Err(kopf::AdmissionError::new("spec.field must not be 'wrong'.")
            .code(422)
            .into()),
        Some(_) => Ok(()),
        None => {
            ctx.add_warning("spec.field is not set.");
            Ok(())
        }
    }
}

/// Fills in defaults: `spec.replicas` and a label.
#[kopf::on::mutate("kopfexamples", operations = ["CREATE", "UPDATE"])]
pub fn defaults(ctx: &kopf::Context) {
    let body = ctx.body();
    let mut patch = ctx.patch();
    if body.pointer("/spec/replicas").is_none() {
        patch.spec()["replicas"] = json!(1);
    }
    if body.pointer("/metadata/labels/defaulted-by").is_none() {
        patch.meta()["labels"]["defaulted-by"] = json!("kopf");
    }
    if ctx.dryrun() {
        patch.meta()["annotations"]["kopf.dev/dryrun"] = json!("true");
    }
    // What a merge patch cannot say (Kopf's `patch.fns`): append to a list.
    if body.pointer("/spec/tags").is_some_and(Value::is_array) {
        patch.fns().push(|body: &mut Value| {
            if let Some(tags) = body.pointer_mut("/spec/tags").and_then(Value::as_array_mut)
                && !tags.contains(&json!("defaulted"))
            {
                tags.push(json!("defaulted"));
            }
        });
    }
}

/// Stamps the operation on objects labelled `stamp` (never called for deletions).
#[kopf::on::mutate("kopfexamples", labels = {"stamp": kopf::PRESENT})]
pub fn stamp(ctx: &kopf::Context) {
    ctx.patch().meta()["annotations"]["kopf.dev/stamped"] = json!(ctx.operation());
}

/// Reports dry runs in a warning (and would skip side effects there).
#[kopf::on::validate("kopfexamples", side_effects = true)]
pub fn audit_dryrun(ctx: &kopf::Context) {
    if ctx.dryrun() {
        let user = ctx
            .userinfo()
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or("?");
        ctx.add_warning(format!("dry run of {} by {user}", ctx.operation().unwrap_or("?")));
    }
}

/// Panics for objects labelled `panic: "yes"`: the request is denied.
#[kopf::on::validate("kopfexamples", labels = {"panic": "yes"})]
pub fn strict_panics(_ctx: &kopf::Context) {
    panic!("the strict handler panics on purpose");
}

/// Panics for objects labelled `panic: "lenient"`; `ignore_failures` sets only the
/// configuration's failure policy (`Ignore`), so the panic still denies.
#[kopf::on::validate("kopfexamples", labels = {"panic": "lenient"}, ignore_failures = true)]
pub fn lenient_panics(_ctx: &kopf::Context) {
    panic!("the lenient handler panics on purpose");
}

/// Whether `guarded` applies: never, except that it cannot tell for `spec.filter:
/// undecidable` (it panics).
fn guard_applies(ctx: &kopf::Context) -> bool {
    if ctx.spec().get("filter").and_then(Value::as_str) == Some("undecidable") {
        panic!("the guard's filter cannot decide");
    }
    false
}

/// Guarded by a `when=` callback that may fail: its failure denies the request.
#[kopf::on::validate("kopfexamples", when = guard_applies, ignore_failures = true)]
pub fn guarded(_ctx: &kopf::Context) {}
