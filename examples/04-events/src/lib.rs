//! Kopf's `04-events` example in Rust: Kubernetes Events about the handled object.

/// Posts one event of each kind: a custom type, `Normal` (info), `Warning` (warn) and
/// `Error` (exception, with the error's text).
#[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
pub fn create_fn(ctx: &kopf::Context) {
    // The all-purpose function for the event creation.
    ctx.event("SomeType", "SomeReason", "Some message");

    // The shortcuts for the conventional events and common cases.
    ctx.info("SomeReason", "Some message");
    ctx.warn("SomeReason", "Some message");

    let error = std::io::Error::other("Exception text.");
    ctx.exception("SomeReason", format!("Some exception: {error}"));
}
