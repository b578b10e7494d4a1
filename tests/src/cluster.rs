//! The cluster a test runs against: the in-process emulator (the default) or, with
//! `KOPF_TEST_CLUSTER=apiserver`, a fresh real kube-apiserver started by `tests/apiserver/run`.
//!
//! [`TestCluster`] offers the emulator's test API (`get_object`, `list_objects`, `apply_yaml`,
//! `counters`, ...) on both backends, so that one suite runs on either. Powers only the emulator
//! has (fault injection, admission hooks in the test process, arbitrary tokens) are reached
//! through [`TestCluster::emulator`]; tests that need them run on the emulator only and say so
//! with [`emulator_only`].
//!
//! On the real server the operator authenticates as its own user (`kopf-operator`, in group
//! `system:masters`) and the test's own client as `kopf-admin`, so the operator's requests are
//! counted apart: from the server's audit log, one line per request.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kopf_testing::{Counters, Emulator, EmulatorHandle};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

use crate::{wait_for, workspace_root};

/// The variable that chooses the backend.
pub const BACKEND_VARIABLE: &str = "KOPF_TEST_CLUSTER";

/// Which kind of server the end-to-end suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `kopf-testing`'s emulator, in the test process (the default).
    Emulator,
    /// A real kube-apiserver with an in-process etcd (`tests/apiserver/run`; needs Go).
    ApiServer,
}

impl Backend {
    /// The backend `KOPF_TEST_CLUSTER` asks for: unset, empty or `emulator`, or `apiserver`.
    /// Any other value is an error (a typo must not silently test the emulator).
    pub fn from_env() -> Result<Self> {
        match std::env::var(BACKEND_VARIABLE).unwrap_or_default().as_str() {
            "" | "emulator" => Ok(Self::Emulator),
            "apiserver" => Ok(Self::ApiServer),
            other => bail!("{BACKEND_VARIABLE}={other:?}: expected \"emulator\" or \"apiserver\""),
        }
    }

    /// The backend of this test run; panics with the reason on a bad `KOPF_TEST_CLUSTER`.
    pub fn current() -> Self {
        Self::from_env().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// For tests that need the emulator's own powers: returns true (and prints why) when the run
/// is on the real API server, so the test returns early. `reason` is one line.
pub fn emulator_only(reason: &str) -> bool {
    if Backend::current() == Backend::ApiServer {
        eprintln!("emulator-only test ({reason}): not run with {BACKEND_VARIABLE}=apiserver");
        return true;
    }
    false
}

/// A running cluster of either backend.
pub struct TestCluster {
    backend: BackendHandle,
}

enum BackendHandle {
    Emulator(EmulatorHandle),
    ApiServer(Box<RealApiServer>),
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            BackendHandle::Emulator(emu) => write!(f, "TestCluster::Emulator({})", emu.url()),
            BackendHandle::ApiServer(real) => write!(f, "TestCluster::ApiServer({})", real.server),
        }
    }
}

impl TestCluster {
    /// Starts a cluster of the backend that `KOPF_TEST_CLUSTER` chooses.
    pub async fn start() -> Result<Self> {
        match Backend::from_env()? {
            Backend::Emulator => Self::start_emulator().await,
            Backend::ApiServer => Self::start_apiserver().await,
        }
    }

    /// Starts an emulator whatever the backend variable says.
    pub async fn start_emulator() -> Result<Self> {
        let emu = Emulator::builder().start().await?;
        Ok(Self::from_emulator(emu))
    }

    /// Wraps an emulator started by the caller (with its own builder settings).
    pub fn from_emulator(emu: EmulatorHandle) -> Self {
        Self {
            backend: BackendHandle::Emulator(emu),
        }
    }

