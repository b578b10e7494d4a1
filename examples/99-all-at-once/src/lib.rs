//! Kopf's `99-all-at-once` example in Rust: most handler kinds in one plugin.
//!
//! * `create_fn` returns a result into `status.create_fn` and posts events;
//! * `update_fn` and `field_fn` see the diff and the old/new values of `spec.field`;
//! * `delete_fn` runs before the object goes away (the operator holds a finalizer);
//! * `resume_fn` runs when the operator restarts and finds existing objects;
//! * `pod_event_fn` spies on pods (no state stored);
//! * `pods_by_namespace` indexes pods, `pod_count_probe` reports the index on the
//!   liveness endpoint;
//! * `tick` is a timer, `monitor` a daemon;
//! * `check_field` is a validating admission webhook (needs `--webhook-*` options to run).
//!
//! The crate is also an `rlib` so that `cargo test --doc -p example-99-all-at-once`
//! compiles every Rust snippet of the user guide in `docs/` (the `user_guide` module,
//! built for doctests only).

use std::time::Duration;

use serde_json::{Value, json};

/// The spec of a `KopfExample`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Spec {
    /// Any text.
    #[serde(default)]
    pub field: String,
    /// A list of items.
    #[serde(default)]
    pub items: Vec<String>,
}

/// On creation: store a result, post events, and mark the object in its status.
#[kopf::on::create("kopfexamples", retries = 5, backoff = 2.0)]
pub fn create_fn(ctx: &kopf::Context) -> kopf::Result<Value> {
    let spec: Spec = ctx.spec_as()?;
    ctx.info("Creating", format!("{} items", spec.items.len()));
    ctx.patch().status()["phase"] = json!("created");
    Ok(json!({"message": "created", "items": spec.items.len()}))
}

/// On every update of the spec (or labels, annotations).
#[kopf::on::update("kopfexamples")]
pub fn update_fn(ctx: &kopf::Context) {
    for item in ctx.diff() {
        tracing::info!("changed: {:?}", item);
    }
}

/// On changes of `spec.field` only.
#[kopf::on::field("kopfexamples", field = "spec.field")]
pub fn field_fn(ctx: &kopf::Context) -> Value {
    json!({"old": ctx.old(), "new": ctx.new()})
}

/// Before the object is deleted.
#[kopf::on::delete("kopfexamples")]
pub fn delete_fn(ctx: &kopf::Context) {
    ctx.info("Deleting", "cleaning up");
}

/// When the operator starts and finds an existing object.
#[kopf::on::resume("kopfexamples")]
pub fn resume_fn(ctx: &kopf::Context) {
    tracing::info!("resuming {}", ctx.object_ref());
}

/// Every raw watch event of pods labelled `app=kopf-demo` (errors are ignored).
#[kopf::on::event("v1", "pods", labels = {"app": "kopf-demo"})]
pub fn pod_event_fn(ctx: &kopf::Context) {
    tracing::debug!("pod event {:?}", ctx.event_type());
}

/// An index of pod names by namespace.
#[kopf::index("v1", "pods")]
pub fn pods_by_namespace(ctx: &kopf::Context) -> Value {
    json!({ctx.namespace().unwrap_or_default(): ctx.name()})
}

/// Reported on the liveness endpoint (`kopf run --liveness`).
#[kopf::on::probe]
pub fn pod_count_probe() -> Value {
    json!("ok")
}

/// Once a minute for every object.
#[kopf::timer("kopfexamples", interval = 60.0, idle = 10.0)]
pub fn tick(ctx: &kopf::Context) {
    ctx.patch().status()["lastTick"] = json!(ctx.runtime().as_secs_f64());
}

/// A background task per object until it is deleted (or the operator stops).
#[kopf::daemon("kopfexamples", cancellation_timeout = 5.0)]
pub fn monitor(ctx: &kopf::Context) {
    while !ctx.stopped().wait(Some(Duration::from_secs(30))) {
        tracing::info!("still watching {}", ctx.object_ref());
    }
}

/// Rejects objects whose `spec.field` is `forbidden`.
#[kopf::on::validate("kopfexamples", operations = ["CREATE", "UPDATE"])]
pub fn check_field(ctx: &kopf::Context) -> kopf::Result<()> {
    if ctx.spec().get("field") == Some(&json!("forbidden")) {
        return Err(kopf::AdmissionError::new("spec.field must not be 'forbidden'").into());
    }
    Ok(())
}

/// The user guide's chapters, compiled as doctests (`cargo test --doc`).
#[cfg(doctest)]
pub mod user_guide {
    #[doc = include_str!("../../../docs/handlers.md")]
    pub mod handlers {}
    #[doc = include_str!("../../../docs/testing.md")]
    pub mod testing {}
    #[doc = include_str!("../../../docs/deployment.md")]
    pub mod deployment {}
    #[doc = include_str!("../../../docs/cli.md")]
    pub mod cli {}
    #[doc = include_str!("../../../docs/persistence-and-migration.md")]
    pub mod persistence_and_migration {}
    #[doc = include_str!("../../../docs/daemons-and-timers.md")]
    pub mod daemons_and_timers {}
    #[doc = include_str!("../../../docs/indexing.md")]
    pub mod indexing {}
    #[doc = include_str!("../../../docs/admission.md")]
    pub mod admission {}
    #[doc = include_str!("../../../docs/peering.md")]
    pub mod peering {}
    #[doc = include_str!("../../../docs/probes-and-metrics.md")]
    pub mod probes_and_metrics {}
    #[doc = include_str!("../../../docs/settings.md")]
    pub mod settings {}
    #[doc = include_str!("../../../docs/memo.md")]
    pub mod memo {}
    #[doc = include_str!("../../../docs/coming-from-python-kopf.md")]
    pub mod coming_from_python_kopf {}
    #[doc = include_str!("../../../docs/tutorial.md")]
    pub mod tutorial {}
    #[doc = include_str!("../../../docs/coming-from-kube-rs.md")]
    pub mod coming_from_kube_rs {}
    #[doc = include_str!("../../../docs/troubleshooting.md")]
    pub mod troubleshooting {}
}
