//! Migration between Python Kopf (PyPI, 1.45) and kopf (Rust), both directions, with the
//! same handler ids (`tests/python/migration_operator.py` and `fixture-lifecycle-multi`).
//!
//! One framework handles an object partway — `create_fn`, `field_fn/spec.field` and
//! `create_more` done, `create_gated` delayed by a `TemporaryError` — and is stopped; the
//! other continues without re-running what is done, then runs the rest of the lifecycle
//! (update, delete) on the first one's diff-base. Each side records its handler runs in its
//! own file, so the test knows exactly who ran what.
//!
//! Needs Python Kopf (`python3 -c 'import kopf'`): without it the test fails with how to
//! install it, unless `KOPF_TESTS_ALLOW_MISSING_TOOLS=1` is set (CI never sets it).

mod reactor_common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kopf_e2e::workspace_root;
use reactor_common::{
    Cluster, DEADLINE, NS, fixture, has_finalizer, last_handled, progress_annotations, read_records,
};
use serde_json::{Value, json};

/// Python Kopf as a child process; killed on drop, its log printed if the test fails.
struct PythonKopf {
    child: Child,
    log: PathBuf,
}

impl PythonKopf {
    fn spawn(cluster: &Cluster, record: &Path, gate: &Path, log: &Path) -> Self {
        let script = workspace_root().join("tests/python/migration_operator.py");
        let out = File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new("python3")
            .args(["-m", "kopf", "run", "--standalone", "--namespace", NS])
            .arg(&script)
            .arg("--verbose")
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("KOPF_LIFECYCLE_RECORD", record)
            .env("KOPF_LIFECYCLE_GATE", gate)
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Stops Kopf with SIGINT (its graceful stop) and waits for it.
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + DEADLINE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for PythonKopf {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- Python Kopf output ----\n{}\n---- end ----",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Handler runs (id, reason) recorded for one object.
fn runs(record: &Path, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for ((id, obj, _uid, reason), n) in read_records(record) {
        if obj == format!("{NS}/{name}") {
            for _ in 0..n {
                out.push((id.clone(), reason.clone()));
            }
        }
    }
    out.sort();
    out
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    out.sort();
    out
}

/// Partway: three create-cause handlers done, `create_gated` delayed (its record stored).
fn partway(o: Option<&Value>) -> bool {
    o.is_some_and(|o| {
        o.pointer("/status/create_fn") == Some(&json!({"created": true}))
            && o.pointer("/status/create_more") == Some(&json!({"more": true}))
            && o.pointer("/status/field_fn~1spec.field/new") == Some(&json!("v1"))
            && progress_annotations(o).contains(&"kopf.zalando.org/create_gated".to_owned())
            && has_finalizer(o)
    })
}

fn created(o: Option<&Value>) -> bool {
    o.is_some_and(|o| {
        o.pointer("/status/create_gated") == Some(&json!({"gated": true}))
            && last_handled(o).and_then(|b| b.pointer("/spec/field").cloned()) == Some(json!("v1"))
            && progress_annotations(o).is_empty()
    })
}

fn updated(o: Option<&Value>) -> bool {
    o.is_some_and(|o| {
        o.pointer("/status/update_fn") == Some(&json!({"updated": true}))
            && o.pointer("/status/field_fn~1spec.field") == Some(&json!({"old": "v1", "new": "v2"}))
            && last_handled(o).and_then(|b| b.pointer("/spec/field").cloned()) == Some(json!("v2"))
            && progress_annotations(o).is_empty()
    })
}

const DONE_BY_FIRST: &[(&str, &str)] = &[
    ("create_fn", "create"),
    ("create_more", "create"),
    ("field_fn/spec.field", "create"),
];
const DONE_BY_SECOND: &[(&str, &str)] = &[
    ("create_gated", "create"),
    ("update_fn", "update"),
    ("field_fn/spec.field", "update"),
    ("delete_fn", "delete"),
];

/// Update and delete the object; the operator running now must finish the lifecycle.
async fn finish_lifecycle(cluster: &Cluster, name: &str) {
    cluster.set_field(name, "v2").await;
    cluster
        .wait_obj(name, "update handlers done", None, |o| updated(o).then_some(()))
        .await;
    cluster.delete(name).await;
    cluster
        .wait_obj(name, "the object gone", None, |o| o.is_none().then_some(()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kopf_to_kopf() {
    if !kopf_e2e::python_kopf_available() {
        return;
    }
    let cluster = Cluster::start().await;
    let (py_record, rs_record, gate) = (
        cluster.path("py.txt"),
        cluster.path("rs.txt"),
        cluster.path("gate"),
    );
    let name = "kex-py-to-rs";
    cluster.create(name, "v1").await;

    let mut python = PythonKopf::spawn(&cluster, &py_record, &gate, &cluster.path("py.log"));
    cluster
        .wait_obj(name, "Python Kopf partway", None, |o| partway(o).then_some(()))
        .await;
    python.stop();
    assert_eq!(runs(&py_record, name), pairs(DONE_BY_FIRST), "Python Kopf's runs");

    std::fs::write(&gate, "open").unwrap();
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-lifecycle-multi"),
        &[
            ("KOPF_LIFECYCLE_RECORD", rs_record.display().to_string()),
            ("KOPF_LIFECYCLE_GATE", gate.display().to_string()),
        ],
    );
    cluster
        .wait_obj(name, "kopf finishing the creation", Some(&kopf), |o| {
            created(o).then_some(())
        })
        .await;
    finish_lifecycle(&cluster, name).await;
    assert_eq!(runs(&rs_record, name), pairs(DONE_BY_SECOND), "kopf's runs");
    assert_eq!(runs(&py_record, name), pairs(DONE_BY_FIRST), "Python Kopf's runs");
    drop(kopf);
    cluster.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kopf_to_python_kopf() {
    if !kopf_e2e::python_kopf_available() {
        return;
    }
    let cluster = Cluster::start().await;
    let (py_record, rs_record, gate) = (
        cluster.path("py.txt"),
        cluster.path("rs.txt"),
        cluster.path("gate"),
    );
    let name = "kex-rs-to-py";
    cluster.create(name, "v1").await;

    let mut kopf = cluster.spawn_kopf(
        &fixture("fixture-lifecycle-multi"),
        &[
            ("KOPF_LIFECYCLE_RECORD", rs_record.display().to_string()),
            ("KOPF_LIFECYCLE_GATE", gate.display().to_string()),
        ],
    );
    cluster
        .wait_obj(name, "kopf partway", Some(&kopf), |o| partway(o).then_some(()))
        .await;
    kopf.signal("TERM").unwrap();
    let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
    assert!(status.success(), "kopf exited with {status}");
    assert_eq!(runs(&rs_record, name), pairs(DONE_BY_FIRST), "kopf's runs");

    std::fs::write(&gate, "open").unwrap();
    let _python = PythonKopf::spawn(&cluster, &py_record, &gate, &cluster.path("py.log"));
    cluster
        .wait_obj(name, "Python Kopf finishing the creation", None, |o| {
            created(o).then_some(())
        })
        .await;
    finish_lifecycle(&cluster, name).await;
    assert_eq!(
        runs(&py_record, name),
        pairs(DONE_BY_SECOND),
        "Python Kopf's runs"
    );
    assert_eq!(runs(&rs_record, name), pairs(DONE_BY_FIRST), "kopf's runs");
    cluster.emu.shutdown().await;
}
