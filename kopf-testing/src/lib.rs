//! A faithful-enough Kubernetes API server emulator over real HTTP, for testing operators.
//!
//! It serves discovery, OpenAPI v3 stubs (so `kubectl create/apply` validate server-side),
//! built-in resources (namespaces, pods, configmaps, secrets, services, events, leases,
//! deployments, replicasets, CRDs, webhook configurations) and custom resources defined by CRDs,
//! with kube-apiserver's semantics for what operators and kubectl touch: resourceVersions from one
//! global counter, preconditions and 409s, status subresource rules, generation, finalizers,
//! owner-reference garbage collection, label/field selectors, pagination, watches with bounded
//! history (410 Expired), bookmarks and streaming lists, Tables for kubectl, fault injection and
//! request counters.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kopf_testing::EmulatorError> {
//! let emu = kopf_testing::Emulator::builder().bind("127.0.0.1:0").start().await?;
//! emu.write_kubeconfig("/tmp/kubeconfig")?;
//! emu.apply_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: default}\n").await?;
//! println!("{}", emu.url());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod admission;
mod api;
mod chaos;
mod defaults;
mod error;
mod faults;
mod http;
mod openapi;
mod patch;
mod protobuf;
mod rbac;
mod render;
mod resources;
pub mod runner;
mod scale;
mod schema;
mod selectors;
mod store;
mod watch;
mod webhooks;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use admission::{AdmissionDecision, AdmissionHook, AdmissionRequest, Operation};
pub use chaos::{Chaos, ChaosCounts, ChaosPlan};
pub use error::{ApiError, EmulatorError};
pub use faults::{Counters, FaultKind, FaultMatch, Faults, RequestRecord, retry_after_violations};
pub use resources::{GroupResource, ResourceDef};
pub use runner::{KopfRunner, RunnerError, eventually};
pub use selectors::{FieldSelector, LabelSelector};

use api::{Config, ListOpts, Shared};
use store::State;

/// Entry point: `Emulator::builder()`.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// A builder with defaults: history window 1000 events per resource, bookmarks every 60 s,
    /// 3 MiB bodies, bound to `127.0.0.1:0`.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder {
            history_window: 1000,
            bookmark_interval: Duration::from_secs(60),
            max_body_bytes: 3 * 1024 * 1024,
            bind: "127.0.0.1:0".into(),
        }
    }
}

/// Configures and starts an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    history_window: usize,
    bookmark_interval: Duration,
    max_body_bytes: usize,
    bind: String,
}

impl EmulatorBuilder {
    /// Events kept per resource for watch resumption; watches from older resourceVersions get 410.
    pub fn history_window(mut self, n: usize) -> Self {
        self.history_window = n.max(1);
        self
    }

