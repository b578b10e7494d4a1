//! The operator under exactly the RBAC that `kopf rbac` generates, authenticated as the
//! ServiceAccount it binds: on the emulator (which enforces RBAC for ServiceAccount tokens
//! registered with `add_token`) and, with `KOPF_TEST_CLUSTER=apiserver`, on a real
//! kube-apiserver (RBAC authorizer; the token from `kubectl create token`).
//!
//! The lifecycle includes a refused patch: the delete handler is held at a gate while the
//! test changes the object, so kopf's finalizer removal (a JSON patch testing the
//! resourceVersion) is refused and the engine must re-read the object with GET. The
//! admission run manages webhook configurations (GET, then create or patch).

use kopf_e2e::cluster::kopfexamples;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kopf_e2e::cluster::TestCluster;
use kopf_e2e::{KopfProcess, plugin_path, run_kopf, wait_for, workspace_root};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);
const SERVICE_ACCOUNT: &str = "system:serviceaccount:default:kopf-operator";
const FINALIZER: &str = "kopf.zalando.org/KopfFinalizerMarker";

/// A cluster with the CRDs and the generated RBAC applied, and a kubeconfig holding only
/// the ServiceAccount's token.
struct Rbac {
    cluster: TestCluster,
    dir: tempfile::TempDir,
    /// The operator's kubeconfig: the ServiceAccount's token only.
    kubeconfig: PathBuf,
    /// The test's own (admin) kubeconfig, for kubectl.
    admin_kubeconfig: PathBuf,
    client: kube::Client,
}

impl Rbac {
    /// Starts the cluster, applies `manifests` (workspace-relative) and exactly what
    /// `kopf rbac RBAC_ARGS...` prints, and gets a token of the ServiceAccount.
    async fn start(manifests: &[&str], rbac_args: &[&str]) -> Self {
        Self::start_edited(manifests, rbac_args, |_| {}).await
    }

    /// As [`Self::start`], with the generated documents edited before they are applied
    /// (to take a verb away).
    async fn start_edited(manifests: &[&str], rbac_args: &[&str], edit: impl FnOnce(&mut [Value])) -> Self {
        let cluster = TestCluster::start().await.unwrap();
        for manifest in manifests {
            let text = std::fs::read_to_string(workspace_root().join(manifest)).unwrap();
            cluster.apply_yaml(&text).await.unwrap();
        }
        let generated = tokio::task::block_in_place(|| {
            run_kopf(std::iter::once("rbac").chain(rbac_args.iter().copied())).unwrap()
        });
        assert!(
            generated.status.success(),
            "kopf rbac failed: {}",
            String::from_utf8_lossy(&generated.stderr)
        );
        let generated = String::from_utf8(generated.stdout).unwrap();
        let mut docs: Vec<Value> = serde_yaml::Deserializer::from_str(&generated)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &Value| !v.is_null())
            .collect();
        edit(docs.as_mut_slice());
        let mut applied = vec![];
        for doc in docs {
            applied.extend(
                cluster
                    .apply_yaml(&serde_yaml::to_string(&doc).unwrap())
                    .await
                    .unwrap(),
            );
        }
        assert!(
            applied
                .iter()
                .any(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == "kopf-operator"),
            "{generated}"
        );
        let dir = tempfile::tempdir().unwrap();
        let admin_kubeconfig = dir.path().join("admin.kubeconfig");
        cluster.write_admin_kubeconfig(&admin_kubeconfig).unwrap();
        let token = if cluster.is_real() {
            // The API server's token issuer: a bound token of the ServiceAccount.
            let out = tokio::task::block_in_place(|| {
                Command::new("kubectl")
                    .args(["create", "token", "kopf-operator", "-n", "default"])
                    .env("KUBECONFIG", &admin_kubeconfig)
                    .output()
                    .unwrap()
            });
            assert!(
                out.status.success(),
                "kubectl create token: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        } else {
            // The emulator issues no tokens: one is registered for the ServiceAccount.
            cluster
                .expect_emulator("registering a ServiceAccount token")
                .add_token("sa-token-rbac", SERVICE_ACCOUNT);
            "sa-token-rbac".to_owned()
        };
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, cluster.kubeconfig_yaml_with_token(&token)).unwrap();
        let client = cluster.admin_client().await.unwrap();
        Self {
            cluster,
            dir,
            kubeconfig,
            admin_kubeconfig,
            client,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn_kopf(&self, args: &[&str], envs: &[(&str, String)]) -> KopfProcess {
        let mut envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        envs.push(("KUBECONFIG".into(), self.kubeconfig.display().to_string()));
        let mut kopf =
            KopfProcess::spawn_with_env(std::iter::once("run").chain(args.iter().copied()), envs).unwrap();
        tokio::task::block_in_place(|| kopf.wait_for_line("The operator is ready", DEADLINE))
            .unwrap_or_else(|e| panic!("{e}\nserver:\n{}", self.cluster.server_log_tail(30)));
        kopf
    }

    fn api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), "default", &kopfexamples())
    }

    fn get(&self, name: &str) -> Option<Value> {
        self.cluster
            .get_object("kopf.dev/v1", "kopfexamples", Some("default"), name)
    }

    /// Polls the object until `check` yields; fails with the object and the log.
    fn wait_obj<T>(
        &self,
        kopf: &KopfProcess,
        what: &str,
        mut check: impl FnMut(Option<&Value>) -> Option<T>,
    ) -> T {
        tokio::task::block_in_place(|| {
            wait_for(DEADLINE, what, || check(self.get("kex-rbac").as_ref())).unwrap_or_else(|e| {
                panic!(
                    "{e}\nobject: {:?}\nkopf:\n{}",
                    self.get("kex-rbac"),
                    kopf.lines().join("\n")
                )
            })
        })
    }

    fn kubectl(&self, args: &[&str], stdin: &str) -> std::process::Output {
        tokio::task::block_in_place(|| {
            let mut child = Command::new("kubectl")
                .args(args)
                .env("KUBECONFIG", &self.admin_kubeconfig)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        })
    }

    /// No request of the operator was forbidden: its log has no permission error and, on
    /// the emulator (which counts every request by status), no 403 was answered.
    fn assert_nothing_forbidden(&self, kopf: &KopfProcess) {
        let log = kopf.lines().join("\n");
        let lower = log.to_lowercase();
        assert!(
            !lower.contains("forbidden") && !lower.contains("permission"),
            "the operator was refused something:\n{log}"
        );
        if let Some(emu) = self.cluster.emulator() {
            let counters = emu.counters();
            assert_eq!(counters.status(403), 0, "{counters:?}\n{log}");
            assert!(
                counters.by_user.get("sa-token-rbac").copied().unwrap_or(0) > 0,
                "{counters:?}"
            );
        }
    }

    fn stop(&self, mut kopf: KopfProcess) -> Vec<String> {
        kopf.signal("TERM").unwrap();
        let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
        assert!(
            status.success(),
            "kopf exited with {status}:\n{}",
            kopf.lines().join("\n")
        );
        kopf.lines()
    }
}

