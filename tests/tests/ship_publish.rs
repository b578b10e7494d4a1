//! The library crates are ready for crates.io: `cargo publish --dry-run` packages the
//! interdependent workspace crates together (cargo 1.90+), each with its LICENSE, README and
//! metadata, and only those five. Needs the crates.io index (reachable in CI); `.ci/run`
//! also runs the verifying dry run, which compiles each packaged crate.

use kopf_e2e::{cargo_command, workspace_root};

const CRATES: [&str; 5] = ["kopf-abi", "kopf-macros", "kopf", "kopf-testing", "kopf-cli"];

#[test]
fn the_library_crates_pass_a_publish_dry_run() {
    let out = cargo_command()
        .args([
            "publish",
            "--dry-run",
            "--workspace",
            "--no-verify",
            "--allow-dirty",
            "--locked",
        ])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", kopf_e2e::target_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo publish --dry-run failed:\n{stderr}");
    let uploaded: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Uploading "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut sorted = uploaded.clone();
    sorted.sort_unstable();
    let mut expected = CRATES.to_vec();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "{stderr}");
    // No placeholder URLs anywhere in the metadata.
    assert!(!stderr.contains("example.invalid"));
}

#[test]
fn each_library_crate_ships_its_license_readme_and_metadata() {
    for name in CRATES {
        let out = cargo_command()
            .args(["package", "--list", "--allow-dirty", "-p", name])
            .current_dir(workspace_root())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for file in ["LICENSE", "README.md", "Cargo.toml"] {
            assert!(
                stdout.lines().any(|l| l == file),
                "{name} ships no {file}:\n{stdout}"
            );
        }
    }
    let metadata = cargo_command()
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(metadata.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    for package in doc["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        if !CRATES.contains(&name) {
            continue;
        }
        for field in ["description", "license", "readme", "documentation"] {
            assert!(package[field].is_string(), "{name} has no {field}");
        }
        assert!(
            package["repository"].is_null(),
            "{name}: a repository URL appeared; is it real?"
        );
        assert!(
            !package["keywords"].as_array().unwrap().is_empty(),
            "{name}: keywords"
        );
        assert!(
            !package["categories"].as_array().unwrap().is_empty(),
            "{name}: categories"
        );
    }
    // The ABI crate's major version is the ABI revision: it never follows the others.
    let abi = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "kopf-abi")
        .unwrap();
    assert_eq!(
        abi["version"].as_str().unwrap().split('.').next(),
        Some(kopf_abi::ABI_REVISION.to_string().as_str())
    );
}
