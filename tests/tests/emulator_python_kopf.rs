//! The API emulator against an independent, real operator framework: Python Kopf.
//!
//! Python Kopf runs `tests/python/lifecycle_operator.py` against the emulator while this test
//! drives a KopfExample through create → update → delete over HTTP (kube-rs) and checks what
//! Kopf stored: handler results in `status`, its finalizer, and its diff-base annotation.
//!
//! Needs Python Kopf (`python3 -c 'import kopf'`): without it the test fails with how to
//! install it, unless `KOPF_TESTS_ALLOW_MISSING_TOOLS=1` is set (CI never sets it).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kopf_e2e::workspace_root;
use kopf_testing::{Emulator, EmulatorHandle};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

const FINALIZER: &str = "kopf.zalando.org/KopfFinalizerMarker";
const LAST_HANDLED: &str = "kopf.zalando.org/last-handled-configuration";
/// Generous: a loaded 2-core machine, Python start-up, Kopf's own batching windows.
const DEADLINE: Duration = Duration::from_secs(60);
const NAME: &str = "kex-lifecycle";

/// Kills (and reaps) the Kopf child on drop, so a failing test never leaks the process.
struct ChildGuard {
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- Python Kopf output ({}) ----\n{}\n---- end of Kopf output ----",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

fn spawn_kopf(kubeconfig: &Path, marker: &Path, log: &Path) -> ChildGuard {
    let script = workspace_root().join("tests/python/lifecycle_operator.py");
    let out = File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let child = Command::new("python3")
        .args(["-m", "kopf", "run", "--standalone", "--namespace", "default"])
        .arg(&script)
        .arg("--verbose")
        .env("KUBECONFIG", kubeconfig)
        .env("KOPF_EMULATOR_DELETE_MARKER", marker)
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    ChildGuard {
        child,
        log: log.to_path_buf(),
    }
}

/// Polls `check` (reading the emulator's store directly) until it yields a value, or fails with
/// `what`, the last observed object and Kopf's state.
async fn wait_until<T>(
    emu: &EmulatorHandle,
    kopf: &mut ChildGuard,
    what: &str,
    mut check: impl FnMut(Option<&Value>) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        let obj = emu.get_object("kopf.dev/v1", "kopfexamples", Some("default"), NAME);
        if let Some(v) = check(obj.as_ref()) {
            return v;
        }
        if let Ok(Some(status)) = kopf.child.try_wait() {
            panic!("Python Kopf exited early ({status}) while waiting for: {what}");
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for: {what}\nlast object: {}",
                serde_json::to_string_pretty(&obj).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a k8s Event about the test object with the given reason.
async fn wait_for_event(emu: &EmulatorHandle, kopf: &mut ChildGuard, reason: &str) -> Value {
    let start = Instant::now();
    loop {
        let events = emu.list_objects("v1", "events", Some("default"), None).unwrap();
        if let Some(e) = events.iter().find(|e| {
            e.get("reason") == Some(&json!(reason)) && e.pointer("/involvedObject/name") == Some(&json!(NAME))
        }) {
            return e.clone();
        }
        if let Ok(Some(status)) = kopf.child.try_wait() {
            panic!("Python Kopf exited early ({status}) while waiting for event {reason}");
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for event {reason}; events: {events:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn has_finalizer(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// The diff-base annotation, parsed.
fn last_handled(obj: &Value) -> Option<Value> {
    let text = obj
        .pointer("/metadata/annotations")?
        .get(LAST_HANDLED)?
        .as_str()?;
    Some(serde_json::from_str(text).expect("last-handled-configuration is not JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // split under issue 19
async fn python_kopf_full_lifecycle() {
    if !kopf_e2e::python_kopf_available() {
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let marker = dir.path().join("deleted.txt");
    let log = dir.path().join("kopf.log");

    let emu = Emulator::builder().start().await.unwrap();
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let crd = std::fs::read_to_string(workspace_root().join("examples/crd.yaml")).unwrap();
    emu.apply_yaml(&crd).await.unwrap();

    let mut kopf = spawn_kopf(&kubeconfig, &marker, &log);

    // A kube-rs client from the same kubeconfig: this test's writes go over HTTP too.
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let ar = ApiResource {
        group: "kopf.dev".into(),
        version: "v1".into(),
        api_version: "kopf.dev/v1".into(),
        kind: "KopfExample".into(),
        plural: "kopfexamples".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);

    // Kopf needs a moment to start watching; an object created before that is still seen by its
    // initial list, so no synchronisation is needed here.
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfExample",
        "metadata": {"name": NAME, "namespace": "default", "labels": {"test": "lifecycle"}},
        "spec": {"field": "value-1", "duration": "1m"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();

    // --- creation ---
    let created = wait_until(
        &emu,
        &mut kopf,
        "create_fn and field_fn results, finalizer and diff-base",
        |o| {
            let o = o?;
            // Kopf sends the body patch (diff-base) and the /status patch (results) as two
            // requests: wait for both, not just the first.
            (o.pointer("/status/create_fn") == Some(&json!({"created": true}))
                && o.pointer("/status/field_fn~1spec.field").is_some()
                && has_finalizer(o)
                && last_handled(o).is_some())
            .then(|| o.clone())
        },
    )
    .await;
    let base = last_handled(&created).unwrap();
    assert_eq!(
        base.get("spec"),
        Some(&json!({"field": "value-1", "duration": "1m"})),
        "diff-base must hold the spec: {base}"
    );
    assert_eq!(
        base.pointer("/metadata/labels/test"),
        Some(&json!("lifecycle")),
        "diff-base keeps labels: {base}"
    );
    assert!(
        base.get("status").is_none(),
        "diff-base must not contain status: {base}"
    );
    // The field handler also ran on creation (old=None → new); Kopf suffixes its id with the
    // field, so the result key is `field_fn/spec.field`.
    assert_eq!(
        created.pointer("/status/field_fn~1spec.field"),
        // Kopf merge-patches `{"old": None, "new": ...}`: a JSON merge patch's null removes the
        // key (RFC 7386), as kube-apiserver does, so only `new` is stored.
        Some(&json!({"new": "value-1"})),
        "{created}"
    );
    assert!(created.pointer("/status/update_fn").is_none(), "{created}");

    // --- update ---
    api.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"field": "value-2"}})),
    )
    .await
    .unwrap();
    let updated = wait_until(
        &emu,
        &mut kopf,
        "update_fn, field_fn results and new diff-base",
        |o| {
            let o = o?;
            (o.pointer("/status/update_fn") == Some(&json!({"updated": true}))
                && o.pointer("/status/field_fn~1spec.field")
                    == Some(&json!({"old": "value-1", "new": "value-2"}))
                && last_handled(o).and_then(|b| b.pointer("/spec/field").cloned()) == Some(json!("value-2")))
            .then(|| o.clone())
        },
    )
    .await;
    assert!(has_finalizer(&updated), "finalizer lost on update: {updated}");
    assert_eq!(
        updated.pointer("/status/create_fn"),
        Some(&json!({"created": true})),
        "{updated}"
    );
    // Generation bumped once by the spec change, never by Kopf's status/metadata patches.
    assert_eq!(
        updated.pointer("/metadata/generation"),
        Some(&json!(2)),
        "{updated}"
    );

    // --- deletion ---
    api.delete(NAME, &DeleteParams::default()).await.unwrap();
    wait_until(
        &emu,
        &mut kopf,
        "the object to be gone (finalizer released)",
        |o| o.is_none().then_some(()),
    )
    .await;
    let marks = std::fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(marks, format!("default/{NAME}\n"), "delete_fn marker");
    // delete_fn also posted a k8s Event (kopf.info → POST /api/v1/namespaces/default/events,
    // with generateName); Kopf posts events in the background, so wait for it.
    let event = wait_for_event(&emu, &mut kopf, "DeleteFnRan").await;
    assert_eq!(
        event.pointer("/involvedObject/kind"),
        Some(&json!("KopfExample")),
        "{event}"
    );
    assert_eq!(
        event.pointer("/involvedObject/apiVersion"),
        Some(&json!("kopf.dev/v1")),
        "{event}"
    );
    assert_eq!(event.get("type"), Some(&json!("Normal")), "{event}");
    assert_eq!(
        event.get("message"),
        Some(&json!("deleted default/kex-lifecycle")),
        "{event}"
    );
    let event_name = event
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    assert!(
        event_name.starts_with("kopf-event-") && event_name.len() > "kopf-event-".len(),
        "generateName must be honoured: {event}"
    );

    // --- what Kopf did over HTTP ---
    let counters = emu.counters();
    kopf.stop();
    eprintln!("emulator request counters after the lifecycle:");
    for (k, n) in &counters.by_verb_resource {
        eprintln!("  {n:>5}  {k}");
    }
    eprintln!("  by status: {:?}", counters.by_status);
    eprintln!("  by user agent: {:?}", counters.by_user_agent);
    // The README compares kopf's PATCH budget (`reactor_budget.rs`) with exactly these:
    // Kopf's default lifecycle runs one handler per cycle and patches after each.
    assert_eq!(
        counters.get("patch", "kopfexamples"),
        7,
        "Kopf's object PATCHes (finalizer, progress, diff-base, finalizer release): {counters:?}"
    );
    assert_eq!(
        counters.get("patch", "kopfexamples/status"),
        4,
        "Kopf's /status PATCHes (results): {counters:?}"
    );
    assert!(
        counters.get("create", "events") >= 1,
        "Kopf should POST its event: {counters:?}"
    );
    assert!(
        counters.get("watch", "kopfexamples") >= 1,
        "Kopf should watch kopfexamples: {counters:?}"
    );
    let server_errors: u64 = counters
        .by_status
        .iter()
        .filter(|(code, _)| **code >= 500)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(server_errors, 0, "5xx responses: {counters:?}");
    let log_text = kopf.log_text();
    for line in log_text.lines() {
        assert!(
            !line.contains("Traceback") && !line.contains("[ERROR") && !line.contains("[WARNING"),
            "Kopf logged a warning or an error (e.g. a patch inconsistency): {line}\n{log_text}"
        );
    }
    emu.shutdown().await;
}
