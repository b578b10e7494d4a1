//! `kopf new`: scaffold an operator crate.
//!
//! The scaffold is a standalone Cargo package (its own `[workspace]`) with a `cdylib`
//! plugin, a create handler, the example CRD and object, a two-stage Dockerfile and a
//! `deploy/` directory with RBAC, a Deployment and a kustomization. `cargo build` in it
//! produces `target/debug/lib<name>.so`, runnable with `kopf run`.

use std::path::{Path, PathBuf};

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
    /// Depend on the SDK at this local path (`kopf = { path = ... }`) instead of the
    /// registry version; by default the SDK this `kopf` was built from is used when its
    /// source tree still exists.
    #[arg(long, value_name = "DIR", conflicts_with = "sdk_version")]
    pub sdk_path: Option<PathBuf>,
    /// Depend on this registry version of the SDK (`kopf = "VERSION"`).
    #[arg(long, value_name = "VERSION")]
    pub sdk_version: Option<String>,
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

/// The SDK dependency line for `Cargo.toml`.
fn sdk_dependency(args: &NewArgs) -> Result<String> {
    if let Some(version) = &args.sdk_version {
        return Ok(format!("kopf = {:?}", version));
    }
    let path = match &args.sdk_path {
        Some(p) => Some(
            std::fs::canonicalize(p)
                .with_context(|| format!("the SDK path {} does not exist", p.display()))?,
        ),
        None => {
            let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
            std::fs::canonicalize(built_from).ok()
        }
    };
    Ok(match path {
        Some(p) => format!("kopf = {{ path = {:?} }}", p.display().to_string()),
        None => format!("kopf = {:?}", env!("CARGO_PKG_VERSION")),
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
        (".dockerignore", "target\n.git\n".to_owned()),
        ("Dockerfile", fill(DOCKERFILE)),
        ("deploy/crd.yaml", CRD.to_owned()),
        ("deploy/obj.yaml", OBJ.to_owned()),
        ("deploy/rbac.yaml", fill(RBAC)),
        ("deploy/deployment.yaml", fill(DEPLOYMENT)),
        ("deploy/kustomization.yaml", fill(KUSTOMIZATION)),
    ]
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
    let dependency = sdk_dependency(&args)?;
    for (rel, content) in files(&args.name, &dependency) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "Created the operator crate {:?} in {}.\nNext: cd {} && cargo build && kopf run --embedded -A \
         -f deploy/crd.yaml -f deploy/obj.yaml target/debug/lib{}.so",
        args.name,
        dir.display(),
        dir.display(),
        args.name.replace('-', "_")
    );
    Ok(())
}

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

use serde_json::{Value, json};

/// The spec of a `KopfExample` object.
#[derive(Debug, serde::Deserialize)]
struct Spec {
    #[serde(default)]
    field: String,
}

/// Runs once per new object; the returned value lands in `status.create_fn`.
#[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
pub fn create_fn(ctx: &kopf::Context) -> kopf::Result<Value> {
    let spec: Spec = ctx.spec_as()?;
    tracing::info!("Creating with field={:?}", spec.field);
    ctx.info("Created", "the operator has seen the object");
    Ok(json!({"message": format!("hello {}", spec.field)}))
}
"#;

const README: &str = r#"# {{name}}

A Kubernetes operator written with [kopf for Rust](https://example.invalid/kopf-rs).

```sh
cargo build                                   # target/debug/{{so}}
kopf inspect target/debug/{{so}}              # the declared handlers
kopf run --embedded -A -f deploy/crd.yaml -f deploy/obj.yaml target/debug/{{so}}
```

Against a cluster (`kubectl` context set):

```sh
kubectl apply -f deploy/crd.yaml
kopf run -A target/debug/{{so}} &
kubectl apply -f deploy/obj.yaml
```

## Deploying

`kopf rbac target/debug/{{so}} -f deploy/crd.yaml -A > deploy/rbac.yaml` regenerates the
least-privilege RBAC whenever the handlers change. The image holds two files, the `kopf`
binary and the plugin:

```sh
docker build -t {{name}}:dev --build-arg KOPF_IMAGE=kopf:{{version}} .
kubectl apply -k deploy/
```
"#;

const DOCKERFILE: &str = r#"# Two files at runtime: the `kopf` binary (from the kopf image) and this plugin.
ARG KOPF_IMAGE=kopf:{{version}}
FROM ${KOPF_IMAGE} AS kopf

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home kopf
COPY --from=kopf /usr/local/bin/kopf /usr/local/bin/kopf
COPY --from=build /src/target/release/{{so}} /opt/kopf/{{so}}
USER 10001
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
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              x-kubernetes-preserve-unknown-fields: true
            status:
              type: object
              x-kubernetes-preserve-unknown-fields: true
"#;

const OBJ: &str = r#"apiVersion: kopf.dev/v1
kind: KopfExample
metadata:
  name: kopf-example-1
spec:
  field: world
"#;

const RBAC: &str = r#"# Regenerate with: kopf rbac target/debug/{{so}} -f deploy/crd.yaml -A
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
    resources: [clusterkopfpeerings]
    verbs: [get, list, patch, watch]
  - apiGroups: [kopf.dev]
    resources: [kopfexamples]
    verbs: [get, list, patch, watch]
  - apiGroups: [kopf.dev]
    resources: [kopfexamples/status]
    verbs: [patch]
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
  namespace: default
spec:
  replicas: 1
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
      containers:
        - name: operator
          image: {{name}}:dev
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
"#;

const KUSTOMIZATION: &str = r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
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
        assert!(docker.contains("target/release/libmy_op.so"));
    }
}