    /// Period of BOOKMARK events on watches that asked for them.
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = d;
        self
    }

    /// Largest accepted request body (413 above).
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.bind = addr.into();
        self
    }

    /// Bind and start serving in the background.
    pub async fn start(self) -> Result<EmulatorHandle, EmulatorError> {
        let addr: SocketAddr = self
            .bind
            .parse()
            .map_err(|_| EmulatorError::BadAddress(self.bind.clone()))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (tx, _) = broadcast::channel(65536);
        let rv_published = Arc::new(AtomicU64::new(0));
        let state = Arc::new(Mutex::new(State::new(
            self.history_window,
            tx.clone(),
            rv_published.clone(),
        )));
        let (close_tx, close_rx) = tokio::sync::watch::channel(0u64);
        let faults = Arc::new(Faults::new(close_tx, state.clone()));
        // Stored Validating/MutatingWebhookConfigurations are called as kube-apiserver does.
        let webhook_caller: Arc<dyn AdmissionHook> = Arc::new(webhooks::WebhookCaller::new(state.clone()));
        let shared = Arc::new(Shared {
            state,
            tx,
            rv_published,
            cfg: Config {
                bookmark_interval: self.bookmark_interval,
                max_body_bytes: self.max_body_bytes,
            },
            faults,
            counters: Default::default(),
            hooks: RwLock::new(vec![webhook_caller]),
            tokens: Default::default(),
            close_rx,
            shutdown: CancellationToken::new(),
        });
        let task = tokio::spawn(http::serve(listener, shared.clone()));
        Ok(EmulatorHandle {
            inner: Arc::new(Inner {
                shared,
                addr: local,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A running emulator (cheap to clone).
#[derive(Clone)]
pub struct EmulatorHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("url", &self.url())
            .finish()
    }
}

/// The user name written into kubeconfigs (as a bearer token).
pub const KUBECONFIG_USER: &str = "kopf-emulator";

fn split_api_version(av: &str) -> (&str, &str) {
    match av.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", av),
    }
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A kubeconfig for this server: context `kopf-emulator`, namespace `default`, token user.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kopf-emulator\n  cluster:\n    server: {url}\n\
             contexts:\n- name: kopf-emulator\n  context:\n    cluster: kopf-emulator\n    user: {user}\n    \
             namespace: default\ncurrent-context: kopf-emulator\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    \
             token: {user}\n",
            url = self.url(),
            user = KUBECONFIG_USER,
        )
    }

    /// Write the kubeconfig to a file.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), EmulatorError> {
        std::fs::write(path, self.kubeconfig_yaml())?;
        Ok(())
    }

    /// Create or replace every object of a (multi-document) YAML text; `kind: List` is unpacked.
    /// CRDs are served as soon as they are applied. Returns the stored objects.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>, EmulatorError> {
        let mut out = vec![];
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v: Value = serde::Deserialize::deserialize(doc)?;
            if v.is_null() {
                continue;
            }
            let items = if v
                .get("kind")
                .and_then(|k| k.as_str())
                .is_some_and(|k| k.ends_with("List"))
                && let Some(items) = v.get("items").and_then(|i| i.as_array())
            {
                items.clone()
            } else {
                vec![v]
            };
            for item in items {
                out.push(self.apply_object(item).await?);
            }
        }
        Ok(out)
    }

    /// Create or replace one object (by its apiVersion/kind; namespace defaults to `default`).
    pub async fn apply_object(&self, obj: Value) -> Result<Value, EmulatorError> {
        let shared = &self.inner.shared;
        let (def, version, ns) = self.locate(&obj)?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        if !name.is_empty() && shared.get(&def, &ns, &name).is_ok() {
            let mut body = obj.clone();
            if let Some(m) = body.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                m.remove("resourceVersion");
            }
            // Replace with the current resourceVersion (apply semantics), status included when
            // there is a status subresource.
            let v = shared
                .update_loop(
                    &def,
                    &version,
                    &ns,
                    &name,
                    None,
                    &api::ReqCtx::internal(),
                    false,
                    |old| {
                        let mut b = body.clone();
                        store::meta_mut(&mut b).insert(
                            "resourceVersion".into(),
                            old.pointer("/metadata/resourceVersion")
                                .cloned()
                                .unwrap_or(Value::Null),
                        );
                        Ok(b)
                    },
                )
                .await?;
            if def.status_subresource
                && let Some(status) = obj.get("status")
            {
                let status = status.clone();
                let v = shared
                    .update_loop(
                        &def,
                        &version,
                        &ns,
                        &name,
                        Some("status"),
                        &api::ReqCtx::internal(),
                        false,
                        |old| {
                            let mut b = old.clone();
                            b["status"] = status.clone();
                            Ok(b)
                        },
                    )
                    .await?;
                return Ok(v);
            }
            return Ok(v);
        }
        Ok(shared
            .create(&def, &version, &ns, obj, &api::ReqCtx::internal())
            .await?)
    }

    /// Create one object through the API semantics (no HTTP).
    pub async fn create_object(&self, obj: Value) -> Result<Value, EmulatorError> {
        let shared = &self.inner.shared;
        let (def, version, ns) = self.locate(&obj)?;
        Ok(shared
            .create(&def, &version, &ns, obj, &api::ReqCtx::internal())
            .await?)
    }

    /// The resource, version and namespace (`default` if unset, empty for cluster-scoped
    /// resources) of an object, from its apiVersion and kind.
    fn locate(&self, obj: &Value) -> Result<(Arc<ResourceDef>, String, String), EmulatorError> {
        let text = |key: &str| obj.get(key).and_then(Value::as_str).unwrap_or_default();
        let (av, kind) = (text("apiVersion"), text("kind"));
        let (def, version) = self
            .inner
            .shared
            .state
            .lock()
            .registry
            .by_kind(av, kind)
            .ok_or_else(|| EmulatorError::BadDocument(format!("unknown apiVersion/kind {av:?}/{kind:?}")))?;
        let ns = if def.namespaced {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        Ok((def, version, ns))
    }

    fn def_for(&self, api_version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        let (g, v) = split_api_version(api_version);
        self.inner.shared.state.lock().registry.lookup(g, v, plural)
    }

    /// Get one object (`api_version` like `kopf.dev/v1` or `v1`; plural like `kopfexamples`).
    pub fn get_object(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let def = self.def_for(api_version, plural)?;
        let (_, v) = split_api_version(api_version);
        let b = self
            .inner
            .shared
            .get_bytes(&def, namespace.unwrap_or(""), name)
            .ok()?;
        serde_json::from_slice(&render::in_version(&def, v, &b)).ok()
    }

    /// List objects (all namespaces when `namespace` is None), optionally with a label selector.
    pub fn list_objects(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Vec<Value>, EmulatorError> {
        let def = self
            .def_for(api_version, plural)
            .ok_or_else(|| EmulatorError::BadDocument(format!("unknown resource {api_version} {plural}")))?;
        let labels = LabelSelector::parse(label_selector.unwrap_or(""))
            .map_err(|e| EmulatorError::Api(ApiError::bad_request(e)))?;
        let res = self.inner.shared.list(
            &def,
            namespace,
            &ListOpts {
                labels,
                ..Default::default()
            },
        )?;
        let (_, v) = split_api_version(api_version);
        Ok(res
            .items
            .iter()
            .filter_map(|b| serde_json::from_slice(&render::in_version(&def, v, b)).ok())
            .collect())
    }

    /// Delete one object with kube semantics (finalizers, GC). Returns whether it is gone.
    pub async fn delete_object(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<bool, EmulatorError> {
        let def = self
            .def_for(api_version, plural)
            .ok_or_else(|| EmulatorError::BadDocument(format!("unknown resource {api_version} {plural}")))?;
        let (_, v) = split_api_version(api_version);
        let (_, gone) = self
            .inner
            .shared
            .delete(
                &def,
                v,
                namespace.unwrap_or(""),
                name,
                &store::DeleteOpts::default(),
                &api::ReqCtx::internal(),
            )
            .await?;
        Ok(gone)
    }

    /// Number of stored objects of a resource (all namespaces).
    pub fn count_objects(&self, group: &str, plural: &str) -> usize {
        let gr = GroupResource {
            group: group.into(),
            resource: plural.into(),
        };
        self.inner
            .shared
            .state
            .lock()
            .collections
            .get(&gr)
            .map(|c| c.objects.len())
            .unwrap_or(0)
    }

    /// The last issued resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.shared.state.lock().rv
    }

    /// Register an admission hook (called on create/update/delete before storing).
    pub fn add_admission_hook(&self, hook: Arc<dyn AdmissionHook>) {
        self.inner.shared.hooks.write().push(hook);
    }

    /// Register a bearer token for a user: tokens of ServiceAccount users
    /// (`system:serviceaccount:NAMESPACE:NAME`) are then authorised by the stored RBAC objects
    /// (Roles, ClusterRoles and their bindings) and get kube-apiserver's 403 when denied.
    /// Requests with other tokens stay allowed. Secrets of type
    /// `kubernetes.io/service-account-token` with a `data.token` work the same way.
    pub fn add_token(&self, token: &str, user: &str) {
        self.inner.shared.tokens.add(token, user);
    }

    /// Forget a token registered with [`Self::add_token`].
    pub fn remove_token(&self, token: &str) {
        self.inner.shared.tokens.remove(token);
    }

    /// A kubeconfig like [`Self::kubeconfig_yaml`] but authenticating with this bearer token.
    pub fn kubeconfig_yaml_with_token(&self, token: &str) -> String {
        self.kubeconfig_yaml().replace(
            &format!("    token: {KUBECONFIG_USER}\n"),
            &format!("    token: {token}\n"),
        )
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> Counters {
        self.inner.shared.counters.snapshot()
    }

    /// Zero the request counters.
    pub fn reset_counters(&self) {
        self.inner.shared.counters.reset();
    }

    /// Fault injection controls.
    pub fn faults(&self) -> &Faults {
        &self.inner.shared.faults
    }

    /// Stop serving: close watches and connections, then wait for the server task.
    pub async fn shutdown(&self) {
        self.inner.shared.shutdown.cancel();
        let task = self.inner.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

/// Options of [`serve_until_signal`] (the `kopf emulator` subcommand).
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Listen address (default `127.0.0.1:0`).
    pub bind: Option<String>,
    /// Where to write the kubeconfig.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// YAML files to apply at start (CRDs first is up to the caller's order).
    pub files: Vec<std::path::PathBuf>,
    /// Watch history window (default 1000).
    pub history_window: Option<usize>,
}

/// Start an emulator, write the kubeconfig, apply the files, print the URL, and serve until
/// SIGINT or SIGTERM.
pub async fn serve_until_signal(opts: ServeOptions) -> Result<(), EmulatorError> {
    let mut b = Emulator::builder().bind(opts.bind.clone().unwrap_or_else(|| "127.0.0.1:0".into()));
    if let Some(h) = opts.history_window {
        b = b.history_window(h);
    }
    let emu = b.start().await?;
    if let Some(p) = &opts.kubeconfig {
        emu.write_kubeconfig(p)?;
        tracing::info!(path = %p.display(), "kubeconfig written");
    }
    for f in &opts.files {
        let text = std::fs::read_to_string(f)?;
        let objs = emu.apply_yaml(&text).await?;
        tracing::info!(file = %f.display(), objects = objs.len(), "applied");
    }
    println!("Kubernetes API emulator serving at {}", emu.url());
    wait_for_signal().await?;
    emu.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> Result<(), EmulatorError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Result<(), EmulatorError> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
