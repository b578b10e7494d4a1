//! `kopf new`: what it writes (checked without building: the SDK dependency, the lock file,
//! the CRD's schema, the Dockerfile against `docs/deployment.md` and a dry run of its build
//! stage, the kustomization), and the newcomer's whole path outside the repository:
//! `cargo install` of `kopf`, `kopf new`, `cargo test`, `cargo build`, `kopf run --embedded`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use kopf_e2e::dockerfile::{Dockerfile, dry_run, stage_arg};
use kopf_e2e::{cargo_command, embedded_run_succeeds, run_kopf, target_dir, workspace_root};
use serde_json::Value;

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The ```dockerfile block of docs/deployment.md (the scaffold's, for `my-operator`).
fn documented_dockerfile() -> String {
    let doc = std::fs::read_to_string(workspace_root().join("docs/deployment.md")).unwrap();
    let start = doc
        .find("```dockerfile\n")
        .expect("a dockerfile block in docs/deployment.md")
        + 14;
    let len = doc[start..].find("```").unwrap();
    doc[start..start + len].to_owned()
}

#[test]
#[allow(clippy::too_many_lines)] // one scaffold, checked file by file
fn the_scaffold_is_complete_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("ops/my-operator");
    let sdk = workspace_root().join("plugin-sdk");
    let out = run_kopf([
        "new".as_ref(),
        "my-operator".as_ref(),
        "--path".as_ref(),
        crate_dir.as_os_str(),
        "--sdk-path".as_ref(),
        sdk.as_os_str(),
    ])
    .unwrap();
    ok(&out, "kopf new");
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "src/lib.rs",
        "Dockerfile",
        ".dockerignore",
        "Dockerfile.dockerignore",
        "README.md",
        "deploy/crd.yaml",
        "deploy/obj.yaml",
        "deploy/rbac.yaml",
        "deploy/deployment.yaml",
        "deploy/namespace.yaml",
        "deploy/kustomization.yaml",
    ] {
        assert!(crate_dir.join(file).exists(), "{file} not scaffolded");
    }
    // The SDK by a path relative to the crate, one that resolves.
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let line = manifest.lines().find(|l| l.starts_with("kopf = ")).unwrap();
    let relative = line.split('"').nth(1).unwrap();
    assert!(Path::new(relative).is_relative(), "{line}");
    assert_eq!(
        crate_dir.join(relative).canonicalize().unwrap(),
        sdk.canonicalize().unwrap()
    );
    // The lock file pins the versions the workspace is tested with.
    let lock = std::fs::read_to_string(crate_dir.join("Cargo.lock")).unwrap();
    let workspace_lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap();
    for package in ["abi_stable", "serde_json", "tokio"] {
        let version = |l: &str| {
            let at = l
                .find(&format!("name = \"{package}\"\n"))
                .unwrap_or_else(|| panic!("{package} locked"));
            l[at..].lines().nth(1).unwrap().to_owned()
        };
        assert_eq!(version(&lock), version(&workspace_lock), "{package}");
    }
    // The image build reaches the SDK: the build context is the deepest directory holding
    // the crate and the SDK's workspace, and the printed command names the crate's place in it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let crate_abs = crate_dir.canonicalize().unwrap();
    let workspace_abs = workspace_root().canonicalize().unwrap();
    let context: PathBuf = crate_abs
        .components()
        .zip(workspace_abs.components())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.as_os_str())
        .collect();
    let crate_in_context = crate_abs.strip_prefix(&context).unwrap().to_str().unwrap();
    let command = stdout
        .lines()
        .find(|l| l.contains("docker build -f"))
        .unwrap_or_else(|| panic!("no docker command in:\n{stdout}"));
    assert!(
        command.contains(&format!(
            "-f {crate_in_context}/Dockerfile --build-arg CRATE_DIR={crate_in_context} "
        )),
        "{command}"
    );
    assert_eq!(
        command.split_whitespace().last().map(PathBuf::from),
        Some(context)
    );

    // The CRD has a real schema: spec.field is a required string.
    let crd = &yaml_docs(&std::fs::read_to_string(crate_dir.join("deploy/crd.yaml")).unwrap())[0];
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert_eq!(
        schema["properties"]["spec"]["required"],
        serde_json::json!(["field"])
    );
    assert_eq!(
        schema["properties"]["spec"]["properties"]["field"]["type"],
        "string"
    );

    // The Dockerfile is docs/deployment.md's, exactly.
    let dockerfile = std::fs::read_to_string(crate_dir.join("Dockerfile")).unwrap();
    assert_eq!(dockerfile, documented_dockerfile());
    check_scaffold_dockerfile(&dockerfile);

    // The manifests render, in the operator's own namespace, without `latest`.
    if kopf_e2e::kubectl_available() {
        let out = Command::new("kubectl")
            .args(["kustomize"])
            .arg(crate_dir.join("deploy"))
            .output()
            .unwrap();
        ok(&out, "kubectl kustomize");
        let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout));
        for d in &docs {
            let kind = d["kind"].as_str().unwrap();
            if ["ServiceAccount", "Deployment"].contains(&kind) {
                assert_eq!(d["metadata"]["namespace"], "my-operator", "{kind}");
            }
            if kind == "ClusterRoleBinding" {
                assert_eq!(d["subjects"][0]["namespace"], "my-operator");
            }
        }
        let rendered = String::from_utf8_lossy(&out.stdout);
        assert!(!rendered.contains(":latest") && rendered.contains("image: my-operator:0.1.0"));
    }

    // Refuses to overwrite.
    let again = run_kopf([
        "new".as_ref(),
        "my-operator".as_ref(),
        "--path".as_ref(),
        crate_dir.as_os_str(),
    ])
    .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // By default: the registry version of the SDK.
    let registry = dir.path().join("from-registry");
    let out = run_kopf([
        "new".as_ref(),
        "from-registry".as_ref(),
        "--no-lockfile".as_ref(),
        "--path".as_ref(),
        registry.as_os_str(),
    ])
    .unwrap();
    ok(&out, "kopf new (registry)");
    let manifest = std::fs::read_to_string(registry.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!("kopf = \"{}\"", env!("CARGO_PKG_VERSION"))),
        "{manifest}"
    );
}

