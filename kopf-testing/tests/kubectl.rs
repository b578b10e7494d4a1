//! The emulator driven by the real `kubectl` binary (skipped with a message if it is absent).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kopf_testing::{Emulator, EmulatorHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

struct Kubectl {
    emu: EmulatorHandle,
    dir: tempfile::TempDir,
}

impl Kubectl {
    async fn start() -> Option<Self> {
        if std::process::Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output()
            .is_err()
        {
            eprintln!("kubectl not found: skipping");
            return None;
        }
        let emu = Emulator::builder().start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        emu.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
        Some(Self { emu, dir })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .kill_on_drop(true);
        c
    }

    /// Run to completion (with a deadline); panic with the output unless it succeeds.
    async fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args).await;
        assert_eq!(code, 0, "kubectl {args:?} failed: {err}\n{out}");
        out
    }

    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = tokio::time::timeout(Duration::from_secs(60), self.cmd(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish"))
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn data(name: &str) -> String {
    Path::new(DATA).join(name).display().to_string()
}

/// Read lines from a spawned process until one satisfies `pred` (deadline 20 s).
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap()
            .unwrap_or_else(|| panic!("stream ended before {what}"));
        if pred(&line) {
            return line;
        }
    }
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // split under issue 19
async fn kubectl_apply_get_patch_replace_label_annotate_delete() {
    let Some(k) = Kubectl::start().await else { return };
    // With validation on (the default): server-side field validation via OpenAPI v3.
    k.ok(&["apply", "-f", &data("crd.yaml")]).await;
    k.ok(&[
        "wait",
        "--for=condition=established",
        "--timeout=20s",
        "crd/kopfexamples.kopf.dev",
    ])
    .await;
    let out = k.ok(&["apply", "-f", &data("obj.yaml")]).await;
    assert!(
        out.contains("kopfexample.kopf.dev/kopf-example-1 created"),
        "{out}"
    );
    let out = k.ok(&["apply", "-f", &data("obj.yaml")]).await;
    assert!(out.contains("unchanged"), "{out}");
    let out = k
        .ok(&[
            "create",
            "-f",
            &data("obj.yaml"),
            "--dry-run=client",
            "-o",
            "name",
        ])
        .await;
    assert!(out.contains("kopf-example-1"));

    // Table output with the CRD's printer columns; short names work.
    let out = k.ok(&["get", "kex"]).await;
    assert!(
        out.contains("NAME") && out.contains("DURATION") && out.contains("kopf-example-1"),
        "{out}"
    );
    let out = k
        .ok(&["get", "kopfexamples", "-l", "somelabel=somevalue", "-o", "name"])
        .await;
    assert_eq!(out.trim(), "kopfexample.kopf.dev/kopf-example-1");
    let out = k
        .ok(&["get", "kex", "-l", "somelabel!=somevalue", "-o", "name"])
        .await;
    assert_eq!(out.trim(), "");

    k.ok(&[
        "patch",
        "kex",
        "kopf-example-1",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"field":"merged"}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "kex",
        "kopf-example-1",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/spec/extra","value":1}]"#,
    ])
    .await;
    let (code, _, err) = k
        .run(&[
            "patch",
            "kex",
            "kopf-example-1",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/spec/field","value":"no"}]"#,
        ])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("did not match"), "{err}");
    k.ok(&["label", "kex", "kopf-example-1", "tier=gold"]).await;
    k.ok(&["annotate", "kex", "kopf-example-1", "note=hello"]).await;
    let obj: Value =
        serde_json::from_str(&k.ok(&["get", "kex", "kopf-example-1", "-o", "json"]).await).unwrap();
    assert_eq!(obj["spec"]["field"], "merged");
    assert_eq!(obj["spec"]["extra"], 1);
    assert_eq!(obj["metadata"]["labels"]["tier"], "gold");
    assert_eq!(obj["metadata"]["annotations"]["note"], "hello");
    assert_eq!(obj["metadata"]["generation"], 3);

    // Replace from a file (with the current resourceVersion).
    let mut repl = obj.clone();
    repl["spec"]["field"] = json!("replaced");
    let f = k.file("repl.json", &repl.to_string());
    k.ok(&["replace", "-f", f.to_str().unwrap()]).await;
    let field = k
        .ok(&["get", "kex", "kopf-example-1", "-o", "jsonpath={.spec.field}"])
        .await;
    assert_eq!(field, "replaced");
    // The same (now stale) file again: a conflict.
    let (code, _, err) = k.run(&["replace", "-f", f.to_str().unwrap()]).await;
    assert_ne!(code, 0);
    assert!(err.contains("the object has been modified"), "{err}");

    // Built-ins: apply a deployment twice (strategic merge of a change), scale, configmap from a file.
    let dep = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: nginx}]\n";
    let f = k.file("dep.yaml", dep);
    k.ok(&["apply", "-f", f.to_str().unwrap()]).await;
    let f = k.file("dep.yaml", &dep.replace("image: nginx", "image: nginx:2"));
    let out = k.ok(&["apply", "-f", f.to_str().unwrap()]).await;
    assert!(out.contains("configured"), "{out}");
    k.ok(&["scale", "deployment/web", "--replicas=3"]).await;
    let out = k
        .ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(out, "3 nginx:2");

    // Delete with a finalizer: `wait --for=delete` finishes once the finalizer is removed.
    k.ok(&[
        "patch",
        "kex",
        "kopf-example-1",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":["kopf.dev/test"]}}"#,
    ])
    .await;
    k.ok(&["delete", "kex", "kopf-example-1", "--wait=false"]).await;
    let ts = k
        .ok(&[
            "get",
            "kex",
            "kopf-example-1",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])
        .await;
    assert!(!ts.is_empty());
    let mut waiter = k.cmd(&["wait", "--for=delete", "--timeout=30s", "kex/kopf-example-1"]);
    let waiter = waiter
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    k.ok(&[
        "patch",
        "kex",
        "kopf-example-1",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await;
    let out = tokio::time::timeout(Duration::from_secs(40), waiter.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "wait --for=delete failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, err) = k.run(&["get", "kex", "kopf-example-1"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
    let counters = k.emu.counters();
    assert!(
        counters.by_user_agent.keys().any(|ua| ua.starts_with("kubectl")),
        "{counters:?}"
    );
    assert!(counters.get("patch", "kopfexamples") >= 6, "{counters:?}");
    k.emu.shutdown().await;
}

#[tokio::test]
async fn kubectl_get_watch_sees_changes() {
    let Some(k) = Kubectl::start().await else { return };
    k.ok(&["apply", "-f", &data("crd.yaml")]).await;
    k.ok(&["apply", "-f", &data("obj.yaml")]).await;
    let mut child = k
        .cmd(&["get", "kex", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    read_until(&mut lines, "the initial ADDED row", |l| {
        l.contains("ADDED") && l.contains("kopf-example-1")
    })
    .await;
    k.emu
        .apply_yaml(
            "apiVersion: kopf.dev/v1\nkind: KopfExample\nmetadata: {name: second}\nspec: {duration: 5m}\n",
        )
        .await
        .unwrap();
    let line = read_until(&mut lines, "the second object", |l| l.contains("second")).await;
    assert!(line.contains("ADDED") && line.contains("5m"), "{line}");
    k.ok(&["label", "kex", "second", "x=y"]).await;
    read_until(&mut lines, "the MODIFIED row", |l| {
        l.contains("MODIFIED") && l.contains("second")
    })
    .await;
    k.ok(&["delete", "kex", "second"]).await;
    read_until(&mut lines, "the DELETED row", |l| {
        l.contains("DELETED") && l.contains("second")
    })
    .await;
    child.kill().await.unwrap();
    k.emu.shutdown().await;
}

#[tokio::test]
async fn kubectl_raw_watch_gets_410_after_the_history_window() {
    let Some(k) = Kubectl::start().await else { return };
    k.ok(&["apply", "-f", &data("crd.yaml")]).await;
    k.ok(&["apply", "-f", &data("obj.yaml")]).await;
    let rv = k
        .ok(&[
            "get",
            "kex",
            "kopf-example-1",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .await;
    k.ok(&["label", "kex", "kopf-example-1", "a=b"]).await;
    // Within the history: the watch from rv replays the label change.
    let path = format!(
        "/apis/kopf.dev/v1/namespaces/default/kopfexamples?watch=1&resourceVersion={rv}&timeoutSeconds=1"
    );
    let out = k.ok(&["get", "--raw", &path]).await;
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "MODIFIED");
    assert_eq!(first["object"]["metadata"]["labels"]["a"], "b");
    // After the history is gone: a 410 Expired ERROR event.
    k.emu.faults().expire_history();
    let out = k.ok(&["get", "--raw", &path]).await;
    let ev: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    k.emu.shutdown().await;
}

#[tokio::test]
async fn kubectl_typed_generators_send_protobuf() {
    let Some(k) = Kubectl::start().await else { return };
    k.ok(&["create", "namespace", "proto"]).await;
    k.ok(&["create", "configmap", "cm", "-n", "proto", "--from-literal=a=b"])
        .await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "-n",
        "proto",
        "--from-literal=p=q",
    ])
    .await;
    let cm = k.emu.get_object("v1", "configmaps", Some("proto"), "cm").unwrap();
    assert_eq!(cm["data"], json!({"a": "b"}));
    let sec = k.emu.get_object("v1", "secrets", Some("proto"), "sec").unwrap();
    assert_eq!(sec["data"], json!({"p": "cQ=="}));
    // Kinds the emulator cannot decode are a clear 415, not garbage.
    let (code, _, err) = k
        .run(&["create", "deployment", "d", "--image=nginx", "-n", "proto"])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("protobuf"), "{err}");
    k.emu.shutdown().await;
}