fn plugin(package: &str) -> String {
    tokio::task::block_in_place(|| plugin_path(package))
        .unwrap()
        .display()
        .to_string()
}

fn crd() -> String {
    workspace_root().join("examples/crd.yaml").display().to_string()
}

/// Takes `get` away from the generated rule of `kopfexamples`.
fn without_get(docs: &mut [Value]) {
    let role = docs.iter_mut().find(|d| d["kind"] == "ClusterRole").unwrap();
    let rule = role["rules"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["resources"] == json!(["kopfexamples"]))
        .unwrap();
    let verbs = rule["verbs"].as_array_mut().unwrap();
    assert!(verbs.contains(&json!("get")), "the generator grants get: {rule}");
    verbs.retain(|v| v != "get");
}

/// The permission error of a refused re-read, as the operator logs it.
const REFUSED_GET: &str =
    r#"Permission denied: the operator may not get "kopfexamples" in API group "kopf.dev""#;

fn has_finalizer(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

fn last_handled_field(obj: &Value) -> Option<Value> {
    let text = obj
        .pointer("/metadata/annotations/kopf.zalando.org~1last-handled-configuration")?
        .as_str()?;
    let parsed: Value = serde_json::from_str(text).ok()?;
    parsed.pointer("/spec/field").cloned()
}

fn wait_file(path: &Path, kopf: &KopfProcess) {
    tokio::task::block_in_place(|| {
        wait_for(DEADLINE, &format!("{}", path.display()), || {
            path.exists().then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\nkopf:\n{}", kopf.lines().join("\n")))
    })
}

// Cluster-wide, with peering (as deploy/ runs it): create, update, and a deletion whose
// finalizer removal is refused because the object changed while the delete handler ran.
// The engine re-reads the object (GET) and removes the finalizer from the fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lifecycle_with_a_refused_patch_under_the_generated_rbac() {
    let plugin = plugin("fixture-lifecycle-basic");
    let rbac = Rbac::start(
        &[
            "examples/crd.yaml",
            "deploy/peering-crds.yaml",
            "deploy/peering-objects.yaml",
        ],
        &["-A", "-f", &crd(), &plugin],
    )
    .await;
    let gate = rbac.path("gate");
    std::fs::create_dir_all(&gate).unwrap();
    // The gate is open for the creation and the update.
    std::fs::write(gate.join("release"), b"").unwrap();
    let kopf = rbac.spawn_kopf(
        &["-A", "--verbose", &plugin],
        &[
            ("KOPF_LIFECYCLE_HOLD", gate.display().to_string()),
            (
                "KOPF_LIFECYCLE_RECORD",
                rbac.path("record.txt").display().to_string(),
            ),
        ],
    );

    // Creation.
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": "kex-rbac", "namespace": "default"}, "spec": {"field": "one"},
    }))
    .unwrap();
    rbac.api().create(&PostParams::default(), &obj).await.unwrap();
    let created = rbac.wait_obj(&kopf, "the creation handled", |o| {
        let o = o?;
        (has_finalizer(o)
            && last_handled_field(o) == Some(json!("one"))
            && !o["status"]["create_fn"].is_null())
        .then(|| o.clone())
    });
    assert_eq!(
        created["status"]["create_fn"],
        json!({"created": true}),
        "{created}"
    );

    // Update.
    rbac.api()
        .patch(
            "kex-rbac",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"field": "two"}})),
        )
        .await
        .unwrap();
    let updated = rbac.wait_obj(&kopf, "the update handled", |o| {
        let o = o?;
        (last_handled_field(o) == Some(json!("two"))).then(|| o.clone())
    });
    assert_eq!(
        updated["status"]["update_fn"],
        json!({"updated": true}),
        "{updated}"
    );

    // Deletion, with the delete handler held while the object changes under it.
    std::fs::remove_file(gate.join("release")).unwrap();
    let _ = std::fs::remove_file(gate.join("started"));
    rbac.api()
        .delete("kex-rbac", &DeleteParams::default())
        .await
        .unwrap();
    wait_file(&gate.join("started"), &kopf);
    rbac.api()
        .patch(
            "kex-rbac",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"changed-by": "the-test"}}})),
        )
        .await
        .unwrap();
    std::fs::write(gate.join("release"), b"").unwrap();
    rbac.wait_obj(&kopf, "the object released and gone", |o| {
        o.is_none().then_some(())
    });

    let log = kopf.lines().join("\n");
    assert!(
        log.contains("The object changed while patching; re-reading it."),
        "no patch was refused, so nothing was re-read:\n{log}"
    );
    let records = std::fs::read_to_string(rbac.path("record.txt")).unwrap();
    for id in ["create_fn", "update_fn", "delete_fn"] {
        assert!(
            records.lines().any(|l| l.starts_with(&format!("{id} "))),
            "{id}: {records}"
        );
    }
    rbac.assert_nothing_forbidden(&kopf);
    rbac.stop(kopf);
    rbac.cluster.shutdown().await;
}

