//! The Dockerfile (parsed, and its build script dry-run: no container engine here) and
//! `deploy/`: every kustomization rendered with `kubectl kustomize`, every file through
//! kubectl client-side dry runs against the emulator (kubectl needs a server for discovery
//! even with `--dry-run=client`).

use std::process::Command;

use kopf_e2e::dockerfile::{Dockerfile, dry_run, stage_arg};
use kopf_e2e::{plugin_path, workspace_root};

fn repo_dockerfile() -> Dockerfile {
    Dockerfile::read(&workspace_root().join("Dockerfile")).unwrap()
}

#[test]
fn dockerfile_stages_kopf_alone_and_a_slim_non_root_runtime() {
    let df = repo_dockerfile();
    let stages: Vec<(&str, Option<&str>)> = df
        .stages
        .iter()
        .map(|s| (s.from.as_str(), s.name.as_deref()))
        .collect();
    // The runtime stage is last: the default target.
    assert_eq!(
        stages,
        [
            ("${RUST_IMAGE}", Some("build")),
            ("scratch", Some("kopf")),
            ("${RUNTIME_IMAGE}", Some("runtime"))
        ]
    );
    // glibc-based images on both sides (plugins are dlopen-ed: no musl/static); distroless'
    // cc image has glibc and libgcc, no shell, and a non-root user.
    assert_eq!(df.args["RUST_IMAGE"], "rust:1-bookworm");
    assert_eq!(df.args["RUNTIME_IMAGE"], "gcr.io/distroless/cc-debian12:nonroot");
    // The `kopf` stage holds the binary and nothing else.
    let kopf = df.stage("kopf").unwrap();
    assert_eq!(kopf.instructions.len(), 1);
    assert_eq!(
        kopf.all("COPY"),
        ["--from=build /out/bin/kopf /usr/local/bin/kopf"]
    );
    // The runtime: no RUN (no shell needed), non-root, kopf from the `kopf` stage.
    let runtime = df.stage("runtime").unwrap();
    assert!(runtime.all("RUN").is_empty());
    assert_eq!(
        runtime.all("COPY"),
        [
            "--from=kopf /usr/local/bin/kopf /usr/local/bin/kopf",
            "--from=build /out/opt/kopf /opt/kopf"
        ]
    );
    assert_eq!(runtime.all("USER"), ["65532:65532"]);
    assert_eq!(runtime.all("ENTRYPOINT"), ["[\"/usr/local/bin/kopf\"]"]);
    let cmd = runtime.all("CMD")[0];
    assert!(
        cmd.starts_with("[\"run\"") && cmd.ends_with("\"/opt/kopf/libhandlers.so\"]"),
        "{cmd}"
    );
    // Build caching: the registry and the target directory are cache mounts.
    let run = df.stage("build").unwrap().all("RUN")[0];
    assert!(
        run.contains("--mount=type=cache,target=/usr/local/cargo/registry"),
        "{run}"
    );
    assert!(run.contains("--mount=type=cache,target=/cache/target"), "{run}");
    // The build context excludes build outputs.
    let ignore = std::fs::read_to_string(workspace_root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}

/// The build stage's script, dry-run with stand-ins for cargo and strip (no engine here):
/// CI's build command for the packages named, and exactly the files the later stages copy.
#[test]
fn dockerfile_build_stage_leaves_what_the_runtime_copies_for_several_plugins() {
    let df = repo_dockerfile();
    let build = df.stage("build").unwrap();
    let default_plugins = stage_arg(build, "PLUGINS").unwrap();
    assert_eq!(default_plugins, "example-01-minimal");
    for plugins in [default_plugins, "example-01-minimal example-13-hooks"] {
        let packages: Vec<&str> = plugins.split_whitespace().collect();
        // What cargo names them: the suites build them the same way (lib<name>.so).
        let libs: Vec<String> = packages
            .iter()
            .map(|p| {
                let built = plugin_path(p).unwrap();
                built.file_name().unwrap().to_string_lossy().into_owned()
            })
            .collect();
        let mut outputs = libs.clone();
        outputs.push("kopf".into());
        let root = tempfile::tempdir().unwrap();
        let run = dry_run(
            build.all("RUN")[0],
            root.path(),
            &[("PLUGINS", plugins)],
            &outputs,
        )
        .unwrap();
        let mut expected = format!(
            "build --release --locked --target-dir {}/cache/target -p kopf-cli",
            root.path().display()
        );
        for p in &packages {
            expected.push_str(&format!(" -p {p}"));
        }
        assert_eq!(run.cargo_calls, [expected]);
        // `COPY --from=build /out/bin/kopf` and `/out/opt/kopf`.
        assert!(run.file("/out/bin/kopf").is_file());
        for lib in &libs {
            assert!(
                run.file(&format!("/out/opt/kopf/plugins/{lib}")).is_file(),
                "{lib}"
            );
        }
        assert!(run.file("/out/opt/kopf/libhandlers.so").is_file());
        let in_opt: Vec<_> = std::fs::read_dir(run.file("/out/opt/kopf/plugins"))
            .unwrap()
            .collect();
        assert_eq!(in_opt.len(), libs.len());
    }
    // The binary cargo builds for kopf-cli is `kopf`.
    let manifest = std::fs::read_to_string(workspace_root().join("kopf-cli/Cargo.toml")).unwrap();
    assert!(manifest.contains("[[bin]]\nname = \"kopf\""));
}

#[test]
fn deployment_wires_probes_the_downward_api_and_a_pinned_image() {
    let text = std::fs::read_to_string(workspace_root().join("deploy/deployment.yaml")).unwrap();
    let d: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    assert!(d["metadata"].get("namespace").is_none(), "a hard-coded namespace");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "kopf-operator");
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "kopf-operator:0.1.0");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--liveness=http://0.0.0.0:8080/healthz"),
        "{args:?}"
    );
    assert_eq!(args.last(), Some(&"/opt/kopf/libhandlers.so"));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "health");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        env,
        [
            ("POD_ID", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace")
        ]
    );
    let kustomization = std::fs::read_to_string(workspace_root().join("deploy/kustomization.yaml")).unwrap();
    for file in [
        "namespace.yaml",
        "crd.yaml",
        "peering-crds.yaml",
        "peering-objects.yaml",
        "rbac.yaml",
        "deployment.yaml",
        "metrics-service.yaml",
    ] {
        assert!(
            kustomization.contains(&format!("- {file}")),
            "{file} not in the kustomization"
        );
        assert!(
            workspace_root().join("deploy").join(file).exists(),
            "{file} missing"
        );
    }
}