/// The scaffold's Dockerfile: `kopf` from the kopf image's only file, the plugin from a build
/// of this crate, a non-root runtime without RUN steps (no shell needed); the build stage's
/// script, dry-run, leaves the file the runtime stage copies.
fn check_scaffold_dockerfile(text: &str) {
    let df = Dockerfile::parse(text);
    let names: Vec<Option<&str>> = df.stages.iter().map(|s| s.name.as_deref()).collect();
    assert_eq!(names, [Some("kopf"), Some("build"), Some("runtime")]);
    assert_eq!(
        df.args["KOPF_IMAGE"],
        format!("kopf:{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(!text.contains(":latest"));
    let runtime = df.stage("runtime").unwrap();
    assert!(runtime.all("RUN").is_empty(), "the runtime stage needs a shell");
    assert_eq!(runtime.all("USER"), ["65532:65532"]);
    assert_eq!(
        runtime.all("COPY"),
        [
            "--from=kopf /usr/local/bin/kopf /usr/local/bin/kopf",
            "--from=build /out/libmy_operator.so /opt/kopf/libmy_operator.so"
        ]
    );
    // The kopf image's only file is where this copies it from.
    let repo = Dockerfile::read(&workspace_root().join("Dockerfile")).unwrap();
    assert_eq!(
        repo.stage("kopf").unwrap().all("COPY"),
        ["--from=build /out/bin/kopf /usr/local/bin/kopf"]
    );
    let build = df.stage("build").unwrap();
    assert_eq!(stage_arg(build, "CRATE_DIR"), Some("."));
    let root = tempfile::tempdir().unwrap();
    let run = dry_run(
        build.all("RUN")[0],
        root.path(),
        &[],
        &["libmy_operator.so".to_owned()],
    )
    .unwrap();
    assert_eq!(
        run.cargo_calls,
        [format!(
            "build --release --locked --target-dir {}/cache/target",
            root.path().display()
        )]
    );
    assert!(run.file("/out/libmy_operator.so").exists());
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// The newcomer's path, outside the repository, with the `kopf` that `cargo install` puts
/// on PATH: the "Done when" of issue 21.
#[test]
fn a_newcomer_gets_from_install_to_a_running_operator() {
    let started = Instant::now();
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("cargo-root");
    // `cargo install` from the checkout (debug: the same artefacts as the suites' `kopf`).
    let install = cargo_command()
        .args(["install", "--debug", "--locked", "--path"])
        .arg(workspace_root().join("kopf-cli"))
        .arg("--root")
        .arg(&root)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    ok(&install, "cargo install --path kopf-cli");
    let bin = root.join("bin");
    assert!(bin.join("kopf").exists());
    let path = path_with(&bin);
    let kopf = |args: &[&str], cwd: &Path| {
        Command::new("kopf")
            .args(args)
            .current_dir(cwd)
            .env("PATH", &path)
            .output()
            .unwrap()
    };

    let sdk = workspace_root().join("plugin-sdk");
    let out = kopf(
        &["new", "my-operator", "--sdk-path", sdk.to_str().unwrap()],
        home.path(),
    );
    ok(&out, "kopf new");
    let crate_dir = home.path().join("my-operator");
    // The scaffolds of all runs share one target directory: its dependencies build once.
    let target = target_dir().join("scaffold");
    let cargo = |args: &[&str]| {
        cargo_command()
            .args(args)
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let test = cargo(&["test", "--locked"]);
    ok(&test, "cargo test in the scaffold");
    let report = String::from_utf8_lossy(&test.stdout);
    assert!(
        report.contains("create_fn_greets_the_field ... ok") && report.contains("test result: ok. 2 passed"),
        "{report}"
    );
    ok(&cargo(&["build", "--locked"]), "cargo build in the scaffold");
    let plugin = target.join("debug/libmy_operator.so");
    assert!(plugin.exists());

    // What the scaffold declares, and its RBAC template matches what `kopf rbac` derives.
    let inspect = kopf(&["inspect", plugin.to_str().unwrap()], &crate_dir);
    ok(&inspect, "kopf inspect");
    let table = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        table.contains("create_fn") && table.contains("kopfexamples.v1.kopf.dev"),
        "{table}"
    );
    let rbac = kopf(
        &[
            "rbac",
            "-A",
            "--name",
            "my-operator",
            "-f",
            "deploy/crd.yaml",
            plugin.to_str().unwrap(),
        ],
        &crate_dir,
    );
    ok(&rbac, "kopf rbac");
    let template = std::fs::read_to_string(crate_dir.join("deploy/rbac.yaml")).unwrap();
    assert_eq!(
        yaml_docs(&template),
        yaml_docs(&String::from_utf8_lossy(&rbac.stdout))
    );

    // `kopf run --embedded`, as the README says: the handler succeeds on deploy/obj.yaml.
    embedded_run_succeeds(
        bin.join("kopf"),
        &[
            &crate_dir.join("deploy/crd.yaml"),
            &crate_dir.join("deploy/obj.yaml"),
        ],
        &plugin,
        &[("PATH", path.as_os_str())],
        "Creating with field=\"world\"",
        "create_fn",
    )
    .unwrap();
    eprintln!("the newcomer's path took {:?}", started.elapsed());
}
