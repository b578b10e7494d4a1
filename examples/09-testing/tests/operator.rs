//! The operator's own end-to-end test with the test kit of `kopf-testing`: `KopfRunner` runs
//! the real `kopf` binary on this crate's plugin against the API emulator, and `eventually`
//! waits for what the handlers do.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kopf_testing::eventually;
use kopf_testing::runner::{KopfRunner, build_cdylib};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);

/// The `kopf` binary: `$KOPF_BIN` if set; else, inside this repository, the workspace's,
/// built into this test's target directory (outside it, the kit's default finds `kopf` on
/// `PATH` and no `.kopf_bin(..)` is needed).
fn kopf_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os(kopf_testing::runner::KOPF_BIN) {
        return bin.into();
    }
    let plugin = build_cdylib(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_NAME")).expect("the plugin builds");
    let target = plugin
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Without this test's own CARGO_MANIFEST_DIR: ring's build script reruns when it
    // changes, which would rebuild the dependency tree for every test package.
    let status = Command::new(cargo)
        .args(["build", "-p", "kopf-cli", "--bin", "kopf"])
        .env_remove("CARGO_MANIFEST_DIR")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building kopf failed");
    target.join("debug/kopf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_handles_the_whole_lifecycle() {
    let plugin = build_cdylib(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_NAME")).unwrap();
    let mut runner = KopfRunner::builder(plugin)
        .kopf_bin(kopf_bin())
        .apply_yaml(include_str!("../../crd.yaml"))
        .start()
        .await
        .unwrap();
    runner
        .wait_for_line("The operator is ready", DEADLINE)
        .await
        .unwrap();
    let emu = runner.emulator().expect("started on the emulator").clone();
    let get = || emu.get_object("kopf.dev/v1", "kopfexamples", Some("default"), "kex-1");

    emu.create_object(json!({
        "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": "kex-1", "namespace": "default"},
        "spec": {"field": "one"},
    }))
    .await
    .unwrap();

    // The create handler's result lands in the status; the finalizer guards deletion.
    // Waiting for the diff-base too (the creation is fully processed) makes the replace
    // below start from the object as the operator left it.
    let obj = eventually(DEADLINE, "status.create_fn and the diff-base", || {
        get().filter(|o| {
            o.pointer("/status/create_fn").is_some()
                && o.pointer("/metadata/annotations/kopf.zalando.org~1last-handled-configuration")
                    .is_some()
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", runner.log()));
    assert_eq!(
        obj["status"]["create_fn"]["message"],
        json!("created with \"one\"")
    );
    let finalizers = obj
        .pointer("/metadata/finalizers")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(finalizers, json!(["kopf.zalando.org/KopfFinalizerMarker"]));

    // A change of spec.field reaches the field handler.
    let mut changed = get().unwrap();
    changed["spec"]["field"] = json!("two");
    emu.apply_object(changed).await.unwrap();
    eventually(DEADLINE, "status.field_fn/spec.field", || {
        get().filter(|o| o.pointer("/status/field_fn~1spec.field/new") == Some(&json!("two")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", runner.log()));

    // Deletion waits for the delete handler, then the finalizer goes and so does the object.
    emu.delete_object("kopf.dev/v1", "kopfexamples", Some("default"), "kex-1")
        .await
        .unwrap();
    eventually(DEADLINE, "the object to be gone", || {
        get().is_none().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", runner.log()));
    runner
        .wait_for_line("Deletion is processed", DEADLINE)
        .await
        .unwrap();

    // A graceful stop: SIGTERM, exit code 0.
    let stopped = runner.stop(DEADLINE).await.unwrap();
    assert!(stopped.status.success(), "{}\n{}", stopped.status, stopped.log());
}