fn kustomize(dir: &str) -> Vec<serde_json::Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(workspace_root().join(dir))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container_args(docs: &[serde_json::Value]) -> Vec<String> {
    find(docs, "Deployment", "kopf-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// Every kustomization renders; namespaced objects land in the kustomization's namespace
/// (never `default`), cluster-scoped ones (ClusterKopfPeering included) have none; no
/// `latest` tag anywhere.
fn check_common(dir: &str, docs: &[serde_json::Value]) {
    let cluster_scoped = [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterKopfPeering",
    ];
    for d in docs {
        let kind = d["kind"].as_str().unwrap();
        let ns = d["metadata"].get("namespace");
        if cluster_scoped.contains(&kind) {
            assert!(ns.is_none(), "{dir}: {kind} has a namespace");
        } else {
            assert_eq!(ns, Some(&serde_json::json!("kopf-system")), "{dir}: {kind}");
        }
        for s in d["subjects"].as_array().into_iter().flatten() {
            assert_eq!(s["namespace"], "kopf-system", "{dir}: {kind} subject");
        }
    }
    let image =
        &find(docs, "Deployment", "kopf-operator")["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "kopf-operator:0.1.0", "{dir}");
    find(docs, "ClusterKopfPeering", "default");
}

#[test]
fn kustomizations_render_the_base_and_the_overlays() {
    if !kopf_e2e::kubectl_available() {
        return;
    }
    let base = kustomize("deploy");
    check_common("deploy", &base);
    assert!(container_args(&base).contains(&"--all-namespaces".to_owned()));
    // Metrics of every replica, ready or not (a standby's role is worth scraping).
    let metrics = find(&base, "Service", "kopf-operator-metrics");
    assert_eq!(metrics["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(metrics["spec"]["ports"][0]["targetPort"], "health");
    assert_eq!(
        metrics["spec"]["selector"]["app.kubernetes.io/name"],
        "kopf-operator"
    );

    // Monitoring: a ServiceMonitor that selects the metrics Service (and only it).
    let monitoring = kustomize("deploy-overlays/monitoring");
    check_common("monitoring", &monitoring);
    let monitor = find(&monitoring, "ServiceMonitor", "kopf-operator");
    let labels = &find(&monitoring, "Service", "kopf-operator-metrics")["metadata"]["labels"];
    let selector = monitor["spec"]["selector"]["matchLabels"].as_object().unwrap();
    assert!(
        selector.iter().all(|(k, v)| &labels[k] == v),
        "{selector:?} vs {labels}"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    // HA: two replicas electing one through a Lease in their own namespace, rolling updates.
    let ha = kustomize("deploy-overlays/ha");
    check_common("ha", &ha);
    let deployment = find(&ha, "Deployment", "kopf-operator");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    assert!(container_args(&ha).contains(&"--lease=kopf-operator".to_owned()));
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("POD_NAMESPACE") && env.contains("metadata.namespace"),
        "{env}"
    );
    let lease_rules = find(&ha, "Role", "kopf-operator-lease")["rules"].to_string();
    assert!(lease_rules.contains("leases"), "{lease_rules}");

    // Webhooks: the server, the Service the managed configurations name, their RBAC.
    let webhook = kustomize("deploy-overlays/webhook");
    check_common("webhook", &webhook);
    let args = container_args(&webhook);
    for arg in [
        "--webhook-server=https://0.0.0.0:9443",
        "--webhook-host=kopf-operator.$(POD_NAMESPACE).svc",
        "--webhook-managed=kopf-operator.kopf.dev",
    ] {
        assert!(args.contains(&arg.to_owned()), "{arg} in {args:?}");
    }
    let service = find(&webhook, "Service", "kopf-operator");
    assert_eq!(service["spec"]["ports"][0]["port"], 9443);
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/name"],
        "kopf-operator"
    );
    let rules = find(&webhook, "ClusterRole", "kopf-operator-webhooks")["rules"].to_string();
    assert!(rules.contains("validatingwebhookconfigurations"), "{rules}");

    // Namespaced: its own namespace only, Roles instead of cluster-wide access to objects.
    let namespaced = kustomize("deploy-overlays/namespaced");
    check_common("namespaced", &namespaced);
    let args = container_args(&namespaced);
    assert!(
        args.contains(&"--namespace=$(POD_NAMESPACE)".to_owned()),
        "{args:?}"
    );
    assert!(!args.contains(&"--all-namespaces".to_owned()));
    let cluster_role = find(&namespaced, "ClusterRole", "kopf-operator")["rules"].to_string();
    assert!(
        cluster_role.contains("customresourcedefinitions") && !cluster_role.contains("kopfexamples"),
        "{cluster_role}"
    );
    let role = find(&namespaced, "Role", "kopf-operator")["rules"].to_string();
    assert!(
        role.contains("kopfexamples") && role.contains("kopfpeerings"),
        "{role}"
    );
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kubectl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_deploy_manifest_passes_kubectl_client_dry_runs() {
    if !kopf_e2e::kubectl_available() {
        return;
    }
    let deploy = workspace_root().join("deploy");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // A fresh cluster: every manifest except the peering objects (which need their CRDs).
    let emu = kopf_testing::Emulator::builder().start().await.unwrap();
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&deploy)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut needs_crds = vec![];
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name == "kustomization.yaml" {
            continue; // applied with -k below
        }
        let text = std::fs::read_to_string(file).unwrap();
        if text.contains("apiVersion: kopf.dev/") {
            needs_crds.push(file.clone());
            continue;
        }
        let out = kubectl(
            &kubeconfig,
            &["apply", "--dry-run=client", "-f", file.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("(dry run)"));
    }
    // The kustomization and the objects of the CRDs: on a cluster where the CRDs are installed.
    for crds in ["crd.yaml", "peering-crds.yaml"] {
        emu.apply_yaml(&std::fs::read_to_string(deploy.join(crds)).unwrap())
            .await
            .unwrap();
    }
    let out = kubectl(
        &kubeconfig,
        &["apply", "--dry-run=client", "-k", deploy.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "-k: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for what in [
        "kopfexamples.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
        "clusterrole.rbac",
        "deployment.apps/kopf-operator",
    ] {
        assert!(stdout.contains(what), "{what} not applied by -k:\n{stdout}");
    }
    for file in needs_crds {
        let out = kubectl(
            &kubeconfig,
            &["apply", "--dry-run=client", "-f", file.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    emu.shutdown().await;
}
