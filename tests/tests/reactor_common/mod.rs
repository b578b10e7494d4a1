//! Shared helpers of the `reactor_*` suites: an emulator with the KopfExample CRD, the
//! real `kopf` binary with the `lifecycle-*` fixture plugins, record-file counting, and
//! condition polling with deadlines.
#![allow(dead_code)]

pub mod soak;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kopf_e2e::cluster::TestCluster;
use kopf_e2e::{KopfProcess, plugin_path, workspace_root};
use kopf_testing::{AdmissionDecision, AdmissionHook, AdmissionRequest, Operation};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Kopf's default finalizer.
pub const FINALIZER: &str = "kopf.zalando.org/KopfFinalizerMarker";
/// Kopf's default diff-base annotation.
pub const LAST_HANDLED: &str = "kopf.zalando.org/last-handled-configuration";
/// Generous: a loaded 2-core machine shared with other jobs.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// The namespace of all test objects.
pub const NS: &str = "default";

/// One admitted write: (operation, subresource, the new object if any).
pub type Write = (Operation, Option<String>, Option<Value>);

/// Every update/delete the emulator admitted on kopfexamples (internal ones included).
#[derive(Default)]
pub struct WriteLog {
    /// The writes, in order.
    pub writes: Mutex<Vec<Write>>,
}

impl WriteLog {
    /// Whether any written object carried an annotation whose key ends with `suffix`.
    pub fn any_annotation_ending(&self, suffix: &str) -> bool {
        self.writes.lock().iter().any(|(_, _, obj)| {
            obj.as_ref()
                .and_then(|o| o.pointer("/metadata/annotations"))
                .and_then(Value::as_object)
                .is_some_and(|a| a.keys().any(|k| k.ends_with(suffix)))
        })
    }
}

struct Recorder(Arc<WriteLog>);

impl AdmissionHook for Recorder {
    fn admit(
        &self,
        request: AdmissionRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = AdmissionDecision> + Send + '_>> {
        if request.resource == "kopfexamples" {
            self.0
                .writes
                .lock()
                .push((request.operation, request.subresource, request.object));
        }
        Box::pin(async { AdmissionDecision::Allow })
    }
}

/// A cluster (the emulator, or a real API server with `KOPF_TEST_CLUSTER=apiserver`) with
/// the KopfExample CRD, a kubeconfig in a temporary directory, and (on the emulator) a log
/// of the writes to kopfexamples.
pub struct Cluster {
    /// The cluster.
    pub emu: TestCluster,
    /// A temporary directory (kubeconfig, record files, logs).
    pub dir: tempfile::TempDir,
    /// The kubeconfig pointing at the emulator.
    pub kubeconfig: PathBuf,
    /// The admitted writes (recorded on the emulator only).
    pub writes: Arc<WriteLog>,
}

impl Cluster {
    /// Starts the cluster of this run's backend and applies `examples/crd.yaml`.
    pub async fn start() -> Self {
        Self::with(TestCluster::start().await.unwrap()).await
    }

    /// Starts an emulator whatever the backend, for tests of emulator-only powers (faults).
    pub async fn start_emulator() -> Self {
        Self::with(TestCluster::start_emulator().await.unwrap()).await
    }

