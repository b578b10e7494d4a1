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
    fn spawn(cluster: &Cluster, record: &Path, gate: &Path, log: &Path, storage: Storage) -> Self {
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
            .env("KOPF_LIFECYCLE_STORAGE", storage.name())
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

/// Where both frameworks keep progress and the diff-base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// Kopf's defaults: annotations.
    Annotations,
    /// Kopf's `StatusProgressStorage` and `StatusDiffBaseStorage` (`status.kopf.*`).
    Status,
}

impl Storage {
    /// The value of `KOPF_LIFECYCLE_STORAGE` for both fixtures (empty: the defaults).
    fn name(self) -> &'static str {
        match self {
            Self::Annotations => "",
            Self::Status => "status",
        }
    }

    /// The handler ids with a progress record; records in the other place fail the test.
    fn progress(self, o: &Value) -> Vec<String> {
        let in_status: Vec<String> = o
            .pointer("/status/kopf/progress")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let annotated: Vec<String> = progress_annotations(o)
            .iter()
            .filter_map(|k| k.strip_prefix("kopf.zalando.org/").map(str::to_owned))
            .collect();
        let (mine, other) = match self {
            Self::Annotations => (annotated, in_status),
            Self::Status => (in_status, annotated),
        };
        assert!(
            other.is_empty(),
            "progress in the wrong storage: {other:?} in {o}"
        );
        mine
    }

    /// `spec.field` of the diff-base; a diff-base in the other place fails the test.
    fn handled_field(self, o: &Value) -> Option<Value> {
        let in_status = o
            .pointer("/status/kopf/last-handled-configuration")
            .and_then(Value::as_str)
            .map(|text| serde_json::from_str::<Value>(text).unwrap());
        let (mine, other) = match self {
            Self::Annotations => (last_handled(o), in_status),
            Self::Status => (in_status, last_handled(o)),
        };
        assert_eq!(other, None, "a diff-base in the wrong storage: {o}");
        mine?.pointer("/spec/field").cloned()
    }
}

/// Partway: three create-cause handlers done, `create_gated` delayed (its record stored).
fn partway(o: Option<&Value>, storage: Storage) -> bool {
    o.is_some_and(|o| {
        o.pointer("/status/create_fn") == Some(&json!({"created": true}))
            && o.pointer("/status/create_more") == Some(&json!({"more": true}))
            && o.pointer("/status/field_fn~1spec.field/new") == Some(&json!("v1"))
            && storage.progress(o).contains(&"create_gated".to_owned())
            && has_finalizer(o)
    })
}

fn created(o: Option<&Value>, storage: Storage) -> bool {
    o.is_some_and(|o| {
        o.pointer("/status/create_gated") == Some(&json!({"gated": true}))
            && storage.handled_field(o) == Some(json!("v1"))
            && storage.progress(o).is_empty()
    })
}

fn updated(o: Option<&Value>, storage: Storage) -> bool {
    o.is_some_and(|o| {
        o.pointer("/status/update_fn") == Some(&json!({"updated": true}))
            && o.pointer("/status/field_fn~1spec.field") == Some(&json!({"old": "v1", "new": "v2"}))
            && storage.handled_field(o) == Some(json!("v2"))
            && storage.progress(o).is_empty()
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
async fn finish_lifecycle(cluster: &Cluster, name: &str, storage: Storage) {
    cluster.set_field(name, "v2").await;
    cluster
        .wait_obj(name, "update handlers done", None, |o| {
            updated(o, storage).then_some(())
        })
        .await;
    cluster.delete(name).await;
    cluster
        .wait_obj(name, "the object gone", None, |o| o.is_none().then_some(()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kopf_to_kopf() {
    python_kopf_to_kopf_with(Storage::Annotations).await;
}

/// Kopf's `StatusProgressStorage` and `StatusDiffBaseStorage` on both sides: nothing done
/// is re-run, and nothing lands in the annotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kopf_to_kopf_with_status_storages() {
    python_kopf_to_kopf_with(Storage::Status).await;
}

async fn python_kopf_to_kopf_with(storage: Storage) {
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

    let mut python = PythonKopf::spawn(&cluster, &py_record, &gate, &cluster.path("py.log"), storage);
    cluster
        .wait_obj(name, "Python Kopf partway", None, |o| {
            partway(o, storage).then_some(())
        })
        .await;
    python.stop();
    assert_eq!(runs(&py_record, name), pairs(DONE_BY_FIRST), "Python Kopf's runs");

    std::fs::write(&gate, "open").unwrap();
    let kopf = cluster.spawn_kopf(
        &fixture("fixture-lifecycle-multi"),
        &[
            ("KOPF_LIFECYCLE_RECORD", rs_record.display().to_string()),
            ("KOPF_LIFECYCLE_GATE", gate.display().to_string()),
            ("KOPF_LIFECYCLE_STORAGE", storage.name().to_owned()),
        ],
    );
    cluster
        .wait_obj(name, "kopf finishing the creation", Some(&kopf), |o| {
            created(o, storage).then_some(())
        })
        .await;
    finish_lifecycle(&cluster, name, storage).await;
    assert_eq!(runs(&rs_record, name), pairs(DONE_BY_SECOND), "kopf's runs");
    assert_eq!(runs(&py_record, name), pairs(DONE_BY_FIRST), "Python Kopf's runs");
    drop(kopf);
    cluster.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kopf_to_python_kopf() {
    kopf_to_python_kopf_with(Storage::Annotations).await;
}

/// The other direction with Kopf's status storages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kopf_to_python_kopf_with_status_storages() {
    kopf_to_python_kopf_with(Storage::Status).await;
}

async fn kopf_to_python_kopf_with(storage: Storage) {
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
            ("KOPF_LIFECYCLE_STORAGE", storage.name().to_owned()),
        ],
    );
    cluster
        .wait_obj(name, "kopf partway", Some(&kopf), |o| {
            partway(o, storage).then_some(())
        })
        .await;
    kopf.signal("TERM").unwrap();
    let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
    assert!(status.success(), "kopf exited with {status}");
    assert_eq!(runs(&rs_record, name), pairs(DONE_BY_FIRST), "kopf's runs");

    std::fs::write(&gate, "open").unwrap();
    let _python = PythonKopf::spawn(&cluster, &py_record, &gate, &cluster.path("py.log"), storage);
    cluster
        .wait_obj(name, "Python Kopf finishing the creation", None, |o| {
            created(o, storage).then_some(())
        })
        .await;
    finish_lifecycle(&cluster, name, storage).await;
    assert_eq!(
        runs(&py_record, name),
        pairs(DONE_BY_SECOND),
        "Python Kopf's runs"
    );
    assert_eq!(runs(&rs_record, name), pairs(DONE_BY_FIRST), "kopf's runs");
    cluster.emu.shutdown().await;
}
