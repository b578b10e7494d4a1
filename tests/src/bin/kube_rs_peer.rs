//! The benchmarks' second peer: the controller a Rust user would write by hand on kube-rs
//! instead of using kopf, for the reactor scenario's lifecycle (create → update → delete of
//! `kopfexamples` in `default`).
//!
//! It does what the `fixture-lifecycle-basic` plugin and its Python Kopf twin do, with the
//! same observable results and the same six writes per object: `kube::runtime::finalizer`
//! adds its finalizer (1); a new object gets its handled spec in Kopf's
//! `last-handled-configuration` annotation (2) and `status.create_fn` (3); a changed
//! `spec.field` gets the annotation again (4), `status.update_fn` and `status.field_fn` (5);
//! a deleted object has its finalizer removed (6). The annotation is Kopf's so that the benchmark's
//! readiness checks read one place for every operator.
//!
//! `KUBECONFIG` names the cluster. It runs until SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const FINALIZER: &str = "bench.kopf.dev/kube-rs-peer";
const LAST_HANDLED: &str = "kopf.zalando.org/last-handled-configuration";

type Error = kube::runtime::finalizer::Error<kube::Error>;

/// The spec field this controller last handled, from the annotation.
fn last_handled_field(obj: &DynamicObject) -> Option<Value> {
    let text = obj.annotations().get(LAST_HANDLED)?;
    let base: Value = serde_json::from_str(text).ok()?;
    base.pointer("/spec/field").cloned()
}

async fn handle(api: &Api<DynamicObject>, obj: &DynamicObject) -> Result<Action, kube::Error> {
    let name = obj.name_any();
    let field = obj.data.pointer("/spec/field").cloned().unwrap_or(Value::Null);
    let status = match last_handled_field(obj) {
        None => json!({"create_fn": {"created": true}}),
        Some(old) if old != field => json!({
            "update_fn": {"updated": true},
            "field_fn": {"old": old, "new": field},
        }),
        Some(_) => return Ok(Action::await_change()),
    };
    // The annotation first: a reconciliation that runs between the two writes sees the
    // change as handled and writes nothing twice (a crash between them loses the result,
    // which a benchmark peer can afford).
    let params = PatchParams::default();
    let handled = json!({"spec": obj.data.get("spec").cloned().unwrap_or(Value::Null)}).to_string();
    let annotation = json!({"metadata": {"annotations": {LAST_HANDLED: handled}}});
    api.patch(&name, &params, &Patch::Merge(&annotation)).await?;
    api.patch_status(&name, &params, &Patch::Merge(&json!({"status": status})))
        .await?;
    Ok(Action::await_change())
}

async fn reconcile(obj: Arc<DynamicObject>, api: Arc<Api<DynamicObject>>) -> Result<Action, Error> {
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(obj) => handle(&api, &obj).await,
            Event::Cleanup(_) => Ok(Action::await_change()),
        }
    })
    .await
}

fn error_policy(_obj: Arc<DynamicObject>, error: &Error, _api: Arc<Api<DynamicObject>>) -> Action {
    eprintln!("kube-rs peer: {error}");
    Action::requeue(Duration::from_millis(100))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let resource = kopf_e2e::cluster::kopfexamples();
    let api = Api::<DynamicObject>::namespaced_with(client, "default", &resource);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    Controller::new_with(api.clone(), watcher::Config::default(), resource)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::new(api))
        .for_each(|_| async {})
        .await;
    Ok(())
}
