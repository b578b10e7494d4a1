//! The operator's own end-to-end test: the real `kopf` binary, this crate's plugin, and
//! the API emulator of `kopf-testing`, all on loopback.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// `target/debug` (or release) of this test binary.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/operator-HASH -> target/debug
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

/// The `kopf` binary: `$KOPF_BIN`, else built from the workspace next to this plugin.
fn kopf_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KOPF_BIN") {
        return bin.into();
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = profile_dir().parent().expect("target root").to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Without this test's own CARGO_MANIFEST_DIR: ring's build script reruns when it
    // changes, which would rebuild the dependency tree for every test package.
    let status = Command::new(cargo)
        .args(["build", "-p", "kopf-cli"])
        .env_remove("CARGO_MANIFEST_DIR")
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building kopf failed");
    target.join("debug/kopf")
}

/// A running operator (like Kopf's `KopfRunner`): its stderr is collected; killed on drop.
struct Operator {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    fn start(kubeconfig: &std::path::Path) -> Self {
        let plugin = profile_dir().join("libexample_09_testing.so");
        assert!(plugin.exists(), "the plugin is not built: {}", plugin.display());
        let mut child = Command::new(kopf_bin())
            .args(["run", "-A", "--standalone", "--verbose"])
            .arg(&plugin)
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kopf starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    async fn wait_for_line(&self, needle: &str) {
        let log = || self.log();
        eventually(&format!("log line {needle:?}"), &log, || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
                .then_some(())
        })
        .await;
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 50 ms until it yields a value or 30 s pass; then fails with
/// the operator's log.
async fn eventually<T>(what: &str, log: &dyn Fn() -> String, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = condition() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; operator log:\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_handles_the_whole_lifecycle() {
    let emu = kopf_testing::Emulator::builder().start().await.unwrap();
    emu.apply_yaml(include_str!("../../crd.yaml")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();

    let operator = Operator::start(&kubeconfig);
    operator.wait_for_line("The operator is ready").await;
    let log = || operator.log();
    let get = || emu.get_object("kopf.dev/v1", "kopfexamples", Some("default"), "kex-1");

    emu.create_object(json!({
        "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": "kex-1", "namespace": "default"},
        "spec": {"field": "one"},
    }))
    .await
    .unwrap();

    // The create handler's result lands in the status; the finalizer guards deletion.
    // Waiting for the diff-base too (the creation is fully processed) makes the replace
    // below start from the object as the operator left it.
    let obj = eventually("status.create_fn and the diff-base", &log, || {
        get().filter(|o| {
            o.pointer("/status/create_fn").is_some()
                && o.pointer("/metadata/annotations/kopf.zalando.org~1last-handled-configuration")
                    .is_some()
        })
    })
    .await;
    assert_eq!(
        obj["status"]["create_fn"]["message"],
        json!("created with \"one\"")
    );
    let finalizers = obj
        .pointer("/metadata/finalizers")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(finalizers, json!(["kopf.zalando.org/KopfFinalizerMarker"]));

    // A change of spec.field reaches the field handler.
    let mut changed = get().unwrap();
    changed["spec"]["field"] = json!("two");
    emu.apply_object(changed).await.unwrap();
    eventually("status.field_fn/spec.field", &log, || {
        get().filter(|o| o.pointer("/status/field_fn~1spec.field/new") == Some(&json!("two")))
    })
    .await;

    // Deletion waits for the delete handler, then the finalizer goes and so does the object.
    emu.delete_object("kopf.dev/v1", "kopfexamples", Some("default"), "kex-1")
        .await
        .unwrap();
    eventually("the object to be gone", &log, || get().is_none().then_some(())).await;
    operator.wait_for_line("Deletion is processed").await;
    drop(operator);
    emu.shutdown().await;
}
