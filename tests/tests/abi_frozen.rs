//! ABI revision 1 survives releases: a plugin built against a frozen copy of kopf-abi 1.0.0
//! (`tests/abi1/`, its own workspace and lock file) loads into today's `kopf` and its
//! handler runs on an object.

use kopf_e2e::{cargo_command, embedded_run_succeeds, kopf_bin, run_kopf, target_dir, workspace_root};
use std::path::PathBuf;

/// Builds the frozen plugin with its own lock file, into the shared target directory (the
/// dependencies it has in common with the workspace are compiled once).
fn frozen_plugin() -> PathBuf {
    let out = cargo_command()
        .args(["build", "--locked", "-p", "kopf-abi1-plugin"])
        .current_dir(workspace_root().join("tests/abi1"))
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "building the frozen ABI-1 plugin failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = target_dir().join("debug").join(format!(
        "{}kopf_abi1_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

#[test]
fn the_frozen_abi1_plugin_loads_and_its_handler_runs() {
    let plugin = frozen_plugin();

    let inspect = run_kopf(["inspect", "--json", plugin.to_str().unwrap()]).unwrap();
    assert!(
        inspect.status.success(),
        "kopf inspect refused the ABI-1 plugin:\n{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let listing = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        listing.contains("create_fn") && listing.contains("kopfexamples"),
        "{listing}"
    );

    // The plugin logs through the host and sees unknown host methods refused politely.
    let examples = workspace_root().join("examples");
    embedded_run_succeeds(
        kopf_bin().unwrap(),
        &[&examples.join("crd.yaml"), &examples.join("obj.yaml")],
        &plugin,
        &[],
        "ABI-1 create_fn: unknown host method unsupported=true",
        "create_fn",
    )
    .unwrap();
}