    /// Starts a fresh real API server.
    pub async fn start_apiserver() -> Result<Self> {
        let real = tokio::task::spawn_blocking(RealApiServer::start).await??;
        Ok(Self {
            backend: BackendHandle::ApiServer(Box::new(real)),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.backend {
            BackendHandle::Emulator(_) => Backend::Emulator,
            BackendHandle::ApiServer(_) => Backend::ApiServer,
        }
    }

    /// Whether this is a real API server.
    pub fn is_real(&self) -> bool {
        self.backend() == Backend::ApiServer
    }

    /// The emulator, for the powers only it has (faults, hooks, tokens); None on a real server.
    pub fn emulator(&self) -> Option<&EmulatorHandle> {
        match &self.backend {
            BackendHandle::Emulator(emu) => Some(emu),
            BackendHandle::ApiServer(_) => None,
        }
    }

    /// The emulator, or a panic naming the emulator-only power a test asked for.
    pub fn expect_emulator(&self, power: &str) -> &EmulatorHandle {
        self.emulator().unwrap_or_else(|| {
            panic!("{power} needs the emulator; this test must not run on the real API server")
        })
    }

    /// The server's base URL.
    pub fn url(&self) -> String {
        match &self.backend {
            BackendHandle::Emulator(emu) => emu.url(),
            BackendHandle::ApiServer(real) => real.server.clone(),
        }
    }

    /// A kubeconfig for the operator: on the real server the `kopf-operator` user, whose
    /// requests [`Self::counters`] counts.
    pub fn kubeconfig_yaml(&self) -> String {
        match &self.backend {
            BackendHandle::Emulator(emu) => emu.kubeconfig_yaml(),
            BackendHandle::ApiServer(real) => real.kubeconfig_with_token(&real.operator_token),
        }
    }

    /// Writes [`Self::kubeconfig_yaml`] to a file.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path.as_ref(), self.kubeconfig_yaml())
            .with_context(|| format!("writing {}", path.as_ref().display()))
    }

    /// A kubeconfig for the test's own requests (kubectl, a test's kube client): on the real
    /// server the `kopf-admin` user, not counted as the operator's.
    pub fn admin_kubeconfig_yaml(&self) -> String {
        match &self.backend {
            BackendHandle::Emulator(emu) => emu.kubeconfig_yaml(),
            BackendHandle::ApiServer(real) => real.kubeconfig_with_token(&real.admin_token),
        }
    }

    /// Writes [`Self::admin_kubeconfig_yaml`] to a file.
    pub fn write_admin_kubeconfig(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path.as_ref(), self.admin_kubeconfig_yaml())
            .with_context(|| format!("writing {}", path.as_ref().display()))
    }

    /// A kubeconfig authenticating with another bearer token (a ServiceAccount's, say).
    pub fn kubeconfig_yaml_with_token(&self, token: &str) -> String {
        match &self.backend {
            BackendHandle::Emulator(emu) => emu.kubeconfig_yaml_with_token(token),
            BackendHandle::ApiServer(real) => real.kubeconfig_with_token(token),
        }
    }

    /// A kube client for the test's own requests (admin identity).
    pub async fn admin_client(&self) -> Result<kube::Client> {
        client_from_yaml(&self.admin_kubeconfig_yaml()).await
    }

