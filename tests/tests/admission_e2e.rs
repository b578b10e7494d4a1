//! Admission webhooks end to end: the real `kopf` binary serving the 17-admission example
//! over HTTPS and managing the webhook configurations, and the API server calling the
//! webhooks for `kubectl` requests: the emulator (the default), or with
//! `KOPF_TEST_CLUSTER=apiserver` a real kube-apiserver, which reaches kopf's server through
//! the configurations kopf writes (TLS verified with their `caBundle`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use kopf_e2e::cluster::TestCluster;
use kopf_e2e::{KopfProcess, plugin_path, wait_for, workspace_root};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);

struct Setup {
    // Dropped in this order: the operator before the cluster, the cluster before its runtime.
    kopf: KopfProcess,
    cluster: TestCluster,
    _runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    port: u16,
}

impl Setup {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cluster = runtime.block_on(TestCluster::start()).unwrap();
        let crd = std::fs::read_to_string(workspace_root().join("examples/crd.yaml")).unwrap();
        runtime.block_on(cluster.apply_yaml(&crd)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The operator's identity for kopf, the test's own (admin) for kubectl.
        let kubeconfig = dir.path().join("kubeconfig");
        cluster.write_kubeconfig(&kubeconfig).unwrap();
        cluster
            .write_admin_kubeconfig(dir.path().join("admin.kubeconfig"))
            .unwrap();
        let plugin = plugin_path("example-17-admission").unwrap();
        let cadump = dir.path().join("ca.pem");
        let mut kopf = KopfProcess::spawn_with_env(
            [
                "run".as_ref(),
                "-A".as_ref(),
                "--standalone".as_ref(),
                "--webhook-server".as_ref(),
                "https://127.0.0.1:0".as_ref(),
                "--webhook-host".as_ref(),
                "localhost".as_ref(),
                "--webhook-host".as_ref(),
                "webhooks.example.test".as_ref(),
                "--webhook-managed".as_ref(),
                "auto.kopf.dev".as_ref(),
                "--webhook-cadump".as_ref(),
                cadump.as_os_str(),
                plugin.as_os_str(),
            ],
            [("KUBECONFIG", kubeconfig.as_os_str())],
        )
        .unwrap();
        let line = kopf
            .wait_for_line("Serving admission webhooks at https://", DEADLINE)
            .unwrap();
        let port: u16 = line
            .split("https://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        kopf.wait_for_line("The operator is ready", DEADLINE).unwrap();
        Self {
            kopf,
            cluster,
            _runtime: runtime,
            dir,
            port,
        }
    }

    /// The operator's log and, on a real server, the tail of the server's log.
    fn logs(&self) -> String {
        format!(
            "kopf:\n{}\nserver:\n{}",
            self.kopf.lines().join("\n"),
            self.cluster.server_log_tail(40)
        )
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.dir.path().join("admin.kubeconfig"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn apply(&self, object: &Value, extra: &[&str]) -> Output {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra);
        self.kubectl(&args, Some(&object.to_string()))
    }

    fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.kubectl(&["get", kind, name, "-o", "json"], None);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// POSTs to the webhook server with curl, verifying the dumped CA and the host name.
    fn curl(&self, path: &str, body: &str) -> (u16, String) {
        let url = format!("https://webhooks.example.test:{}{path}", self.port);
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
            .args([
                "--resolve",
                &format!("webhooks.example.test:{}:127.0.0.1", self.port),
            ])
            .arg("--cacert")
            .arg(self.dir.path().join("ca.pem"))
            .args([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ])
            .arg(url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_owned())
    }
}

fn example(name: &str, spec: Value, labels: Value) -> Value {
    json!({
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfExample",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": spec,
    })
}

/// An AdmissionReview of the creation of `object` by "tester".
fn creation_review(uid: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "kopf.dev", "version": "v1", "kind": "KopfExample"},
            "resource": {"group": "kopf.dev", "version": "v1", "resource": "kopfexamples"},
            "operation": "CREATE",
            "userInfo": {"username": "tester"},
            "object": object,
        }
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
#[allow(clippy::too_many_lines)] // split under issue 19
fn webhooks_validate_mutate_and_survive_panics() {
    let setup = Setup::start();

    // The managed configurations: one webhook per handler, with the CA bundle and policies.
    let validating = wait_for(DEADLINE, "the validating configuration", || {
        setup.get("validatingwebhookconfiguration", "auto.kopf.dev")
    })
    .unwrap();
    let webhooks = validating["webhooks"].as_array().unwrap();
    let names: Vec<&str> = webhooks.iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "check-spec.auto.kopf.dev",
            "audit-dryrun.auto.kopf.dev",
            "strict-panics.auto.kopf.dev",
            "lenient-panics.auto.kopf.dev",
            "guarded.auto.kopf.dev"
        ]
    );
    let lenient = &webhooks[3];
    assert_eq!(lenient["failurePolicy"], "Ignore");
    assert_eq!(webhooks[0]["failurePolicy"], "Fail");
    assert_eq!(webhooks[1]["sideEffects"], "NoneOnDryRun");
    assert_eq!(
        lenient["objectSelector"],
        json!({"matchExpressions": [{"key": "panic", "operator": "In", "values": ["lenient"]}]})
    );
    assert_eq!(webhooks[0]["rules"][0]["resources"], json!(["kopfexamples"]));
    assert_eq!(webhooks[0]["rules"][0]["operations"], json!(["CREATE", "UPDATE"]));
    let url = webhooks[0]["clientConfig"]["url"].as_str().unwrap();
    assert_eq!(url, format!("https://localhost:{}/check_spec", setup.port));
    let mutating = setup
        .get("mutatingwebhookconfiguration", "auto.kopf.dev")
        .unwrap();
    assert_eq!(mutating["webhooks"][0]["name"], "defaults.auto.kopf.dev");
    // An invalid object is rejected with the handler's message.
    let out = setup.apply(&example("bad", json!({"field": "wrong"}), json!({})), &[]);
    assert!(
        !out.status.success(),
        "the invalid object was accepted\n{}",
        setup.logs()
    );
    let text = stderr(&out);
    assert!(text.contains("spec.field must not be 'wrong'."), "{text}");
    assert!(text.contains("check-spec.auto.kopf.dev"), "{text}");
    assert!(setup.get("kex", "bad").is_none());

    // A valid object gets the mutating handler's defaults stored.
    let out = setup.apply(&example("good", json!({"field": "ok"}), json!({})), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = setup.get("kex", "good").unwrap();
    assert_eq!(stored["spec"]["replicas"], 1, "{stored}");
    assert_eq!(stored["metadata"]["labels"]["defaulted-by"], "kopf", "{stored}");
    assert_eq!(stored["spec"]["field"], "ok");
    assert!(stored["spec"].get("tags").is_none(), "{stored}");

    // The mutating handler's body function (Kopf's `patch.fns`) appends to a list, which
    // a merge patch cannot: it goes into the same response, after the merge patch.
    let tagged = example("tagged", json!({"field": "ok", "tags": ["a"]}), json!({}));
    let out = setup.apply(&tagged, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = setup.get("kex", "tagged").unwrap();
    assert_eq!(
        stored["spec"]["tags"],
        json!(["a", "defaulted"]),
        "{stored}\n{}",
        setup.logs()
    );
    assert_eq!(stored["spec"]["replicas"], 1, "{stored}");
    // An update to an invalid spec is rejected as well (operations CREATE and UPDATE).
    let out = setup.apply(&example("good", json!({"field": "wrong"}), json!({})), &[]);
    assert!(!out.status.success(), "the invalid update was accepted");
    assert!(
        stderr(&out).contains("spec.field must not be 'wrong'."),
        "{}",
        stderr(&out)
    );
    assert_eq!(setup.get("kex", "good").unwrap()["spec"]["field"], "ok");

    // Dry-run requests reach the handlers with `dryrun` set (the mutation marks them).
    let out = setup.apply(
        &example("dry", json!({"field": "ok"}), json!({})),
        &["--dry-run=server", "-o", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dry["metadata"]["annotations"]["kopf.dev/dryrun"], "true", "{dry}");
    assert!(setup.get("kex", "dry").is_none(), "a dry run stored the object");
    // The side-effect handler is called on dry runs; its warning reaches kubectl (as a
    // `Warning` header, which only the real API server sends: the emulator drops warnings).
    let warnings = setup.cluster.is_real();
    assert!(
        !warnings || stderr(&out).contains("Warning: dry run of CREATE by "),
        "{}",
        stderr(&out)
    );
    assert!(stored["metadata"]["annotations"]["kopf.dev/dryrun"].is_null());

    // Warnings of allowed requests reach kubectl.
    let out = setup.apply(&example("unset", json!({}), json!({})), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !warnings || stderr(&out).contains("Warning: spec.field is not set."),
        "{}",
        stderr(&out)
    );

    // A panicking handler denies, also with ignore_failures (which, as in Kopf, is only the
    // configuration's failurePolicy: Ignore, asserted above); the server keeps serving.
    let out = setup.apply(
        &example("strict", json!({"field": "ok"}), json!({"panic": "yes"})),
        &[],
    );
    assert!(!out.status.success(), "the strict panic allowed the object");
    let text = stderr(&out);
    assert!(text.contains("strict-panics.auto.kopf.dev"), "{text}");
    assert!(text.contains("panics on purpose"), "{text}");
    let out = setup.apply(
        &example("lenient", json!({"field": "ok"}), json!({"panic": "lenient"})),
        &[],
    );
    assert!(!out.status.success(), "the lenient panic allowed the object");
    assert!(
        stderr(&out).contains("lenient-panics.auto.kopf.dev"),
        "{}",
        stderr(&out)
    );
    assert!(setup.get("kex", "lenient").is_none());
    let out = setup.apply(&example("bad2", json!({"field": "wrong"}), json!({})), &[]);
    assert!(
        stderr(&out).contains("spec.field must not be 'wrong'."),
        "{}",
        stderr(&out)
    );

    // Directly: warnings and the base64 JSONPatch in the AdmissionReview response.
    let review = creation_review("uid-1", example("direct", json!({}), json!({})));
    let (code, body) = setup.curl("/check_spec", &review.to_string());
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["uid"], "uid-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["warnings"], json!(["spec.field is not set."]));
    let (code, body) = setup.curl("/defaults", &review.to_string());
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert!(
        answer["response"]["patch"]
            .as_str()
            .is_some_and(|p| !p.is_empty())
    );

    // A mutating handler without operations mutates creations but, as in Kopf, is not
    // called for deletions.
    let stamped = example("stamped", json!({"field": "ok"}), json!({"stamp": "yes"}));
    let review_of = |operation: &str| {
        let (object, old) = match operation {
            "DELETE" => (Value::Null, stamped.clone()),
            _ => (stamped.clone(), Value::Null),
        };
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": format!("uid-{operation}"),
                "kind": {"group": "kopf.dev", "version": "v1", "kind": "KopfExample"},
                "resource": {"group": "kopf.dev", "version": "v1", "resource": "kopfexamples"},
                "operation": operation,
                "userInfo": {"username": "tester"},
                "object": object,
                "oldObject": old,
            }
        })
    };
    let (code, body) = setup.curl("/stamp", &review_of("CREATE").to_string());
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch", "{answer}");
    let (code, body) = setup.curl("/stamp", &review_of("DELETE").to_string());
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert_eq!(answer["response"].get("patch"), None, "{answer}");

    // Unknown paths are 404, malformed reviews 400, and the server still serves after them.
    let (code, _) = setup.curl("/no-such-handler", &review.to_string());
    assert_eq!(code, 404);
    let (code, _) = setup.curl("/check_spec", "this is not a review");
    assert_eq!(code, 400);
    let (code, _) = setup.curl(
        "/check_spec",
        r#"{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": 1}}"#,
    );
    assert_eq!(code, 400);
    let (code, _) = setup.curl("/check_spec", &review.to_string());
    assert_eq!(code, 200);

    // Plain HTTP gets no HTTP answer: the connection fails the TLS handshake.
    let mut plain = TcpStream::connect(("127.0.0.1", setup.port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    plain
        .write_all(b"POST /check_spec HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let (code, _) = setup.curl("/check_spec", &review.to_string());
    assert_eq!(code, 200);

    // On exit, the non-persistent webhooks (all of this example's) are removed from the
    // configurations, which stay.
    let mut setup = setup;
    setup.kopf.signal("TERM").unwrap();
    let status = setup.kopf.wait_exit(DEADLINE).unwrap();
    assert!(
        status.success(),
        "kopf exited with {status}:\n{}",
        setup.kopf.lines().join("\n")
    );
    for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
        let config = setup.get(kind, "auto.kopf.dev").unwrap();
        let webhooks = config["webhooks"].as_array().map_or(0, Vec::len);
        assert_eq!(webhooks, 0, "{kind}: {config}");
    }
    // With no webhooks left, the API server admits what the handlers would have denied.
    let out = setup.apply(&example("bad3", json!({"field": "wrong"}), json!({})), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

// Issue 18 #1, the admission side: a `when=` callback that panics is no "no match" (the
// webhook would then admit unvalidated), but a failure that denies with 500, also under
// `ignore_failures` (only the configuration's failure policy); a callback that decides
// "no" admits.
#[test]
fn undecidable_filters_deny_admission_requests() {
    let setup = Setup::start();
    wait_for(DEADLINE, "the validating configuration", || {
        setup.get("validatingwebhookconfiguration", "auto.kopf.dev")
    })
    .unwrap();
    let out = setup.apply(
        &example(
            "decided",
            json!({"field": "ok", "filter": "decidable"}),
            json!({}),
        ),
        &[],
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), setup.logs());

    let out = setup.apply(
        &example(
            "undecided",
            json!({"field": "ok", "filter": "undecidable"}),
            json!({}),
        ),
        &[],
    );
    assert!(!out.status.success(), "admitted on a guess\n{}", setup.logs());
    let text = stderr(&out);
    assert!(text.contains("guarded.auto.kopf.dev"), "{text}");
    assert!(text.contains("the filters of handler"), "{text}");
    assert!(text.contains("cannot decide"), "{text}");
    assert!(setup.get("kex", "undecided").is_none());

    // The same answer straight from the server: denied with code 500.
    let object = example("direct", json!({"filter": "undecidable"}), json!({}));
    let review = creation_review("uid-undecided", object);
    let (code, body) = setup.curl("/guarded", &review.to_string());
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert_eq!(answer["response"]["status"]["code"], 500, "{answer}");
    assert!(
        setup
            .kopf
            .lines()
            .iter()
            .any(|l| l.contains("the filters of handler \"guarded\" failed")),
        "{}",
        setup.logs()
    );
}

#[test]
fn webhook_handlers_require_a_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime.block_on(TestCluster::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    cluster.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
    let plugin = plugin_path("example-17-admission").unwrap();
    let mut kopf = KopfProcess::spawn_with_env(
        [
            "run".as_ref(),
            "-A".as_ref(),
            "--standalone".as_ref(),
            plugin.as_os_str(),
        ],
        [("KUBECONFIG", dir.path().join("kubeconfig").into_os_string())],
    )
    .unwrap();
    let status = kopf.wait_exit(DEADLINE).unwrap();
    assert!(!status.success());
    let log = kopf.lines().join("\n");
    assert!(log.contains("--webhook-server"), "{log}");
    drop(cluster);
}