    async fn with(emu: TestCluster) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig).unwrap();
        let crd = std::fs::read_to_string(workspace_root().join("examples/crd.yaml")).unwrap();
        emu.apply_yaml(&crd).await.unwrap();
        let writes = Arc::new(WriteLog::default());
        if let Some(emulator) = emu.emulator() {
            emulator.add_admission_hook(Arc::new(Recorder(writes.clone())));
        }
        Self {
            emu,
            dir,
            kubeconfig,
            writes,
        }
    }

    /// A path in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Python Kopf running `tests/python/<script>` standalone in [`NS`] on this cluster,
    /// with `envs`, its output into `log`.
    pub fn spawn_python_kopf(&self, script: &str, envs: &[(&str, &Path)], log: &Path) -> std::process::Child {
        use std::process::{Command, Stdio};
        let out = std::fs::File::create(log).unwrap();
        let mut command = Command::new("python3");
        command
            .args(["-m", "kopf", "run", "--standalone", "--namespace", NS])
            .arg(workspace_root().join("tests/python").join(script))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (key, value) in envs {
            command.env(key, value);
        }
        command.spawn().unwrap()
    }

    /// Starts `kopf run --standalone -A <plugin>` against this cluster and waits until it
    /// watches.
    pub fn spawn_kopf(&self, plugin: &Path, envs: &[(&str, String)]) -> KopfProcess {
        self.spawn_kopf_with(&["--standalone"], plugin, envs)
    }

    /// Starts `kopf run <args> -A <plugin>` against this cluster and waits until it
    /// watches.
    pub fn spawn_kopf_with(&self, args: &[&str], plugin: &Path, envs: &[(&str, String)]) -> KopfProcess {
        let mut envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        envs.push(("KUBECONFIG".into(), self.kubeconfig.display().to_string()));
        let mut kopf = tokio::task::block_in_place(|| {
            let mut all: Vec<&std::ffi::OsStr> = vec!["run".as_ref()];
            all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
            all.extend(["-A".as_ref(), plugin.as_os_str()]);
            KopfProcess::spawn_with_env(all, envs)
        })
        .unwrap();
        tokio::task::block_in_place(|| kopf.wait_for_line("The operator is ready", DEADLINE)).unwrap();
        kopf
    }

    /// A KopfExample body.
    pub fn example(name: &str, field: &str) -> Value {
        json!({
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfExample",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"field": field},
        })
    }

    /// Creates a KopfExample (not counted: in-process, or the admin user on a real server).
    pub async fn create(&self, name: &str, field: &str) -> Value {
        self.emu.create_object(Self::example(name, field)).await.unwrap()
    }

    /// Sets `spec.field` (not counted): a replace of the current object.
    pub async fn set_field(&self, name: &str, field: &str) {
        let mut obj = self.get(name).expect("the object to update exists");
        obj["spec"]["field"] = json!(field);
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        obj.as_object_mut().unwrap().remove("status");
        self.emu.apply_object(obj).await.unwrap();
    }

    /// Deletes a KopfExample (not counted).
    pub async fn delete(&self, name: &str) {
        self.emu
            .delete_object("kopf.dev/v1", "kopfexamples", Some(NS), name)
            .await
            .unwrap();
    }

    /// The current object, if it exists.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.emu.get_object("kopf.dev/v1", "kopfexamples", Some(NS), name)
    }

    /// All KopfExamples.
    pub fn list(&self) -> Vec<Value> {
        self.emu
            .list_objects("kopf.dev/v1", "kopfexamples", Some(NS), None)
            .unwrap()
    }

    /// Polls `check` on the object until it yields a value; fails with the last object and
    /// the operator's log otherwise.
    pub async fn wait_obj<T>(
        &self,
        name: &str,
        what: &str,
        kopf: Option<&KopfProcess>,
        mut check: impl FnMut(Option<&Value>) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            let obj = self.get(name);
            if let Some(v) = check(obj.as_ref()) {
                return v;
            }
            if start.elapsed() > DEADLINE {
                let log = kopf.map(|k| k.lines().join("\n")).unwrap_or_default();
                panic!(
                    "timed out after {DEADLINE:?} waiting for {name}: {what}\nlast object: {}\nkopf log:\n{log}",
                    serde_json::to_string_pretty(&obj).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `check` until it holds, or fails with `what`.
    pub async fn wait_until(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether the object carries Kopf's finalizer.
pub fn has_finalizer(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// The diff-base annotation, parsed.
pub fn last_handled(obj: &Value) -> Option<Value> {
    let text = obj
        .pointer("/metadata/annotations")?
        .get(LAST_HANDLED)?
        .as_str()?;
    serde_json::from_str(text).ok()
}

/// A fixture plugin's path (built on first use).
pub fn fixture(name: &str) -> PathBuf {
    tokio::task::block_in_place(|| plugin_path(name)).unwrap()
}

/// One line of a record file: `<handler id> <namespace/name> <uid> <reason>`.
pub type RecordKey = (String, String, String, String);

/// Counts of record lines (handler id, namespace/name, uid, reason) in a record file.
pub fn read_records(path: &Path) -> BTreeMap<RecordKey, usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        if let [id, obj, uid, reason] = parts[..] {
            *counts
                .entry((id.to_owned(), obj.to_owned(), uid.to_owned(), reason.to_owned()))
                .or_insert(0) += 1;
        } else {
            panic!("a malformed record line: {line:?}");
        }
    }
    counts
}

/// A small deterministic pseudo-random generator (xorshift64*), seeded for reproduction.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `$name` if set, else from the clock; prints the seed.
    pub fn from_env(name: &str) -> Self {
        let seed = std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        eprintln!("random seed: {name}={seed}");
        Self(seed)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        lo + x % (hi - lo).max(1)
    }
}

/// A usize from the environment, or a default.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Progress-record annotations (`kopf.zalando.org/<handler id>`) left on an object.
pub fn progress_annotations(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|a| {
            a.keys()
                .filter(|k| k.starts_with("kopf.zalando.org/") && k.as_str() != LAST_HANDLED)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Whether all create handlers of `lifecycle-multi` are done (with `spec.field` = `v1`).
pub fn created(o: Option<&Value>) -> bool {
    o.is_some_and(|o| {
        o.pointer("/status/create_fn") == Some(&json!({"created": true}))
            && o.pointer("/status/create_gated") == Some(&json!({"gated": true}))
            && o.pointer("/status/create_more") == Some(&json!({"more": true}))
            && o.pointer("/status/field_fn~1spec.field/new") == Some(&json!("v1"))
            && last_handled(o).and_then(|b| b.pointer("/spec/field").cloned()) == Some(json!("v1"))
            && has_finalizer(o)
            && progress_annotations(o).is_empty()
    })
}

/// Whether the update handlers of `lifecycle-multi` are done (`spec.field` `v1` → `v2`).
pub fn updated(o: Option<&Value>) -> bool {
    o.is_some_and(|o| {
        o.pointer("/status/update_fn") == Some(&json!({"updated": true}))
            && o.pointer("/status/field_fn~1spec.field") == Some(&json!({"old": "v1", "new": "v2"}))
            && last_handled(o).and_then(|b| b.pointer("/spec/field").cloned()) == Some(json!("v2"))
            && has_finalizer(o)
            && progress_annotations(o).is_empty()
    })
}

/// The handler successes one `lifecycle-multi` object's create → update → delete
/// lifecycle must record: (handler id, reason).
pub const LIFECYCLE_MULTI: [(&str, &str); 7] = [
    ("create_fn", "create"),
    ("create_gated", "create"),
    ("create_more", "create"),
    ("field_fn/spec.field", "create"),
    ("update_fn", "update"),
    ("field_fn/spec.field", "update"),
    ("delete_fn", "delete"),
];
