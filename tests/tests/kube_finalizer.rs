//! A kube-rs `Controller` that uses `kube::runtime::finalizer` (not kopf) runs a KopfExample
//! through its whole lifecycle, on the emulator and (`KOPF_TEST_CLUSTER=apiserver`) on a real
//! API server: the helper's JSON patches must be accepted alike by both.
//!
//! The helper adds its finalizer with `test /metadata/finalizers == null` + `add` when the object
//! has none (the real server accepts a `test` of a missing path against null) and with
//! `test /metadata/finalizers == [..]` + `add /metadata/finalizers/-` otherwise; it removes the
//! finalizer with `test /metadata/finalizers/N == name` + `remove`.

use kopf_e2e::cluster::kopfexamples;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kopf_e2e::cluster::{TestCluster, client_from_yaml};
use kopf_e2e::workspace_root;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// The controller's own finalizer.
const FINALIZER: &str = "kube-rs.example.com/cleanup";

/// A finalizer of somebody else's, which the controller must keep.
const FOREIGN: &str = "example.com/foreign";

/// How long any single condition may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// What the controller did, for the test to see.
#[derive(Default)]
struct Record {
    /// `name/uid` of every object cleaned up.
    cleanups: Vec<String>,
    /// Every reconciliation error, for the failure message.
    errors: Vec<String>,
}

impl Record {
    /// The distinct errors with how often each occurred.
    fn error_summary(&self) -> Vec<String> {
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for e in &self.errors {
            *counts.entry(e).or_default() += 1;
        }
        counts.into_iter().map(|(e, n)| format!("{n}x {e}")).collect()
    }
}

struct Ctx {
    api: Api<DynamicObject>,
    record: Mutex<Record>,
}

type Error = kube::runtime::finalizer::Error<kube::Error>;

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    finalizer(&ctx.api, FINALIZER, obj, |event| async {
        match event {
            Event::Apply(obj) => {
                // Observable effect: a status field (written once).
                if obj.data.pointer("/status/kubeRs/applied") != Some(&Value::Bool(true)) {
                    let patch = json!({"status": {"kubeRs": {"applied": true}}});
                    ctx.api
                        .patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
                Ok(Action::await_change())
            }
            Event::Cleanup(obj) => {
                let uid = obj.meta().uid.clone().unwrap_or_default();
                ctx.record
                    .lock()
                    .cleanups
                    .push(format!("{}/{uid}", obj.name_any()));
                Ok::<_, kube::Error>(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(_obj: Arc<DynamicObject>, err: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.record.lock().errors.push(err.to_string());
    Action::requeue(Duration::from_millis(100))
}

/// Polls `check` every 20 ms until it yields a value; panics after [`DEADLINE`] with the
/// controller's errors and the last object seen.
async fn wait<T>(
    cluster: &TestCluster,
    ctx: &Ctx,
    name: &str,
    what: &str,
    mut check: impl FnMut(Option<&Value>, &Record) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        let obj = cluster.get_object("kopf.dev/v1", "kopfexamples", Some("default"), name);
        if let Some(v) = check(obj.as_ref(), &ctx.record.lock()) {
            return v;
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for {what} ({:?})\ncontroller errors: {:#?}\n\
                 last object: {}\nserver log:\n{}",
                cluster.backend(),
                ctx.record.lock().error_summary(),
                serde_json::to_string_pretty(&obj).unwrap_or_default(),
                cluster.server_log_tail(20),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn finalizers(obj: &Value) -> Vec<&str> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn applied(obj: &Value) -> bool {
    obj.pointer("/status/kubeRs/applied") == Some(&Value::Bool(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // split under issue 19
async fn kube_rs_finalizer_full_lifecycle() {
    let cluster = TestCluster::start().await.unwrap();
    let crd = std::fs::read_to_string(workspace_root().join("examples/crd.yaml")).unwrap();
    cluster.apply_yaml(&crd).await.unwrap();

    // The controller runs with the operator's identity.
    let client = client_from_yaml(&cluster.kubeconfig_yaml()).await.unwrap();
    let ar = kopfexamples();
    let api = Api::<DynamicObject>::namespaced_with(client, "default", &ar);
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        record: Mutex::default(),
    });
    let controller = tokio::spawn(
        Controller::new_with(api, watcher::Config::default(), ar)
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| async {}),
    );

    // "plain" has no finalizers (test of the missing list against null, then add);
    // "shared" has a foreign one (test of the list, then add at "-"), which stays after cleanup.
    for (name, fins) in [("plain", json!(null)), ("shared", json!([FOREIGN]))] {
        let mut obj = json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"field": name}});
        if !fins.is_null() {
            obj["metadata"]["finalizers"] = fins;
        }
        cluster.create_object(obj).await.unwrap();
    }

    // Apply: the finalizer is added, then the status written.
    let mut uids = vec![];
    for (name, expected) in [("plain", vec![FINALIZER]), ("shared", vec![FOREIGN, FINALIZER])] {
        let obj = wait(
            &cluster,
            &ctx,
            name,
            "the finalizer and the apply effect",
            |o, _| {
                o.filter(|o| finalizers(o).contains(&FINALIZER) && applied(o))
                    .cloned()
            },
        )
        .await;
        assert_eq!(finalizers(&obj), expected, "{name}: {obj}");
        uids.push(
            obj.pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap()
                .to_owned(),
        );
    }

    // Cleanup: deleting runs it and removes the finalizer; "plain" is then gone.
    for name in ["plain", "shared"] {
        let gone = cluster
            .delete_object("kopf.dev/v1", "kopfexamples", Some("default"), name)
            .await
            .unwrap();
        assert!(!gone, "{name} has finalizers: deletion must wait for them");
    }
    let plain_cleanup = format!("plain/{}", uids[0]);
    wait(
        &cluster,
        &ctx,
        "plain",
        "the cleanup of plain and plain gone",
        |o, r| (o.is_none() && r.cleanups.contains(&plain_cleanup)).then_some(()),
    )
    .await;
    let shared_cleanup = format!("shared/{}", uids[1]);
    let shared = wait(
        &cluster,
        &ctx,
        "shared",
        "the cleanup of shared, the foreign finalizer kept",
        |o, r| {
            o.filter(|o| r.cleanups.contains(&shared_cleanup) && finalizers(o) == [FOREIGN])
                .cloned()
        },
    )
    .await;
    assert!(
        shared.pointer("/metadata/deletionTimestamp").is_some(),
        "{shared}"
    );

    // The foreign finalizer's owner lets go (a JSON patch of the test's own).
    let admin = Api::<DynamicObject>::namespaced_with(
        cluster.admin_client().await.unwrap(),
        "default",
        &kopfexamples(),
    );
    let release = json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": FOREIGN},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]);
    let release = Patch::<()>::Json(serde_json::from_value(release).unwrap());
    admin
        .patch("shared", &PatchParams::default(), &release)
        .await
        .unwrap();
    wait(&cluster, &ctx, "shared", "shared gone", |o, _| {
        o.is_none().then_some(())
    })
    .await;

    let (mut cleanups, errors) = {
        let record = ctx.record.lock();
        (record.cleanups.clone(), record.error_summary())
    };
    cleanups.sort();
    assert_eq!(
        cleanups,
        [plain_cleanup, shared_cleanup],
        "each object cleaned up once; controller errors: {errors:#?}"
    );
    controller.abort();
    cluster.shutdown().await;
}
