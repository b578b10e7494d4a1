//! `kopf new`: scaffold an operator crate.
//!
//! The scaffold is a standalone Cargo package (its own `[workspace]`) with a `cdylib`
//! plugin, a create handler and its unit test (the SDK's `kopf::testing`), a CRD with a
//! schema and an object, the Dockerfile of `docs/deployment.md`, a `deploy/` kustomization
//! and a `Cargo.lock`. `cargo test` runs the handler's test; `cargo build` produces
//! `target/debug/lib<name>.so`, runnable with `kopf run`.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::Args;

/// `kopf new` arguments.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The crate's name (and directory): letters, digits, `-` and `_`, starting with a letter.
    pub name: String,
    /// Create the crate in this directory instead of `./NAME`.
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// Depend on the SDK in this source tree (`plugin-sdk/` of a kopf checkout), by a path
    /// relative to the new crate, instead of the registry version.
    #[arg(long, value_name = "DIR", conflicts_with = "sdk_version")]
    pub sdk_path: Option<PathBuf>,
    /// Depend on this registry version of the SDK (default: this kopf's version).
    #[arg(long, value_name = "VERSION")]
    pub sdk_version: Option<String>,
    /// Do not run `cargo generate-lockfile` in the new crate.
    #[arg(long)]
    pub no_lockfile: bool,
}

/// Checks a crate name the way Cargo would accept it as a package name.
fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("invalid crate name {name:?}: use letters, digits, '-' and '_', starting with a letter");
    }
    if name == "kopf" || name == "test" {
        bail!("invalid crate name {name:?}: it clashes with a dependency or a built-in name");
    }
    Ok(())
}

/// `to` relative to the directory `from` (both absolute and canonical), e.g.
/// `../kopf/plugin-sdk`.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component<'_>> = from.components().collect();
    let to: Vec<Component<'_>> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for part in &to[common..] {
        rel.push(part.as_os_str());
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    rel
}

/// The deepest directory holding both paths (absolute and canonical).
fn common_ancestor(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.as_os_str())
        .collect()
}

/// The Cargo workspace root above (or at) `dir`: the SDK's manifest inherits from it, so an
/// image build needs it in its context.
fn workspace_root_of(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        })
        .unwrap_or(dir)
        .to_path_buf()
}

/// How the scaffold gets the SDK.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sdk {
    /// `kopf = "VERSION"` from the registry.
    Registry(String),
    /// `kopf = { path = RELATIVE }`; the image is built from `context` (the common ancestor
    /// of the crate and the SDK's workspace) with `CRATE_DIR` = the crate's path inside it.
    Path {
        relative: PathBuf,
        context: PathBuf,
        crate_dir: PathBuf,
        /// The SDK workspace's `Cargo.lock`: the versions it was tested with.
        lock: PathBuf,
    },
}

impl Sdk {
    fn dependency(&self) -> String {
        match self {
            Self::Registry(version) => format!("kopf = {version:?}"),
            Self::Path { relative, .. } => format!("kopf = {{ path = {:?} }}", slashes(relative)),
        }
    }
}

/// A path with `/` separators (Cargo.toml and Dockerfiles on every platform).
fn slashes(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn resolve_sdk(args: &NewArgs, crate_dir: &Path) -> Result<Sdk> {
    let Some(sdk) = &args.sdk_path else {
        let version = args
            .sdk_version
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
        return Ok(Sdk::Registry(version));
    };
    let sdk = std::fs::canonicalize(sdk)
        .with_context(|| format!("the SDK path {} does not exist", sdk.display()))?;
    let manifest = std::fs::read_to_string(sdk.join("Cargo.toml")).with_context(|| {
        format!(
            "{} has no Cargo.toml: pass the SDK's directory (plugin-sdk/)",
            sdk.display()
        )
    })?;
    if !manifest.lines().any(|l| l.trim() == "name = \"kopf\"") {
        bail!(
            "{} is not the kopf SDK (its Cargo.toml does not name the package \"kopf\")",
            sdk.display()
        );
    }
    let workspace = workspace_root_of(&sdk);
    let context = common_ancestor(crate_dir, &workspace);
    Ok(Sdk::Path {
        relative: relative_path(crate_dir, &sdk),
        crate_dir: relative_path(&context, crate_dir),
        context,
        lock: workspace.join("Cargo.lock"),
    })
}

/// The files of the scaffold: `(relative path, content)`.
pub fn files(name: &str, sdk_dependency: &str) -> Vec<(&'static str, String)> {
    let lib = name.replace('-', "_");
    let so = format!("lib{lib}.so");
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{lib}}", &lib)
            .replace("{{so}}", &so)
            .replace("{{sdk}}", sdk_dependency)
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
    };
    vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("README.md", fill(README)),
        (".gitignore", "/target\n".to_owned()),
        (".dockerignore", DOCKERIGNORE.to_owned()),
        // BuildKit reads this one also when the context is a parent directory (`-f`).
        ("Dockerfile.dockerignore", DOCKERIGNORE.to_owned()),
        ("Dockerfile", fill(DOCKERFILE)),
        ("deploy/crd.yaml", CRD.to_owned()),
        ("deploy/obj.yaml", OBJ.to_owned()),
        ("deploy/rbac.yaml", fill(RBAC)),
        ("deploy/deployment.yaml", fill(DEPLOYMENT)),
        ("deploy/kustomization.yaml", fill(KUSTOMIZATION)),
        (
            "deploy/namespace.yaml",
            fill("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{name}}\n"),
        ),
    ]
}

