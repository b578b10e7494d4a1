//! The Dockerfile (parsed: no Docker engine here) and `deploy/` (kubectl client-side dry
//! runs against the emulator: kubectl needs a server for discovery even with
//! `--dry-run=client`).

use std::process::Command;

use kopf_e2e::workspace_root;

/// Dockerfile instructions as `(INSTRUCTION, arguments)`, with continuation lines joined.
fn instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace_root().join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (instr, args) = current.trim().split_once(' ').unwrap_or((current.trim(), ""));
                out.push((instr.to_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn dockerfile_builds_like_ci_and_ships_two_files_as_non_root() {
    let ins = instructions();
    let froms: Vec<&str> = ins
        .iter()
        .filter(|(i, _)| i == "FROM")
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(froms, ["${RUST_IMAGE} AS build", "${RUNTIME_IMAGE} AS runtime"]);
    let arg = |name: &str| {
        ins.iter()
            .find_map(|(i, a)| {
                (i == "ARG")
                    .then(|| a.strip_prefix(&format!("{name}=")))
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no ARG {name}"))
    };
    // glibc-based images on both sides (plugins are dlopen-ed: no musl/static/distroless-static).
    assert_eq!(arg("RUST_IMAGE"), "rust:1-bookworm");
    assert_eq!(arg("RUNTIME_IMAGE"), "debian:bookworm-slim");
    assert_eq!(arg("PLUGIN"), "example-01-minimal");
    // The build stage runs CI's build command.
    let runs: Vec<&str> = ins
        .iter()
        .filter(|(i, _)| i == "RUN")
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(
        runs[0].starts_with("cargo build --release --locked -p kopf-cli -p \"${PLUGIN}\""),
        "{}",
        runs[0]
    );
    // The runtime stage: after the second FROM, exactly two files copied from the build stage.
    let runtime_at = ins.iter().rposition(|(i, _)| i == "FROM").unwrap();
    let runtime = &ins[runtime_at..];
    let copies: Vec<&str> = runtime
        .iter()
        .filter(|(i, _)| i == "COPY")
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(
        copies,
        [
            "--from=build /out/kopf /usr/local/bin/kopf",
            "--from=build /out/libhandlers.so /opt/kopf/libhandlers.so"
        ]
    );
    let user = runtime.iter().find(|(i, _)| i == "USER").map(|(_, a)| a.as_str());
    assert_eq!(user, Some("10001:10001"));
    let entry = runtime.iter().find(|(i, _)| i == "ENTRYPOINT").unwrap();
    assert_eq!(entry.1, "[\"/usr/local/bin/kopf\"]");
    let cmd = runtime.iter().find(|(i, _)| i == "CMD").unwrap();
    assert!(
        cmd.1.starts_with("[\"run\"") && cmd.1.ends_with("\"/opt/kopf/libhandlers.so\"]"),
        "{}",
        cmd.1
    );
    // The plugin named by PLUGIN is a real workspace cdylib package.
    let manifest = std::fs::read_to_string(workspace_root().join("examples/01-minimal/Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"example-01-minimal\"") && manifest.contains("cdylib"));
    // The build context excludes build outputs.
    let ignore = std::fs::read_to_string(workspace_root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}

#[test]
fn deployment_wires_the_liveness_probe_and_the_service_account() {
    let text = std::fs::read_to_string(workspace_root().join("deploy/deployment.yaml")).unwrap();
    let d: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "kopf-operator");
    let c = &pod["containers"][0];
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
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    let kustomization = std::fs::read_to_string(workspace_root().join("deploy/kustomization.yaml")).unwrap();
    for file in ["crd.yaml", "peering-crds.yaml", "rbac.yaml", "deployment.yaml"] {
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
    // Objects of the CRDs: on a cluster where the CRDs are installed.
    for crds in ["crd.yaml", "peering-crds.yaml"] {
        emu.apply_yaml(&std::fs::read_to_string(deploy.join(crds)).unwrap())
            .await
            .unwrap();
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