    /// Creates or updates every object of a (multi-document) YAML text; CRDs are served
    /// (established) when this returns.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>> {
        match &self.backend {
            BackendHandle::Emulator(emu) => Ok(emu.apply_yaml(yaml).await?),
            BackendHandle::ApiServer(real) => {
                let yaml = yaml.to_owned();
                let client = real.client.clone();
                real.run(async move { apply_yaml(&client, &yaml).await }).await
            }
        }
    }

    /// Creates one object (namespace defaults to `default`).
    pub async fn create_object(&self, obj: Value) -> Result<Value> {
        match &self.backend {
            BackendHandle::Emulator(emu) => Ok(emu.create_object(obj).await?),
            BackendHandle::ApiServer(real) => {
                let client = real.client.clone();
                real.run(async move { create(&client, obj).await }).await
            }
        }
    }

    /// Creates an object, or replaces it when it exists (its current resourceVersion taken).
    pub async fn apply_object(&self, obj: Value) -> Result<Value> {
        match &self.backend {
            BackendHandle::Emulator(emu) => Ok(emu.apply_object(obj).await?),
            BackendHandle::ApiServer(real) => {
                let client = real.client.clone();
                real.run(async move { create_or_replace(&client, obj).await })
                    .await
            }
        }
    }

    /// One object (`api_version` like `kopf.dev/v1` or `v1`; `plural` like `kopfexamples`).
    /// Blocking on the real server (callable from sync code and from multi-thread runtimes).
    pub fn get_object(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        match &self.backend {
            BackendHandle::Emulator(emu) => emu.get_object(api_version, plural, namespace, name),
            BackendHandle::ApiServer(real) => {
                let api = real.api(api_version, plural, namespace);
                let owned = name.to_owned();
                real.block_on(async move { api.get_opt(&owned).await })
                    .unwrap_or_else(|e| panic!("GET {plural}/{name} from the API server: {e}"))
                    .map(to_value)
            }
        }
    }

    /// Lists objects (all namespaces when `namespace` is None), optionally by label selector.
    pub fn list_objects(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Vec<Value>> {
        match &self.backend {
            BackendHandle::Emulator(emu) => {
                Ok(emu.list_objects(api_version, plural, namespace, label_selector)?)
            }
            BackendHandle::ApiServer(real) => {
                let api = real.api(api_version, plural, namespace);
                let mut params = ListParams::default();
                if let Some(selector) = label_selector {
                    params = params.labels(selector);
                }
                let list = real.block_on(async move { api.list(&params).await })?;
                Ok(list.items.into_iter().map(to_value).collect())
            }
        }
    }

    /// Deletes one object with kube semantics; returns whether it is gone already.
    pub async fn delete_object(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<bool> {
        match &self.backend {
            BackendHandle::Emulator(emu) => {
                Ok(emu.delete_object(api_version, plural, namespace, name).await?)
            }
            BackendHandle::ApiServer(real) => {
                let api = real.api(api_version, plural, namespace);
                let name = name.to_owned();
                real.run(async move {
                    let deleted = api.delete(&name, &DeleteParams::default()).await?;
                    Ok(deleted.is_right())
                })
                .await
            }
        }
    }

    /// Number of objects of a resource in all namespaces.
    pub fn count_objects(&self, api_version: &str, plural: &str) -> usize {
        self.list_objects(api_version, plural, None, None)
            .map(|items| items.len())
            .unwrap_or(0)
    }

    /// The requests counted so far: on the emulator every request; on the real server the
    /// operator's (`kopf-operator`) requests since the start or [`Self::reset_counters`].
    pub fn counters(&self) -> Counters {
        match &self.backend {
            BackendHandle::Emulator(emu) => emu.counters(),
            BackendHandle::ApiServer(real) => real.counters(),
        }
    }

    /// On a real server, `apiserver_request_total` from its `/metrics` for a verb (upper case,
    /// as the metric has it: `PATCH`), resource and subresource (`""` for none), summed over
    /// response codes and all users; None on the emulator.
    pub fn metrics_request_total(&self, verb: &str, resource: &str, subresource: &str) -> Option<u64> {
        let text = self.metrics_text()?;
        Some(sum_request_total(&text, verb, resource, subresource))
    }

    /// On a real server, its `/metrics` (Prometheus text); None on the emulator.
    pub fn metrics_text(&self) -> Option<String> {
        let BackendHandle::ApiServer(real) = &self.backend else {
            return None;
        };
        let client = real.client.clone();
        let text = real
            .block_on(async move {
                let request = http::Request::get("/metrics").body(Vec::new())?;
                Ok::<_, anyhow::Error>(client.request_text(request).await?)
            })
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        Some(text)
    }

    /// Starts counting anew.
    pub fn reset_counters(&self) {
        match &self.backend {
            BackendHandle::Emulator(emu) => emu.reset_counters(),
            BackendHandle::ApiServer(real) => real.reset_counters(),
        }
    }

    /// Stops the server (the real one is also stopped when dropped).
    pub async fn shutdown(&self) {
        match &self.backend {
            BackendHandle::Emulator(emu) => emu.shutdown().await,
            BackendHandle::ApiServer(real) => real.stop(),
        }
    }

    /// The real server's log (for failure messages); empty on the emulator.
    pub fn server_log_tail(&self, lines: usize) -> String {
        match &self.backend {
            BackendHandle::Emulator(_) => String::new(),
            BackendHandle::ApiServer(real) => real.log_tail(lines),
        }
    }
}

/// The examples' `KopfExample` resource (`examples/crd.yaml`), for kube-rs APIs.
pub fn kopfexamples() -> ApiResource {
    ApiResource {
        group: "kopf.dev".into(),
        version: "v1".into(),
        api_version: "kopf.dev/v1".into(),
        kind: "KopfExample".into(),
        plural: "kopfexamples".into(),
    }
}

/// A kube client from a kubeconfig text.
pub async fn client_from_yaml(yaml: &str) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::from_yaml(yaml)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn to_value(obj: DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

fn api_resource(api_version: &str, plural: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: String::new(),
        plural: plural.into(),
    }
}

async fn create(client: &kube::Client, obj: Value) -> Result<Value> {
    let (resource, namespaced) = resolve(client, &obj).await?;
    let obj: DynamicObject = serde_json::from_value(obj)?;
    let api = scoped_api(client, &resource, namespaced, obj.metadata.namespace.as_deref());
    Ok(to_value(api.create(&PostParams::default(), &obj).await?))
}

async fn create_or_replace(client: &kube::Client, obj: Value) -> Result<Value> {
    let (resource, namespaced) = resolve(client, &obj).await?;
    let mut obj: DynamicObject = serde_json::from_value(obj)?;
    let api = scoped_api(client, &resource, namespaced, obj.metadata.namespace.as_deref());
    let name = obj.metadata.name.clone().context("an object without a name")?;
    loop {
        let Some(current) = api.get_opt(&name).await? else {
            return Ok(to_value(api.create(&PostParams::default(), &obj).await?));
        };
        obj.metadata.resource_version = current.metadata.resource_version;
        match api.replace(&name, &PostParams::default(), &obj).await {
            // Changed since the read: read again and replace that.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            other => return Ok(to_value(other?)),
        }
    }
}

fn scoped_api(
    client: &kube::Client,
    resource: &ApiResource,
    namespaced: bool,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    if namespaced {
        Api::namespaced_with(client.clone(), ns.unwrap_or("default"), resource)
    } else {
        Api::all_with(client.clone(), resource)
    }
}

/// The resource and scope of an object's apiVersion and kind, by discovery. A CRD created
/// just before is served a moment later: retried for a while.
async fn resolve(client: &kube::Client, obj: &Value) -> Result<(ApiResource, bool)> {
    let api_version = obj["apiVersion"]
        .as_str()
        .context("an object without apiVersion")?;
    let kind = obj["kind"].as_str().context("an object without kind")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((resource, caps)) => return Ok((resource, caps.scope == kube::discovery::Scope::Namespaced)),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                bail!("{api_version} {kind} is not served: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn apply_yaml(client: &kube::Client, yaml: &str) -> Result<Vec<Value>> {
    let mut documents = vec![];
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        documents.push(<Value as serde::Deserialize>::deserialize(doc)?);
    }
    let mut out = vec![];
    for value in documents {
        if value.is_null() {
            continue;
        }
        let items = match value.get("items").and_then(Value::as_array) {
            Some(items) if value["kind"].as_str().is_some_and(|k| k.ends_with("List")) => items.clone(),
            _ => vec![value],
        };
        for item in items {
            out.push(apply_one(client, item).await?);
        }
    }
    Ok(out)
}

async fn apply_one(client: &kube::Client, obj: Value) -> Result<Value> {
    let (resource, namespaced) = resolve(client, &obj).await?;
    let name = obj["metadata"]["name"]
        .as_str()
        .context("an object without a name")?
        .to_owned();
    let ns = obj["metadata"]["namespace"].as_str().map(str::to_owned);
    let api = scoped_api(client, &resource, namespaced, ns.as_deref());
    let params = PatchParams::apply("kopf-tests").force();
    let applied = to_value(api.patch(&name, &params, &Patch::Apply(&obj)).await?);
    if obj["kind"] == "CustomResourceDefinition" {
        wait_established(client, &name, &obj).await?;
    }
    Ok(applied)
}

/// Waits until a CRD is established and each of its versions is discoverable.
async fn wait_established(client: &kube::Client, name: &str, crd: &Value) -> Result<()> {
    let crds = Api::<DynamicObject>::all_with(
        client.clone(),
        &api_resource("apiextensions.k8s.io/v1", "customresourcedefinitions"),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let current = to_value(crds.get(name).await?);
        let established = current["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
        if established {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("CRD {name} not established within 30s: {current}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
    for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
        if let Some(version) = version["name"].as_str() {
            let probe = serde_json::json!({"apiVersion": format!("{group}/{version}"), "kind": kind});
            resolve(client, &probe).await?;
        }
    }
    Ok(())
}

/// A real kube-apiserver in a child process, and a runtime of its own for the test's requests
/// (so that sync helpers can wait on them from any thread, inside a runtime or not).
struct RealApiServer {
    child: Mutex<Option<Child>>,
    /// Held open: the server stops when it closes (also when this process dies).
    stdin: Mutex<Option<ChildStdin>>,
    output: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
    server: String,
    ca_data: String,
    admin_token: String,
    operator_token: String,
    audit_log: PathBuf,
    /// Audit lines before this offset are not counted ([`TestCluster::reset_counters`]).
    counted_from: Mutex<u64>,
    /// Taken on drop: a runtime may not be dropped (blocking) inside another's async context.
    runtime: Option<tokio::runtime::Runtime>,
    client: kube::Client,
}

/// The Kubernetes release the real-apiserver lane builds (from `tests/apiserver/go.mod`).
pub fn apiserver_version() -> String {
    let go_mod = std::fs::read_to_string(workspace_root().join("tests/apiserver/go.mod")).unwrap_or_default();
    go_mod
        .lines()
        .find_map(|line| line.trim().strip_prefix("k8s.io/kubernetes "))
        .map_or_else(|| "(unknown version)".to_owned(), |v| v.trim().to_owned())
}

/// The path of the built `kopf-apiserver` binary: `tests/apiserver/run --build-only` once per
/// test process (a first build takes minutes; later ones find the cached binary).
pub fn apiserver_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let script = workspace_root().join("tests/apiserver/run");
            let out = Command::new("bash")
                .arg(&script)
                .arg("--build-only")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} --build-only failed (the real-apiserver lane needs Go 1.26+ and the Go module proxy):\n{}",
                    script.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

impl RealApiServer {
    fn start() -> Result<Self> {
        let binary = apiserver_binary()?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let mut child = Command::new(&binary)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--stop-on-stdin-eof")
            // Alpha, off by default; it only acts on requests that carry a shardSelector
            // (`kopf run --sharding`): KEP-5866's server-side sharded list and watch.
            .args(["--", "--feature-gates=ShardedListAndWatch=true"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdin = child.stdin.take();
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            let sink = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let ready = wait_for(Duration::from_secs(120), "the API server's kubeconfig", || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            kubeconfig.exists().then_some(Ok(()))
        });
        let log_file = PathBuf::from(format!("{}.apiserver.log", kubeconfig.display()));
        let output_text = || output.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(status)) => bail!(
                "the API server exited ({status}) before it was ready:\n{}",
                output_text()
            ),
            Err(e) => {
                let _ = child.kill();
                bail!("{e}:\n{}\n{}", output_text(), tail(&log_file, 40))
            }
        }
        let admin: Value = serde_yaml::from_str(&std::fs::read_to_string(&kubeconfig)?)?;
        let server = admin["clusters"][0]["cluster"]["server"]
            .as_str()
            .context("no server")?
            .to_owned();
        let ca_data = admin["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .context("no CA")?
            .to_owned();
        let admin_token = admin["users"][0]["user"]["token"]
            .as_str()
            .context("no token")?
            .to_owned();
        let operator_token = std::fs::read_to_string(format!("{}.operator-token", kubeconfig.display()))?
            .trim()
            .to_owned();
        let audit_log = PathBuf::from(format!("{}.audit.jsonl", kubeconfig.display()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let admin_yaml = kubeconfig_with_token(&server, &ca_data, &admin_token);
        let client = runtime.block_on(client_from_yaml(&admin_yaml))?;
        Ok(Self {
            child: Mutex::new(Some(child)),
            stdin: Mutex::new(stdin),
            output,
            dir,
            server,
            ca_data,
            admin_token,
            operator_token,
            audit_log,
            counted_from: Mutex::new(0),
            client,
            runtime: Some(runtime),
        })
    }

    fn kubeconfig_with_token(&self, token: &str) -> String {
        kubeconfig_with_token(&self.server, &self.ca_data, token)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    fn api(&self, api_version: &str, plural: &str, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = api_resource(api_version, plural);
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Runs a request on the server's runtime and awaits it.
    async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.runtime().spawn(fut).await?
    }

    /// Runs a request on the server's runtime and blocks this thread until it is done.
    fn block_on<T: Send + 'static, E: Send + 'static>(
        &self,
        fut: impl Future<Output = std::result::Result<T, E>> + Send + 'static,
    ) -> std::result::Result<T, E> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime().spawn(async move {
            let _ = tx.send(fut.await);
        });
        let wait = move || rx.recv().expect("the API server's runtime dropped a request");
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }

    fn counters(&self) -> Counters {
        let from = *self.counted_from.lock().unwrap_or_else(|e| e.into_inner());
        count_audit_log(&self.audit_log, from, "kopf-operator")
    }

    fn reset_counters(&self) {
        let size = std::fs::metadata(&self.audit_log).map(|m| m.len()).unwrap_or(0);
        *self.counted_from.lock().unwrap_or_else(|e| e.into_inner()) = size;
    }

    fn log_tail(&self, lines: usize) -> String {
        let output = self.output.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
        let log = tail(&self.dir.path().join("admin.kubeconfig.apiserver.log"), lines);
        format!("{output}\n{log}")
    }

    fn stop(&self) {
        // Closing stdin asks the server to stop; it removes its data itself.
        drop(self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take());
        let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let exited = wait_for(Duration::from_secs(20), "the API server to stop", || {
            child.try_wait().ok().flatten()
        });
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RealApiServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn kubeconfig_with_token(server: &str, ca: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kopf-apiserver\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\ncontexts:\n- name: kopf-apiserver\n  context:\n    cluster: kopf-apiserver\n    \
         user: user\n    namespace: default\ncurrent-context: kopf-apiserver\npreferences: {{}}\nusers:\n- name: user\n  \
         user:\n    token: {token}\n"
    )
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sums `apiserver_request_total` samples of a Prometheus text exposition by labels.
pub fn sum_request_total(text: &str, verb: &str, resource: &str, subresource: &str) -> u64 {
    let wanted = [
        format!("verb=\"{verb}\""),
        format!("resource=\"{resource}\""),
        format!("subresource=\"{subresource}\""),
    ];
    text.lines()
        .filter_map(|line| line.strip_prefix("apiserver_request_total{"))
        .filter_map(|rest| rest.split_once("} "))
        .filter(|(labels, _)| {
            let labels: Vec<&str> = labels.split(',').collect();
            wanted.iter().all(|w| labels.contains(&w.as_str()))
        })
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Counts the requests of one user in a kube-apiserver JSON audit log from a byte offset:
/// one request per audit ID (a watch logs a line when it starts and one when it ends).
pub fn count_audit_log(path: &Path, from: u64, user: &str) -> Counters {
    let mut counters = Counters::default();
    let Ok(text) = std::fs::read(path) else {
        return counters;
    };
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for line in text[start..].split(|b| *b == b'\n') {
        let Ok(event) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if event["user"]["username"] != user {
            continue;
        }
        let id = event["auditID"].as_str().unwrap_or_default().to_owned();
        // The completed stage has the final status code; a watch's start is enough to count it.
        by_id.insert(id, event);
    }
    for event in by_id.values() {
        let resource = match (
            event["objectRef"]["resource"].as_str(),
            event["objectRef"]["subresource"].as_str(),
        ) {
            (Some(r), Some(s)) => format!("{r}/{s}"),
            (Some(r), None) => r.to_owned(),
            (None, _) => event["requestURI"].as_str().unwrap_or("?").to_owned(),
        };
        let verb = event["verb"].as_str().unwrap_or("?");
        counters.total += 1;
        *counters
            .by_verb_resource
            .entry(format!("{verb} {resource}"))
            .or_default() += 1;
        *counters.by_user.entry(user.to_owned()).or_default() += 1;
        if let Some(agent) = event["userAgent"].as_str() {
            *counters.by_user_agent.entry(agent.to_owned()).or_default() += 1;
        }
        if let Some(code) = event["responseStatus"]["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
        {
            *counters.by_status.entry(code).or_default() += 1;
        }
    }
    counters
}