// Example 17 with managed webhook configurations: kopf reads, creates and patches them
// (removing its webhooks on exit) with the generated role only; the API server calls the
// webhooks for the test's own kubectl requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_webhooks_under_the_generated_rbac() {
    let plugin = plugin("example-17-admission");
    let rbac = Rbac::start(
        &["examples/crd.yaml"],
        &[
            "-A",
            "--standalone",
            "--webhook-managed",
            "auto.kopf.dev",
            "-f",
            &crd(),
            &plugin,
        ],
    )
    .await;
    let kopf = rbac.spawn_kopf(
        &[
            "-A",
            "--standalone",
            "--webhook-server",
            "https://127.0.0.1:0",
            "--webhook-host",
            "localhost",
            "--webhook-managed",
            "auto.kopf.dev",
            &plugin,
        ],
        &[],
    );
    let example = |name: &str, field: &str| {
        json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"field": field},
        })
        .to_string()
    };
    let out = rbac.kubectl(&["apply", "-f", "-"], &example("bad", "wrong"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the invalid object was accepted");
    assert!(
        stderr.contains("spec.field must not be 'wrong'."),
        "{stderr}\nkopf:\n{}",
        kopf.lines().join("\n")
    );
    let out = rbac.kubectl(&["apply", "-f", "-"], &example("good", "ok"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let good = rbac.get("good").unwrap();
    assert_eq!(good["metadata"]["labels"]["defaulted-by"], "kopf", "{good}");

    rbac.assert_nothing_forbidden(&kopf);
    let lines = rbac.stop(kopf);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Removed the non-persistent webhooks")),
        "{}",
        lines.join("\n")
    );
    for plural in ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"] {
        let config = rbac
            .cluster
            .get_object("admissionregistration.k8s.io/v1", plural, None, "auto.kopf.dev")
            .unwrap();
        assert_eq!(config["webhooks"].as_array().map_or(0, Vec::len), 0, "{config}");
    }
    rbac.cluster.shutdown().await;
}

/// Creates `kex-rbac` and waits until its creation is handled.
async fn create_and_settle(rbac: &Rbac, kopf: &KopfProcess) {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": "kex-rbac", "namespace": "default"}, "spec": {"field": "one"},
    }))
    .unwrap();
    rbac.api().create(&PostParams::default(), &obj).await.unwrap();
    rbac.wait_obj(kopf, "the creation handled", |o| {
        let o = o?;
        (has_finalizer(o) && last_handled_field(o) == Some(json!("one"))).then_some(())
    });
}