/// The scaffold's Dockerfile for a crate named `name`: the one `docs/deployment.md` shows
/// (for `my-operator`).
pub fn dockerfile(name: &str) -> String {
    files(name, "")
        .into_iter()
        .find_map(|(path, content)| (path == "Dockerfile").then_some(content))
        .unwrap_or_default()
}

/// Writes the new crate's `Cargo.lock`; a failure is reported, not fatal (the first
/// `cargo build` writes one too).
///
/// With the SDK of a checkout, the lock starts from the checkout's own `Cargo.lock`, pruned
/// to what the crate uses (`cargo update --workspace` keeps the other versions): the
/// scaffold builds with the versions kopf was tested with. Otherwise `cargo
/// generate-lockfile` resolves the newest compatible versions.
fn write_lockfile(dir: &Path, seed: Option<&Path>) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let run = |args: &[&str]| Command::new(&cargo).args(args).current_dir(dir).output();
    if let Some(seed) = seed.filter(|s| s.is_file())
        && std::fs::copy(seed, dir.join("Cargo.lock")).is_ok()
    {
        let ok = |args: &[&str]| run(args).is_ok_and(|o| o.status.success());
        // Offline first: the seeded versions are usually in the local cache already.
        if ok(&["update", "--workspace", "--offline"]) || ok(&["update", "--workspace"]) {
            return;
        }
        let _ = std::fs::remove_file(dir.join("Cargo.lock"));
    }
    match run(&["generate-lockfile"]) {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "kopf: warning: no Cargo.lock yet (cargo generate-lockfile failed; run it when the dependencies resolve):\n{}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        ),
        Err(e) => eprintln!("kopf: warning: no Cargo.lock yet (cannot run cargo: {e})"),
    }
}

