//! The bad-input corpus: the real `kopf` binary against the emulator, fed with objects,
//! API responses, plugins and configurations that are wrong in some way. Each case must
//! end in a clear message plus a retry or a non-zero exit, and lose nothing: the other
//! handlers and objects are still handled, and the broken object is not corrupted.
//!
//! Cases covered elsewhere are listed in `docs/resilience.md` (unknown flags, broken
//! plugin files, panics inside the plugin host, ...).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kopf_e2e::{KopfProcess, plugin_path, wait_for, workspace_root};
use kopf_testing::{Emulator, EmulatorHandle, FaultKind, FaultMatch};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);
const DIFF_BASE: &str = "kopf.zalando.org/last-handled-configuration";

/// A CRD whose objects may have any JSON value as `spec`.
const FREEFORM_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: kopfexamples.kopf.dev
spec:
  scope: Namespaced
  group: kopf.dev
  names: {kind: KopfExample, plural: kopfexamples, singular: kopfexample}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

struct Cluster {
    runtime: tokio::runtime::Runtime,
    emulator: EmulatorHandle,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(crd: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emulator = runtime.block_on(Emulator::builder().start()).unwrap();
        runtime.block_on(emulator.apply_yaml(crd)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        emulator.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
        Self {
            runtime,
            emulator,
            dir,
        }
    }

    fn standard() -> Self {
        let crd = std::fs::read_to_string(workspace_root().join("examples/crd.yaml")).unwrap();
        Self::start(&crd)
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn spawn_kopf(&self) -> KopfProcess {
        spawn_kopf(&self.kubeconfig(), &plugin())
    }

    fn run_kopf(&self) -> KopfProcess {
        let mut kopf = self.spawn_kopf();
        kopf.wait_for_line("The operator is ready", DEADLINE).unwrap();
        kopf
    }

    fn create(&self, name: &str, spec: Value) {
        self.runtime
            .block_on(self.emulator.create_object(object(name, spec)))
            .unwrap();
    }

    fn get(&self, name: &str) -> Value {
        self.emulator
            .get_object("kopf.dev/v1", "kopfexamples", Some("default"), name)
            .unwrap_or_else(|| panic!("{name} is gone"))
    }

    /// Waits until `name` has `status.<handler>` and returns the object.
    fn wait_status(&self, kopf: &KopfProcess, name: &str, handler: &str) -> Value {
        let pointer = format!("/status/{handler}");
        wait_for(DEADLINE, &format!("{name} to get status.{handler}"), || {
            Some(self.get(name)).filter(|o| o.pointer(&pointer).is_some())
        })
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", kopf.lines().join("\n")))
    }

    /// Waits until `name`'s diff-base is stored and no progress records are left.
    fn wait_handled(&self, kopf: &KopfProcess, name: &str) -> Value {
        wait_for(DEADLINE, &format!("{name} to be fully handled"), || {
            Some(self.get(name)).filter(|o| diff_base(o).is_some() && no_progress(o))
        })
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", kopf.lines().join("\n")))
    }
}

fn plugin() -> PathBuf {
    plugin_path("fixture-bad-handlers").unwrap()
}

fn spawn_kopf(kubeconfig: &Path, plugin: &Path) -> KopfProcess {
    KopfProcess::spawn_with_env(
        [
            "run".as_ref(),
            "-n".as_ref(),
            "default".as_ref(),
            "--standalone".as_ref(),
            plugin.as_os_str(),
        ],
        [("KUBECONFIG", kubeconfig)],
    )
    .unwrap()
}

fn object(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

fn diff_base(o: &Value) -> Option<Value> {
    let text = o.pointer(&format!("/metadata/annotations/{}", DIFF_BASE.replace('/', "~1")))?;
    serde_json::from_str(text.as_str()?).ok()
}

fn no_progress(o: &Value) -> bool {
    o.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_none_or(|a| {
            a.keys()
                .all(|k| !k.starts_with("kopf.zalando.org/") || k == DIFF_BASE)
        })
}

/// Waits for a log line containing every needle.
fn wait_line(kopf: &mut KopfProcess, needles: &[&str]) -> String {
    let found = wait_for(DEADLINE, &format!("a log line with {needles:?}"), || {
        kopf.lines()
            .into_iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
    });
    found.unwrap_or_else(|e| panic!("{e}\nlog:\n{}", kopf.lines().join("\n")))
}

fn stop(mut kopf: KopfProcess) {
    kopf.signal("TERM").unwrap();
    let status = kopf.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(
        status.success(),
        "kopf exited with {status} after SIGTERM:\n{}",
        kopf.lines().join("\n")
    );
}

// ---------------------------------------------------------------- objects

/// `spec` as a string, a number, a list, null and false: handled like any other object
/// (the handlers see the value as is; the diff-base records it), no crash, no retry loop.
#[test]
fn spec_that_is_not_an_object_is_handled_as_a_value() {
    let cluster = Cluster::start(FREEFORM_CRD);
    let kopf = cluster.run_kopf();
    let specs = [
        ("text", json!("just a string")),
        ("number", json!(42)),
        ("list", json!([1, "two", {"three": 3}])),
        ("null", Value::Null),
        ("false", json!(false)),
    ];
    for (name, spec) in &specs {
        cluster.create(&format!("spec-{name}"), spec.clone());
    }
    for (name, spec) in &specs {
        let name = format!("spec-{name}");
        let o = cluster.wait_handled(&kopf, &name);
        assert_eq!(o["status"]["misbehave"], json!({"fine": true}), "{name}: {o}");
        assert_eq!(o["status"]["witness"], json!({"seen": true}), "{name}: {o}");
        assert_eq!(o["spec"], *spec, "{name}: the spec must be untouched");
        let base = diff_base(&o).unwrap();
        assert_eq!(
            base.get("spec").unwrap_or(&Value::Null),
            spec,
            "{name}: diff-base {base}"
        );
    }
    let lines = kopf.lines();
    assert!(
        !lines.iter().any(|l| l.contains("ERROR")
            || l.contains("failed temporarily")
            || l.contains("failed permanently")
            || l.contains("panic")),
        "no handler may fail:\n{}",
        lines.join("\n")
    );
    stop(kopf);
}

/// The emulator refuses annotations over Kubernetes' 262,144-byte total, as the API
/// server does (422 Invalid, `metadata.annotations: Too long`).
#[test]
fn emulator_refuses_annotations_over_the_size_limit() {
    let cluster = Cluster::standard();
    let mut o = object("too-annotated", json!({}));
    o["metadata"]["annotations"] = json!({"big": "x".repeat(262_144)});
    let error = cluster
        .runtime
        .block_on(cluster.emulator.create_object(o))
        .expect_err("262,147 bytes of annotations must be refused");
    assert!(error.to_string().contains("Too long"), "{error}");
    let mut o = object("just-fits", json!({}));
    o["metadata"]["annotations"] = json!({"big": "x".repeat(262_141)});
    cluster
        .runtime
        .block_on(cluster.emulator.create_object(o))
        .expect("exactly 262,144 bytes of annotations are allowed");
}

/// A spec just under the annotation limit: its diff-base cannot be stored. The change is
/// refused with a clear error before any handler runs (no re-run loop), the object is not
/// touched, other objects are handled, and once the object shrinks it is handled.
#[test]
fn huge_object_is_refused_clearly_and_left_intact() {
    let cluster = Cluster::standard();
    let mut kopf = cluster.run_kopf();
    let blob = "z".repeat(262_100);
    cluster.create("huge", json!({"blob": blob}));
    let line = wait_line(&mut kopf, &["[default/huge]", "is not handled", "262144"]);
    assert!(line.contains("diff-base"), "{line}");
    // Handled after the huge one: proves its worker moved on and the operator is alive.
    cluster.create("small", json!({"blob": "small"}));
    cluster.wait_handled(&kopf, "small");
    let huge = cluster.get("huge");
    assert_eq!(huge["spec"]["blob"].as_str().map(str::len), Some(262_100));
    assert!(
        huge.get("status").is_none_or(|s| s.get("witness").is_none()),
        "{huge}"
    );
    assert!(
        huge.pointer("/metadata/annotations").is_none(),
        "no annotation may be added to the huge object: {huge}"
    );
    assert_eq!(
        huge["metadata"]["resourceVersion"],
        cluster.get("huge")["metadata"]["resourceVersion"]
    );
    let refusals = kopf
        .lines()
        .iter()
        .filter(|l| l.contains("is not handled"))
        .count();
    assert_eq!(
        refusals,
        1,
        "one refusal per change, no loop:\n{}",
        kopf.lines().join("\n")
    );

    // It shrinks: now it is handled as a creation.
    let mut shrunk = cluster.get("huge");
    shrunk["spec"] = json!({"blob": "now small"});
    if let Some(meta) = shrunk["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    cluster
        .runtime
        .block_on(cluster.emulator.apply_object(shrunk))
        .unwrap();
    let o = cluster.wait_handled(&kopf, "huge");
    assert_eq!(o["status"]["witness"], json!({"seen": true}), "{o}");
    assert_eq!(diff_base(&o).unwrap()["spec"]["blob"], "now small");
    stop(kopf);
}

/// Annotations so full that the diff-base fits but the handlers' progress records may
/// not: a failing handler's retry count could never be stored, so `retries=` would never
/// stop it (each failed patch re-ran it). The change is refused clearly before any
/// handler runs, the object is left as it is, and other objects are handled.
#[test]
fn records_that_could_not_be_stored_refuse_the_change_before_any_handler_runs() {
    const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
    let cluster = Cluster::standard();
    let mut kopf = cluster.run_kopf();
    let mut o = object("crowded", json!({"mode": "panic"}));
    // Not part of the essence (so not of the diff-base); 300 bytes left under the limit:
    // enough for the diff-base, not for the records of two handlers.
    o["metadata"]["annotations"] = json!({LAST_APPLIED: "x".repeat(262_144 - 300 - LAST_APPLIED.len())});
    cluster
        .runtime
        .block_on(cluster.emulator.create_object(o))
        .unwrap();
    let line = wait_line(&mut kopf, &["[default/crowded]", "is not handled", "262144"]);
    assert!(line.contains("progress records"), "{line}");
    cluster.create("after", json!({"mode": "fine"}));
    cluster.wait_handled(&kopf, "after");
    let lines = kopf.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("[default/crowded]") && l.contains("deliberate panic")),
        "no handler may run on the crowded object:\n{}",
        lines.join("\n")
    );
    let crowded = cluster.get("crowded");
    let annotations = crowded["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        [LAST_APPLIED],
        "nothing stored on the crowded object: {annotations:?}"
    );
    stop(kopf);
}

// ---------------------------------------------------------------- the API

/// Garbage from the API server (invalid UTF-8 declared as JSON, an HTML page, truncated
/// JSON) on the initial list, on patches and on the re-list: each is logged as an error
/// and retried; once the garbage stops, every object converges.
#[test]
fn garbage_api_responses_are_logged_and_retried_until_they_stop() {
    let cluster = Cluster::standard();
    let faults = cluster.emulator.faults();
    faults.fail_next(
        2,
        FaultMatch::verb_resource("list", "kopfexamples"),
        FaultKind::raw_body(200, "application/json", vec![0xff, 0xfe, b'{', 0xc3, 0x28]),
    );
    faults.fail_next(
        1,
        FaultMatch::verb_resource("list", "kopfexamples"),
        FaultKind::raw_body(
            502,
            "text/html",
            b"<html><body>Bad Gateway</body></html>".to_vec(),
        ),
    );
    let mut kopf = cluster.spawn_kopf();
    kopf.wait_for_line("The operator is ready", DEADLINE).unwrap();
    cluster.create("first", json!({"a": 1}));
    cluster.wait_handled(&kopf, "first");
    assert!(
        cluster.emulator.counters().get("list", "kopfexamples") >= 4,
        "the list must have been retried past 3 garbage answers: {:?}",
        cluster.emulator.counters()
    );

    // Patches answered with garbage: the object is retried until a patch gets through.
    faults.fail_next(
        2,
        FaultMatch::verb_resource("patch", "kopfexamples/status"),
        FaultKind::raw_body(200, "application/json", b"{\"kind\": \"KopfExa".to_vec()),
    );
    faults.fail_next(
        1,
        FaultMatch::verb_resource("patch", "kopfexamples"),
        FaultKind::raw_body(500, "application/json", vec![0x80, 0x81, 0x82]),
    );
    cluster.create("second", json!({"a": 2}));
    let o = cluster.wait_handled(&kopf, "second");
    assert_eq!(o["status"]["witness"], json!({"seen": true}), "{o}");
    wait_line(&mut kopf, &["[default/second]", "Patching failed"]);

    // The watch stream ends and the re-list gets garbage once.
    faults.fail_next(
        1,
        FaultMatch::verb_resource("list", "kopfexamples"),
        FaultKind::raw_body(200, "application/json", vec![0xc0, 0xaf]),
    );
    faults.close_watches();
    cluster.create("third", json!({"a": 3}));
    cluster.wait_handled(&kopf, "third");
    let errors: Vec<String> = kopf
        .lines()
        .into_iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert!(
        errors.len() >= 4,
        "every garbage answer must be logged as a warning or error:\n{}",
        kopf.lines().join("\n")
    );
    for name in ["first", "second", "third"] {
        let o = cluster.get(name);
        assert_eq!(o["status"]["misbehave"], json!({"fine": true}), "{name}: {o}");
    }
    stop(kopf);
}

/// No server at the kubeconfig's address: the operator retries with clear logs instead
/// of exiting, and converges once the server appears on that address.
#[test]
fn unreachable_server_is_retried_until_it_appears() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n\
             users:\n- name: u\n  user:\n    token: kopf-emulator\n"
        ),
    )
    .unwrap();
    let mut kopf = spawn_kopf(&kubeconfig, &plugin());
    let first = wait_line(&mut kopf, &[&format!("127.0.0.1:{port}")]);
    // It keeps retrying: a second such line, and the process is still alive.
    wait_for(DEADLINE, "a second connection attempt logged", || {
        (kopf
            .lines()
            .iter()
            .filter(|l| l.contains(&format!("127.0.0.1:{port}")))
            .count()
            >= 2)
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", kopf.lines().join("\n")));
    assert!(!first.is_empty());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let emulator = runtime
        .block_on(Emulator::builder().bind(format!("127.0.0.1:{port}")).start())
        .unwrap();
    let crd = std::fs::read_to_string(workspace_root().join("examples/crd.yaml")).unwrap();
    runtime.block_on(emulator.apply_yaml(&crd)).unwrap();
    runtime
        .block_on(emulator.create_object(object("late", json!({"a": 1}))))
        .unwrap();
    kopf.wait_for_line("The operator is ready", DEADLINE).unwrap();
    wait_for(DEADLINE, "the object to be handled once the server is up", || {
        emulator
            .get_object("kopf.dev/v1", "kopfexamples", Some("default"), "late")
            .filter(|o| o.pointer("/status/witness").is_some())
    })
    .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", kopf.lines().join("\n")));
    stop(kopf);
}

/// Invalid kubeconfigs: a clear one-line error and a non-zero exit, never a hang.
#[test]
fn invalid_kubeconfig_is_a_clear_error_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = plugin();
    let cases = [
        ("garbage", Some("{{{ this is : not [ yaml")),
        (
            "no-clusters",
            Some("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n"),
        ),
        ("missing", None),
    ];
    for (name, text) in cases {
        let path = dir.path().join(name);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let mut kopf = spawn_kopf(&path, &plugin);
        let status = kopf.wait_exit(DEADLINE).unwrap();
        let log = kopf.lines().join("\n");
        assert_eq!(status.code(), Some(1), "{name}: {log}");
        assert!(
            log.lines()
                .any(|l| l.starts_with("kopf: error:") && l.to_lowercase().contains("kubeconfig")),
            "{name}: the error must name the kubeconfig:\n{log}"
        );
        assert!(!log.contains("panicked"), "{name}: {log}");
    }
}