// Without `get` (a hand-made role, or one generated before `get` was added), the re-read
// after a refused patch is forbidden: the log says so, naming the verb and the resource
// (it used to say "Patching failed"), and the operator keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reread_is_a_permission_error_naming_get() {
    let plugin = plugin("fixture-lifecycle-basic");
    let rbac = Rbac::start_edited(
        &["examples/crd.yaml"],
        &["-A", "--standalone", "-f", &crd(), &plugin],
        without_get,
    )
    .await;
    let gate = rbac.path("gate");
    std::fs::create_dir_all(&gate).unwrap();
    std::fs::write(gate.join("release"), b"").unwrap();
    let kopf = rbac.spawn_kopf(
        &["-A", "--standalone", &plugin],
        &[("KOPF_LIFECYCLE_HOLD", gate.display().to_string())],
    );
    create_and_settle(&rbac, &kopf).await;
    std::fs::remove_file(gate.join("release")).unwrap();
    let _ = std::fs::remove_file(gate.join("started"));
    rbac.api()
        .delete("kex-rbac", &DeleteParams::default())
        .await
        .unwrap();
    wait_file(&gate.join("started"), &kopf);
    rbac.api()
        .patch(
            "kex-rbac",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"changed-by": "the-test"}}})),
        )
        .await
        .unwrap();
    std::fs::write(gate.join("release"), b"").unwrap();
    let line = tokio::task::block_in_place(|| {
        wait_for(DEADLINE, "the permission error", || {
            kopf.lines().into_iter().find(|l| l.contains(REFUSED_GET))
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", kopf.lines().join("\n")));
    eprintln!("logged: {line}");
    assert!(
        line.contains("[default/kex-rbac]") && line.contains("ERROR"),
        "{line}"
    );
    // The object changed after the refused read, so its newer state (from the watch)
    // lets the deletion finish all the same.
    rbac.wait_obj(&kopf, "the object released and gone", |o| {
        o.is_none().then_some(())
    });
    rbac.stop(kopf);
    rbac.cluster.shutdown().await;
}

// A patch that fails without an answer leaves the object to be re-read before the retry.
// Without `get` that read was refused silently, every second, for ever; now each refusal is
// logged as a permission error and throttled with the error backoff, and once the role
// grants `get` the deletion completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_read_before_a_retry_is_logged_not_swallowed() {
    if kopf_e2e::cluster::emulator_only("a failed finalizer removal is an injected 500") {
        return;
    }
    let plugin = plugin("fixture-lifecycle-basic");
    let args = ["-A", "--standalone", "-f", &crd(), &plugin];
    let rbac = Rbac::start_edited(&["examples/crd.yaml"], &args, without_get).await;
    let kopf = rbac.spawn_kopf(&["-A", "--standalone", &plugin], &[]);
    create_and_settle(&rbac, &kopf).await;
    let matcher = kopf_testing::FaultMatch {
        verb: Some("patch".into()),
        resource: Some("kopfexamples".into()),
        name: Some("kex-rbac".into()),
        ..Default::default()
    };
    let emu = rbac.cluster.expect_emulator("injecting a failed patch");
    emu.faults()
        .fail_next(1, matcher, kopf_testing::FaultKind::Status(500));
    rbac.api()
        .delete("kex-rbac", &DeleteParams::default())
        .await
        .unwrap();
    let refusals = || {
        kopf.lines()
            .into_iter()
            .filter(|l| l.contains(REFUSED_GET))
            .count()
    };
    tokio::task::block_in_place(|| {
        wait_for(DEADLINE, "two logged refusals", || {
            (refusals() >= 2).then_some(())
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", kopf.lines().join("\n")));
    // The repeated re-read says the object is still stuck (issue 18 #10).
    assert!(
        kopf.lines()
            .iter()
            .any(|l| l.contains("Re-reading the object again after 2 failed requests in a row")),
        "{}",
        kopf.lines().join("\n")
    );
    let held = rbac.get("kex-rbac").expect("the finalizer holds the object");
    assert!(has_finalizer(&held), "{held}");
    assert!(kopf.signal("0").is_ok(), "the operator exited");
    // The generated role (with `get`) lets the deletion finish.
    let generated = run_kopf(std::iter::once("rbac").chain(args.iter().copied())).unwrap();
    rbac.cluster
        .apply_yaml(&String::from_utf8(generated.stdout).unwrap())
        .await
        .unwrap();
    rbac.wait_obj(&kopf, "the object released and gone", |o| {
        o.is_none().then_some(())
    });
    rbac.stop(kopf);
    rbac.cluster.shutdown().await;
}