/// Writes the scaffold.
pub fn run(args: NewArgs) -> Result<()> {
    validate_name(&args.name)?;
    let dir = args.path.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let crate_dir =
        std::fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let sdk = match resolve_sdk(&args, &crate_dir) {
        Ok(sdk) => sdk,
        Err(e) => {
            // Leave nothing behind for a retry with a corrected path.
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
    };
    for (rel, content) in files(&args.name, &sdk.dependency()) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !args.no_lockfile {
        let seed = match &sdk {
            Sdk::Path { lock, .. } => Some(lock.as_path()),
            Sdk::Registry(_) => None,
        };
        write_lockfile(&dir, seed);
    }
    let lib = args.name.replace('-', "_");
    println!(
        "Created the operator crate {:?} in {}.\nNext:\n  cd {}\n  cargo test\n  cargo build\n  \
         kopf run --embedded -A -f deploy/crd.yaml -f deploy/obj.yaml target/debug/lib{lib}.so",
        args.name,
        dir.display(),
        dir.display(),
    );
    let image = format!("{}:0.1.0", args.name);
    match &sdk {
        Sdk::Registry(_) => println!(
            "The image (see README.md): docker build -t {image} {}",
            dir.display()
        ),
        Sdk::Path {
            context, crate_dir, ..
        } => println!(
            "The image (the SDK is outside the crate, so the build context is their common directory):\n  \
             docker build -f {cd}/Dockerfile --build-arg CRATE_DIR={cd} -t {image} {}",
            context.display(),
            cd = slashes(crate_dir),
        ),
    }
    Ok(())
}

const DOCKERIGNORE: &str = "**/target\n**/.git\n";

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

# A standalone package, even when created inside another workspace.
[workspace]

[lib]
# A loadable plugin: `kopf run target/debug/{{so}}`.
crate-type = ["cdylib"]

[dependencies]
{{sdk}}
serde = { version = "1", features = ["derive"] }
serde_json = "1"
tracing = "0.1"
"#;

const LIB_RS: &str = r#"//! The {{name}} operator's handlers.

use serde::Deserialize;
use serde_json::{Value, json};

/// The spec of a `KopfExample` object (its schema is in deploy/crd.yaml).
#[derive(Debug, Deserialize)]
pub struct Spec {
    /// Whom to greet.
    pub field: String,
}

/// Runs once per new object; the returned value lands in `status.create_fn`.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
pub fn create_fn(ctx: &kopf::Context) -> kopf::Result<Value> {
    let spec: Spec = ctx.spec_as()?;
    tracing::info!("Creating with field={:?}", spec.field);
    ctx.info("Created", format!("greeting {}", spec.field));
    Ok(json!({"message": format!("hello {}", spec.field)}))
}

#[cfg(test)]
mod tests {
    use kopf::testing::{ContextBuilder, posted_events};
    use serde_json::json;

    #[test]
    fn create_fn_greets_the_field() {
        let ctx = ContextBuilder::new("kopf.dev/v1", "KopfExample")
            .namespace("default")
            .name("kopf-example-1")
            .spec(json!({"field": "world"}))
            .reason("create")
            .build();
        let result = super::create_fn(&ctx).expect("the handler succeeds");
        assert_eq!(result, json!({"message": "hello world"}));
        assert_eq!(posted_events(&ctx)[0]["reason"], "Created");
    }

    #[test]
    fn create_fn_fails_without_a_field() {
        let ctx = ContextBuilder::new("kopf.dev/v1", "KopfExample").spec(json!({})).build();
        assert!(super::create_fn(&ctx).is_err());
    }
}
"#;

const README: &str = r#"# {{name}}

A Kubernetes operator written with kopf for Rust: handlers in `src/lib.rs`, compiled into a
plugin (`cdylib`) that the `kopf` binary runs.

```sh
cargo test                                    # the handlers' unit tests (kopf::testing)
cargo build                                   # target/debug/{{so}}
kopf inspect target/debug/{{so}}              # the declared handlers
kopf run --embedded -A -f deploy/crd.yaml -f deploy/obj.yaml target/debug/{{so}}
```

`--embedded` runs against an in-process Kubernetes API emulator. Against a cluster
(`kubectl` context set):

```sh
kubectl apply -f deploy/crd.yaml
kopf run -A target/debug/{{so}} &
kubectl apply -f deploy/obj.yaml
kubectl get kopfexamples -o yaml              # status.create_fn.message: hello world
```

## Deploying

The image holds two files: the `kopf` binary (copied from a `kopf` image: the `kopf` stage of
kopf's repository Dockerfile, `docker build --target kopf -t kopf:{{version}} PATH/TO/kopf`)
and this plugin:

```sh
docker build -t {{name}}:0.1.0 .
kubectl apply -k deploy/                      # namespace {{name}}, CRD, RBAC, Deployment
```

`kopf rbac -A --name {{name}} -f deploy/crd.yaml target/debug/{{so}} > deploy/rbac.yaml`
regenerates the least-privilege RBAC whenever the handlers change.
"#;

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
#
# The {{name}} operator image: the `kopf` binary and this crate's plugin, nothing else.
#
#   docker build -t {{name}}:0.1.0 .
#
# KOPF_IMAGE holds only the stripped `kopf` binary: the `kopf` stage of kopf's repository
# Dockerfile (docker build --target kopf -t kopf:{{version}} PATH/TO/kopf).
# With `kopf new --sdk-path` the SDK lives outside this directory: build from a directory
# holding both, and name this crate's place in it:
#   docker build -f {{name}}/Dockerfile --build-arg CRATE_DIR={{name}} -t {{name}}:0.1.0 .

ARG KOPF_IMAGE=kopf:{{version}}
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${KOPF_IMAGE} AS kopf

FROM ${RUST_IMAGE} AS build
ARG CRATE_DIR=.
WORKDIR /src
COPY . .
WORKDIR /src/${CRATE_DIR}
# Cache mounts keep the registry and the compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/cache/target \
    cargo build --release --locked --target-dir /cache/target \
 && mkdir -p /out \
 && strip --strip-unneeded -o /out/{{so}} /cache/target/release/{{so}}

# glibc (plugins are loaded with dlopen), non-root, no shell.
FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=kopf /usr/local/bin/kopf /usr/local/bin/kopf
COPY --from=build /out/{{so}} /opt/kopf/{{so}}
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kopf"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "/opt/kopf/{{so}}"]
"#;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: kopfexamples.kopf.dev
spec:
  scope: Namespaced
  group: kopf.dev
  names:
    kind: KopfExample
    plural: kopfexamples
    singular: kopfexample
    shortNames: [kex]
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
      additionalPrinterColumns:
        - name: Field
          type: string
          jsonPath: .spec.field
        - name: Message
          type: string
          jsonPath: .status.create_fn.message
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [field]
              properties:
                field:
                  type: string
                  minLength: 1
                  description: Whom the operator greets.
            status:
              type: object
              # Handler results (status.create_fn) and Kopf's progress records.
              x-kubernetes-preserve-unknown-fields: true
"#;

const OBJ: &str = r#"apiVersion: kopf.dev/v1
kind: KopfExample
metadata:
  name: kopf-example-1
spec:
  field: world
"#;

const RBAC: &str = r#"# Regenerate with: kopf rbac -A --name {{name}} -f deploy/crd.yaml target/debug/{{so}}
# (the kustomization moves the ServiceAccount into its namespace).
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{name}}
  namespace: default
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{name}}
rules:
  - apiGroups: [""]
    resources: [events]
    verbs: [create]
  - apiGroups: [apiextensions.k8s.io]
    resources: [customresourcedefinitions]
    verbs: [list, watch]
  - apiGroups: [kopf.dev]
    resources: [kopfexamples]
    verbs: [get, list, patch, watch]
  - apiGroups: [kopf.dev]
    resources: [kopfexamples/status]
    verbs: [patch]
  - apiGroups: [kopf.dev]
    resources: [clusterkopfpeerings]
    resourceNames: [default]
    verbs: [get, list, patch, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{name}}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{name}}
