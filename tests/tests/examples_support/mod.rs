//! Shared set-up of the example suites: an in-process emulator with the examples' CRD,
//! the real `kopf` binary running an example plugin against it, a kube-rs client for the
//! test's own writes, and condition waits with deadlines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kopf_e2e::cluster::TestCluster;
pub use kopf_e2e::cluster::kopfexamples;
use kopf_e2e::{KopfProcess, plugin_path, workspace_root};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;

/// How long any single condition may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The finalizer Kopf puts on objects with delete handlers.
pub const FINALIZER: &str = "kopf.zalando.org/KopfFinalizerMarker";

/// The diff-base annotation.
pub const LAST_HANDLED: &str = "kopf.zalando.org/last-handled-configuration";

/// One running example: emulator, operator, client.
pub struct Example {
    /// The cluster: the emulator in this process, or a real API server (`KOPF_TEST_CLUSTER`).
    pub emu: TestCluster,
    /// The running operator.
    pub kopf: KopfProcess,
    /// The test's own client over HTTP (the admin identity on a real server).
    pub client: kube::Client,
    /// Holds the kubeconfig and any files of the example.
    pub dir: tempfile::TempDir,
    plugin: PathBuf,
    kubeconfig: PathBuf,
    envs: Vec<(String, String)>,
}

/// The core `Pod` resource.
pub fn pods() -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Pod".into(),
        plural: "pods".into(),
    }
}

impl Example {
    /// Builds the example's plugin, starts the emulator with the CRD and runs
    /// `kopf run -n default --standalone <plugin>` until it is ready.
    /// `envs` may refer to `{dir}`, replaced by the example's temporary directory.
    pub async fn start(package: &str, envs: &[(&str, &str)]) -> Example {
        let package_owned = package.to_owned();
        let plugin = tokio::task::spawn_blocking(move || plugin_path(&package_owned))
            .await
            .unwrap()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let emu = TestCluster::start().await.unwrap();
        emu.write_kubeconfig(&kubeconfig).unwrap();
        let crd = std::fs::read_to_string(workspace_root().join("examples/crd.yaml")).unwrap();
        emu.apply_yaml(&crd).await.unwrap();
        let client = emu.admin_client().await.unwrap();
        let dir_text = dir.path().display().to_string();
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.replace("{dir}", &dir_text)))
            .collect();
        let kopf = spawn(&plugin, &kubeconfig, &envs).await;
        Example {
            emu,
            kopf,
            client,
            dir,
            plugin,
            kubeconfig,
            envs,
        }
    }

    /// Stops the operator (SIGTERM; exit code 0 asserted) and starts a new one.
    pub async fn restart(&mut self) {
        self.stop_operator().await;
        self.kopf = spawn(&self.plugin, &self.kubeconfig, &self.envs).await;
    }

    /// Sends SIGTERM and asserts a clean exit.
    pub async fn stop_operator(&mut self) {
        self.kopf.signal("TERM").unwrap();
        let status = tokio::task::block_in_place(|| self.kopf.wait_exit(Duration::from_secs(20))).unwrap();
        assert!(
            status.success(),
            "kopf exited with {status}; log:\n{}",
            self.kopf.lines().join("\n")
        );
    }

    /// Stops the operator and the emulator.
    pub async fn finish(mut self) {
        self.stop_operator().await;
        self.emu.shutdown().await;
    }

    /// A dynamic API for a resource in `default`.
    pub fn api(&self, ar: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), "default", ar)
    }

    /// Creates an object (over HTTP) in `default`.
    pub async fn create(&self, ar: &ApiResource, obj: Value) {
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        self.api(ar).create(&PostParams::default(), &obj).await.unwrap();
    }

    /// Merge-patches an object (over HTTP) in `default`.
    pub async fn patch(&self, ar: &ApiResource, name: &str, patch: Value) {
        self.api(ar)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// Deletes an object (over HTTP) in `default`.
    pub async fn delete(&self, ar: &ApiResource, name: &str) {
        self.api(ar).delete(name, &DeleteParams::default()).await.unwrap();
    }

    /// Reads an object (from the emulator's store, or over HTTP from a real server).
    pub fn get(&self, ar: &ApiResource, name: &str) -> Option<Value> {
        self.emu
            .get_object(&ar.api_version, &ar.plural, Some("default"), name)
    }

    /// Polls an object of `default` until `check` yields a value; fails after
    /// [`DEADLINE`] with the last object and the operator's log.
    pub async fn wait_object<T>(
        &self,
        ar: &ApiResource,
        name: &str,
        what: &str,
        mut check: impl FnMut(Option<&Value>) -> Option<T>,
    ) -> T {
        let mut last = None;
        let found = self
            .wait(what, || {
                last = self.get(ar, name);
                check(last.as_ref())
            })
            .await;
        match found {
            Ok(v) => v,
            Err(e) => panic!(
                "{e}\nlast object: {}",
                serde_json::to_string_pretty(&last).unwrap_or_default()
            ),
        }
    }

    /// Polls `check` every 20 ms until it yields a value; fails after [`DEADLINE`] or when
    /// the operator exits, with the operator's log.
    pub async fn wait<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T, String> {
        let start = Instant::now();
        loop {
            if let Some(v) = check() {
                return Ok(v);
            }
            if start.elapsed() > DEADLINE {
                return Err(format!(
                    "timed out after {DEADLINE:?} waiting for: {what}\nkopf log:\n{}",
                    self.kopf.lines().join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the operator's log has a line containing `needle`.
    pub async fn wait_line(&self, needle: &str) -> String {
        let what = format!("a kopf log line containing {needle:?}");
        self.wait(&what, || {
            self.kopf.lines().into_iter().find(|l| l.contains(needle))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The operator's log lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.kopf
            .lines()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }
}

async fn spawn(plugin: &Path, kubeconfig: &Path, envs: &[(String, String)]) -> KopfProcess {
    let mut all: Vec<(String, String)> = vec![("KUBECONFIG".into(), kubeconfig.display().to_string())];
    all.extend(envs.iter().cloned());
    let args = [
        "run".to_owned(),
        "-n".into(),
        "default".into(),
        "--standalone".into(),
        plugin.display().to_string(),
    ];
    let mut kopf = KopfProcess::spawn_with_env(args, all).unwrap();
    tokio::task::block_in_place(|| kopf.wait_for_line("The operator is ready", DEADLINE)).unwrap();
    kopf
}

/// A progress annotation of a handler, parsed.
pub fn progress(obj: &Value, handler_id: &str) -> Option<Value> {
    let key = format!("kopf.zalando.org/{}", handler_id.replace('/', "."));
    let text = obj.pointer("/metadata/annotations")?.get(&key)?.as_str()?;
    Some(serde_json::from_str(text).expect("a progress annotation is not JSON"))
}

/// Whether the object carries Kopf's finalizer.
pub fn has_finalizer(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Whether the object has the diff-base annotation.
pub fn has_diff_base(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_HANDLED))
        .is_some()
}

/// The example object of Kopf's `examples/obj.yaml`, renamed.
pub fn example_object(name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfExample",
        "metadata": {
            "name": name,
            "labels": {"somelabel": "somevalue"},
            "annotations": {"someannotation": "somevalue"},
        },
        "spec": {"duration": "1m", "field": "value", "items": ["item1", "item2"]},
    })
}