// ---------------------------------------------------------------- plugins

/// A panicking handler: the panic is logged with its message, retried (2 retries) and then
/// failed permanently; the other handler and other objects are handled; the operator lives.
#[test]
fn panicking_handler_is_retried_then_fails_permanently() {
    let cluster = Cluster::standard();
    let mut kopf = cluster.run_kopf();
    cluster.create("panics", json!({"mode": "panic"}));
    cluster.create("calm", json!({"mode": "fine"}));
    let o = cluster.wait_handled(&kopf, "panics");
    assert_eq!(o["status"]["witness"], json!({"seen": true}), "{o}");
    assert!(o["status"].get("misbehave").is_none(), "{o}");
    wait_line(&mut kopf, &["[default/panics]", "deliberate panic in misbehave"]);
    wait_line(
        &mut kopf,
        &["[default/panics]", "misbehave", "failed permanently", "retries"],
    );
    let o = cluster.wait_handled(&kopf, "calm");
    assert_eq!(o["status"]["misbehave"], json!({"fine": true}), "{o}");
    stop(kopf);
}

/// A handler that never returns: with its `timeout` (3 s), the engine stops waiting,
/// fails it permanently with a clear message, and goes on; the operator still exits
/// promptly on SIGTERM although the plugin's thread is stuck forever.
#[test]
fn hanging_handler_times_out_and_does_not_block_shutdown() {
    let cluster = Cluster::standard();
    let mut kopf = cluster.run_kopf();
    cluster.create("hangs", json!({"mode": "hang"}));
    let line = wait_line(
        &mut kopf,
        &["[default/hangs]", "did not return within its timeout"],
    );
    assert!(line.contains("misbehave"), "{line}");
    wait_line(
        &mut kopf,
        &["[default/hangs]", "misbehave", "failed permanently", "timed out"],
    );
    let o = cluster.wait_handled(&kopf, "hangs");
    assert_eq!(o["status"]["witness"], json!({"seen": true}), "{o}");
    cluster.create("after", json!({"mode": "fine"}));
    let o = cluster.wait_handled(&kopf, "after");
    assert_eq!(o["status"]["misbehave"], json!({"fine": true}), "{o}");
    stop(kopf);
}