subjects:
  - kind: ServiceAccount
    name: {{name}}
    namespace: default
"#;

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{name}}
spec:
  replicas: 1
  # One operator at a time: the old pod stops before the new one starts.
  strategy:
    type: Recreate
  selector:
    matchLabels:
      app.kubernetes.io/name: {{name}}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {{name}}
    spec:
      serviceAccountName: {{name}}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: operator
          image: {{name}}:0.1.0
          args: ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "/opt/kopf/{{so}}"]
          env:
            - name: POD_ID
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
          ports:
            - name: health
              containerPort: 8080
          livenessProbe:
            httpGet:
              path: /healthz
              port: health
            initialDelaySeconds: 10
            periodSeconds: 10
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]
"#;

const KUSTOMIZATION: &str = r#"# kubectl apply -k deploy/
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
# The operator's own namespace (also for the ServiceAccount the ClusterRoleBinding names).
namespace: {{name}}
resources:
  - namespace.yaml
  - crd.yaml
  - rbac.yaml
  - deployment.yaml
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("my-operator").is_ok());
        assert!(validate_name("op_2").is_ok());
        for bad in ["", "1op", "my op", "kopf", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn templates_are_filled_and_yaml_parses() {
        let files = files("my-op", "kopf = \"0.1.0\"");
        for (path, content) in &files {
            assert!(!content.contains("{{"), "{path} has an unfilled placeholder");
            if path.ends_with(".yaml") {
                for doc in serde_yaml::Deserializer::from_str(content) {
                    let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
                    assert!(v.get("apiVersion").is_some(), "{path}: {v}");
                }
            }
        }
        let cargo = &files.iter().find(|(p, _)| *p == "Cargo.toml").unwrap().1;
        assert!(cargo.contains("name = \"my-op\"") && cargo.contains("kopf = \"0.1.0\""));
        let docker = &files.iter().find(|(p, _)| *p == "Dockerfile").unwrap().1;
        assert!(docker.contains("/cache/target/release/libmy_op.so"));
        assert_eq!(dockerfile("my-op"), *docker);
    }

    #[test]
    fn relative_paths_and_the_build_context() {
        let rel = |a: &str, b: &str| slashes(&relative_path(Path::new(a), Path::new(b)));
        assert_eq!(rel("/w/ops/my-op", "/w/kopf/plugin-sdk"), "../../kopf/plugin-sdk");
        assert_eq!(rel("/w/kopf/my-op", "/w/kopf/plugin-sdk"), "../plugin-sdk");
        assert_eq!(rel("/w", "/w/a"), "a");
        assert_eq!(rel("/w/a", "/w/a"), ".");
        assert_eq!(
            common_ancestor(Path::new("/w/ops/my-op"), Path::new("/w/kopf")),
            PathBuf::from("/w")
        );
        let sdk = Sdk::Path {
            relative: PathBuf::from("../kopf/plugin-sdk"),
            context: PathBuf::from("/w"),
            crate_dir: PathBuf::from("my-op"),
            lock: PathBuf::from("/w/kopf/Cargo.lock"),
        };
        assert_eq!(sdk.dependency(), "kopf = { path = \"../kopf/plugin-sdk\" }");
        assert_eq!(Sdk::Registry("0.1.0".into()).dependency(), "kopf = \"0.1.0\"");
    }
}
