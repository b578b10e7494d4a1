//! Typed resources end to end: a plugin whose handler is declared with a Rust type
//! deriving kube's `CustomResource` (`#[kopf::on::create(Greeting)]`, fixture
//! `typed-crd`). `kopf crd` prints the type's CRD, `kopf inspect` shows the selector taken
//! from the type, and the real `kopf` handles an object of it (read with `ctx.body_as`)
//! on a cluster where the printed CRD is applied.

use std::time::Duration;

use kopf_e2e::cluster::TestCluster;
use kopf_e2e::{KopfProcess, plugin_path, run_kopf, wait_for};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);

/// `kopf crd` on the typed fixture: its YAML text, which must succeed.
fn printed_crd() -> String {
    let plugin = plugin_path("fixture-typed-crd").unwrap();
    let out = run_kopf(["crd".as_ref(), plugin.as_os_str()]).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kopf_crd_prints_the_crd_of_the_type_and_inspect_its_selector() {
    let text = printed_crd();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect();
    assert_eq!(docs.len(), 1, "{text}");
    let crd = &docs[0];
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "greetings.typed.kopf.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "Greeting");
    assert!(
        crd["spec"]["versions"][0]["subresources"]["status"].is_object(),
        "{text}"
    );
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert_eq!(
        schema["properties"]["spec"]["properties"]["times"]["type"], "integer",
        "{schema}"
    );

    let plugin = plugin_path("fixture-typed-crd").unwrap();
    let out = run_kopf(["inspect".as_ref(), "--json".as_ref(), plugin.as_os_str()]).unwrap();
    assert_eq!(out.status.code(), Some(0));
    let description: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = description.to_string();
    assert!(
        text.contains(r#""group":"typed.kopf.dev""#)
            && text.contains(r#""version":"v1""#)
            && text.contains(r#""plural":"greetings""#),
        "{text}"
    );

    // A plugin without typed handlers has no CRD: a clear error, exit 1.
    let untyped = plugin_path("fixture-raw-plugin").unwrap();
    let out = run_kopf(["crd".as_ref(), untyped.as_os_str()]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("kopf: error: ") && stderr.contains("no CRD to print"),
        "{stderr}"
    );
}

#[test]
fn a_typed_handler_reads_its_object_as_the_type() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime.block_on(TestCluster::start()).unwrap();
    runtime.block_on(cluster.apply_yaml(&printed_crd())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).unwrap();

    let plugin = plugin_path("fixture-typed-crd").unwrap();
    let mut kopf = KopfProcess::spawn_with_env(
        [
            "run".as_ref(),
            "-A".as_ref(),
            "--standalone".as_ref(),
            plugin.as_os_str(),
        ],
        [("KUBECONFIG", kubeconfig.as_os_str())],
    )
    .unwrap();
    kopf.wait_for_line("The operator is ready", DEADLINE).unwrap();
    let greeting = json!({
        "apiVersion": "typed.kopf.dev/v1",
        "kind": "Greeting",
        "metadata": {"name": "g1", "namespace": "default"},
        "spec": {"name": "world", "times": 2},
    });
    runtime.block_on(cluster.create_object(greeting)).unwrap();
    let status = wait_for(DEADLINE, "the typed handler's result", || {
        let object = cluster.get_object("typed.kopf.dev/v1", "greetings", Some("default"), "g1")?;
        object.pointer("/status/greet").cloned()
    })
    .unwrap_or_else(|e| panic!("{e}:\n{}", kopf.lines().join("\n")));
    assert_eq!(
        status,
        json!({"text": "hello, world; hello, world", "kind": "g1"})
    );
    kopf.stop_gracefully(DEADLINE).unwrap();
}