/// The plugin's threads for sync handlers (the SDK's pool names them `kopf-sync`).
fn sync_threads(kopf: &KopfProcess) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", kopf.id())).expect("Linux /proc");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "kopf-sync")
        .count()
}

/// An update handler that hangs on every change: each call is abandoned after its
/// timeout, but its thread cannot be freed. The next call for the object waits for the
/// abandoned one (logged) instead of taking another thread, so the abandoned calls hold
/// one thread, not one per change until the pool's 512 are gone and every sync handler
/// waits for ever.
#[test]
fn abandoned_calls_of_a_hanging_handler_hold_one_thread() {
    let cluster = Cluster::standard();
    let mut kopf = cluster.run_kopf();
    let mut o = object("hangs-on-update", json!({"mode": "fine", "n": 0}));
    o["metadata"]["labels"] = json!({"update": "hangs"});
    cluster
        .runtime
        .block_on(cluster.emulator.create_object(o))
        .unwrap();
    cluster.wait_handled(&kopf, "hangs-on-update");
    let abandoned = |kopf: &KopfProcess| {
        kopf.lines()
            .iter()
            .filter(|l| {
                l.contains("[default/hangs-on-update]") && l.contains("did not return within its timeout")
            })
            .count()
    };
    for n in 1..=6 {
        let mut changed = cluster.get("hangs-on-update");
        changed["spec"]["n"] = json!(n);
        if let Some(meta) = changed["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        cluster
            .runtime
            .block_on(cluster.emulator.apply_object(changed))
            .unwrap();
        wait_for(DEADLINE, &format!("{n} abandoned calls"), || {
            (abandoned(&kopf) >= n).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", kopf.lines().join("\n")));
    }
    wait_line(
        &mut kopf,
        &[
            "[default/hangs-on-update]",
            "hanging_update",
            "still runs from an earlier call",
        ],
    );
    let threads = sync_threads(&kopf);
    assert!(threads <= 3, "{threads} sync threads after 6 abandoned calls");
    // Other objects' sync handlers still get threads.
    cluster.create("beside-the-hang", json!({"mode": "fine"}));
    let o = cluster.wait_handled(&kopf, "beside-the-hang");
    assert_eq!(o["status"]["misbehave"], json!({"fine": true}), "{o}");
    stop(kopf);
}

/// A result that cannot be serialised: a clear handler error naming the cause, retried,
/// then failed; nothing is stored for it and the other handler's result is.
#[test]
fn unserialisable_result_is_a_clear_handler_error() {
    let cluster = Cluster::standard();
    let mut kopf = cluster.run_kopf();
    cluster.create("unserialisable", json!({"mode": "unserialisable"}));
    let line = wait_line(
        &mut kopf,
        &[
            "[default/unserialisable]",
            "cannot serialise the handler's result",
        ],
    );
    assert!(line.contains("refuses to be JSON"), "{line}");
    wait_line(
        &mut kopf,
        &["[default/unserialisable]", "misbehave", "failed permanently"],
    );
    let o = cluster.wait_handled(&kopf, "unserialisable");
    assert_eq!(o["status"]["witness"], json!({"seen": true}), "{o}");
    assert!(o["status"].get("misbehave").is_none(), "{o}");
    stop(kopf);
}

/// A handler that leaks memory and a never-ending thread: its result is stored, and the
/// leaked thread does not keep the operator from exiting on SIGTERM.
#[test]
fn leaking_handler_does_not_block_shutdown() {
    let cluster = Cluster::standard();
    let kopf = cluster.run_kopf();
    for i in 0..5 {
        cluster.create(&format!("leaks-{i}"), json!({"mode": "leak"}));
    }
    for i in 0..5 {
        let o = cluster.wait_status(&kopf, &format!("leaks-{i}"), "misbehave");
        assert_eq!(o["status"]["misbehave"], json!({"leaked": true}), "{o}");
    }
    stop(kopf);
}

// ---------------------------------------------------------------- filters

/// Filters that cannot decide fail closed (issue 18): a `when=` callback that panics on a
/// deleting object keeps the finalizer and runs no deletion handler (before, the failure
/// counted as "no match" and the object was released unhandled); once the callback
/// decides again, the deletion handler runs and releases the object.
#[test]
fn undecidable_filters_keep_the_finalizer_until_they_decide() {
    let cluster = Cluster::standard();
    let mut kopf = cluster.run_kopf();
    let guarded = json!({
        "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": "guarded", "namespace": "default", "labels": {"guarded": "yes"}},
        "spec": {"mode": "fine"},
    });
    cluster
        .runtime
        .block_on(cluster.emulator.create_object(guarded))
        .unwrap();
    cluster.wait_handled(&kopf, "guarded");
    let finalizer = json!("kopf.zalando.org/KopfFinalizerMarker");
    assert!(
        cluster.get("guarded")["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&finalizer)),
        "the deletion handler needs the finalizer: {}",
        cluster.get("guarded")
    );

    let mut undecidable = cluster.get("guarded");
    undecidable["spec"]["mode"] = json!("filter-panic");
    cluster
        .runtime
        .block_on(cluster.emulator.apply_object(undecidable))
        .unwrap();
    wait_line(
        &mut kopf,
        &["[default/guarded]", "Nothing is decided", "guarded_delete"],
    );
    cluster
        .runtime
        .block_on(
            cluster
                .emulator
                .delete_object("kopf.dev/v1", "kopfexamples", Some("default"), "guarded"),
        )
        .unwrap();
    // The deletion is seen and refused to be decided on (more than once: it is retried).
    let refusals = |kopf: &KopfProcess| {
        kopf.lines()
            .iter()
            .filter(|l| l.contains("[default/guarded]") && l.contains("Nothing is decided"))
            .count()
    };
    let before = refusals(&kopf);
    wait_for(DEADLINE, "the deletion to be refused a decision", || {
        (refusals(&kopf) > before).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", kopf.lines().join("\n")));
    let held = cluster.get("guarded");
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    assert!(
        held["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&finalizer)),
        "the finalizer must stay while the filters cannot decide: {held}"
    );
    assert!(
        !kopf
            .lines()
            .iter()
            .any(|l| l.contains("guarded_delete") && l.contains("succeeded")),
        "the deletion handler must not run on a guess:\n{}",
        kopf.lines().join("\n")
    );

    let mut decidable = held;
    decidable["spec"]["mode"] = json!("fine");
    cluster
        .runtime
        .block_on(cluster.emulator.apply_object(decidable))
        .unwrap();
    wait_line(
        &mut kopf,
        &["[default/guarded]", "Handler 'guarded_delete' succeeded."],
    );
    wait_for(DEADLINE, "the object to be released", || {
        cluster
            .emulator
            .get_object("kopf.dev/v1", "kopfexamples", Some("default"), "guarded")
            .is_none()
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", kopf.lines().join("\n")));
    stop(kopf);
}

/// An unreadable diff-base (issue 18): logged, and the object is left as it is; before,
/// it counted as absent, which invented a creation and re-ran the creation handlers.
#[test]
fn unreadable_diff_base_invents_no_creation() {
    let cluster = Cluster::standard();
    let mut kopf = cluster.run_kopf();
    cluster.create("scrambled", json!({"mode": "fine"}));
    cluster.wait_handled(&kopf, "scrambled");
    let created = |kopf: &KopfProcess| {
        kopf.lines()
            .iter()
            .filter(|l| l.contains("[default/scrambled]") && l.contains("Handler 'witness' succeeded."))
            .count()
    };
    assert_eq!(created(&kopf), 1, "{}", kopf.lines().join("\n"));

    let mut scrambled = cluster.get("scrambled");
    scrambled["metadata"]["annotations"][DIFF_BASE] = json!("{this is not json");
    scrambled["spec"]["mode"] = json!("changed");
    cluster
        .runtime
        .block_on(cluster.emulator.apply_object(scrambled))
        .unwrap();
    wait_line(&mut kopf, &["[default/scrambled]", "The diff-base is unreadable"]);
    // A second change is refused the same way (had the first one been handled as a
    // creation, the diff-base would be readable again); its object is processed after the
    // first, so any re-run of the handlers would be logged by now.
    let mut again = cluster.get("scrambled");
    again["spec"]["mode"] = json!("changed again");
    cluster
        .runtime
        .block_on(cluster.emulator.apply_object(again))
        .unwrap();
    wait_for(DEADLINE, "the second change to be refused", || {
        let refusals = kopf
            .lines()
            .iter()
            .filter(|l| l.contains("[default/scrambled]") && l.contains("The diff-base is unreadable"))
            .count();
        (refusals >= 2).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", kopf.lines().join("\n")));
    assert_eq!(
        created(&kopf),
        1,
        "the creation handlers must not run again:\n{}",
        kopf.lines().join("\n")
    );
    stop(kopf);
}
