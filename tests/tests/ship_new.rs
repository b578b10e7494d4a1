//! `kopf new`: the scaffold builds with `cargo build` as is (against the workspace SDK via
//! a path dependency) and `kopf inspect` lists its handler.

use kopf_e2e::{run_kopf, target_dir, workspace_root};

#[test]
fn the_scaffold_builds_and_inspects() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("my-operator");
    let sdk = workspace_root().join("plugin-sdk");
    let out = run_kopf([
        "new",
        "my-operator",
        "--path",
        crate_dir.to_str().unwrap(),
        "--sdk-path",
        sdk.to_str().unwrap(),
    ])
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "Dockerfile",
        ".dockerignore",
        "README.md",
        "deploy/crd.yaml",
        "deploy/rbac.yaml",
        "deploy/deployment.yaml",
        "deploy/kustomization.yaml",
    ] {
        assert!(crate_dir.join(file).exists(), "{file} not scaffolded");
    }
    // Refuses to overwrite.
    let again = run_kopf(["new", "my-operator", "--path", crate_dir.to_str().unwrap()]).unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // Same dependency versions as the workspace (offline, and the shared target dir reuses
    // the compiled dependencies).
    std::fs::copy(workspace_root().join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let target = target_dir().join("scaffold");
    let build = kopf_e2e::cargo_command()
        .args(["build", "--offline"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "cargo build failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let plugin = target.join("debug/libmy_operator.so");
    assert!(plugin.exists());
    let inspect = run_kopf(["inspect", plugin.to_str().unwrap()]).unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let table = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        table.contains("my-operator") && table.contains("create_fn"),
        "{table}"
    );
    assert!(table.contains("kopfexamples.v1.kopf.dev"), "{table}");
    // Its RBAC template matches what `kopf rbac` derives for it.
    let rbac = run_kopf([
        "rbac",
        "-A",
        "--name",
        "my-operator",
        "-f",
        crate_dir.join("deploy/crd.yaml").to_str().unwrap(),
        plugin.to_str().unwrap(),
    ])
    .unwrap();
    assert!(rbac.status.success(), "{}", String::from_utf8_lossy(&rbac.stderr));
    let parse = |t: &str| -> Vec<serde_json::Value> {
        serde_yaml::Deserializer::from_str(t)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &serde_json::Value| !v.is_null())
            .collect()
    };
    let template = std::fs::read_to_string(crate_dir.join("deploy/rbac.yaml")).unwrap();
    assert_eq!(parse(&template), parse(&String::from_utf8_lossy(&rbac.stdout)));
}
