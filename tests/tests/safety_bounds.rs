//! Bounds of issue 18 outside the handler pipeline: the real `kopf` binary against the
//! emulator with fault injection (relists after 410 Gone, the webhook server under slow
//! and flooding clients, managed webhook configurations shared by replicas).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kopf_e2e::cluster::TestCluster;
use kopf_e2e::{KopfProcess, free_port, http_get, plugin_path, wait_for, workspace_root};
use kopf_testing::{FaultKind, FaultMatch, RequestRecord};
use serde_json::{Value, json};

/// Generous: a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// A cluster with the example CRD, and a kubeconfig for kopf.
struct Cluster {
    cluster: TestCluster,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let cluster = TestCluster::start().await.unwrap();
        let crd = std::fs::read_to_string(workspace_root().join("examples/crd.yaml")).unwrap();
        cluster.apply_yaml(&crd).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        cluster.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
        Self { cluster, dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// `kopf run ARGS... PLUGIN`, waited for until ready.
    fn kopf(&self, args: &[&str], plugin: &str, envs: &[(&str, String)]) -> KopfProcess {
        let plugin = plugin_path(plugin).unwrap();
        let mut all: Vec<String> = vec!["run".into(), "-v".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.push(plugin.display().to_string());
        let mut envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        envs.push(("KUBECONFIG".into(), self.kubeconfig().display().to_string()));
        let mut kopf = KopfProcess::spawn_with_env(all, envs).unwrap();
        tokio::task::block_in_place(|| kopf.wait_for_line("The operator is ready", DEADLINE)).unwrap();
        kopf
    }

    fn example(&self, name: &str) -> Option<Value> {
        self.cluster
            .get_object("kopf.dev/v1", "kopfexamples", Some("default"), name)
    }
}

fn listings(records: &[RequestRecord]) -> Vec<Instant> {
    let mut at: Vec<Instant> = records
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "kopfexamples")
        .map(|r| r.arrived)
        .collect();
    at.sort();
    at
}

/// A server that answers every watch with 410 Gone gets re-lists at a growing distance
/// (client-go's 800 ms doubling to 30 s), not one listing per round trip; once the
/// watches work again, the operator handles objects as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_after_410_gone_back_off() {
    if kopf_e2e::cluster::emulator_only("every watch answered 410 by fault injection") {
        return;
    }
    let cluster = Cluster::start().await;
    let kopf = cluster.kopf(&["-A", "--standalone"], "example-01-minimal", &[]);
    let emulator = cluster.cluster.expect_emulator("fault injection");
    let faults = emulator.faults();
    faults.record_requests(true);
    faults.fail_ratio(
        1.0,
        FaultMatch::verb_resource("watch", "kopfexamples"),
        FaultKind::Status(410),
    );
    faults.close_watches();
    let started = Instant::now();
    let lists = tokio::task::block_in_place(|| {
        wait_for(DEADLINE, "four re-lists", || {
            Some(listings(&faults.requests())).filter(|l| l.len() >= 4)
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", kopf.lines().join("\n")));
    let elapsed = started.elapsed();
    let gaps: Vec<Duration> = lists.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(750)),
        "re-lists without a pause: {gaps:?}"
    );
    assert!(
        gaps[1] >= gaps[0].mul_f64(1.4) && gaps[2] >= gaps[1].mul_f64(1.4),
        "the pauses between re-lists do not grow: {gaps:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(2),
        "four re-lists within {elapsed:?}"
    );

    // The watches work again: the operator is not stuck in its backoff for good.
    faults.clear();
    faults.close_watches();
    cluster
        .cluster
        .create_object(json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": "after-410s", "namespace": "default"},
            "spec": {"field": "x"},
        }))
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        wait_for(DEADLINE, "the object after the 410s to be handled", || {
            cluster
                .example("after-410s")?
                .pointer("/status/create_fn")
                .map(|_| ())
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", kopf.lines().join("\n")));
}

/// An indexed resource that never finishes its first listing (every list of pods fails):
/// other handlers wait for the indices, and past `KOPF_INDEXING_TIMEOUT` the liveness
/// probe fails with a reason naming the resource, so Kubernetes restarts the operator
/// instead of it idling for ever; once the listing works, the probe passes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indices_that_never_complete_fail_the_liveness_probe() {
    if kopf_e2e::cluster::emulator_only("every pod listing failed by fault injection") {
        return;
    }
    let cluster = Cluster::start().await;
    let emulator = cluster.cluster.expect_emulator("fault injection");
    let faults = emulator.faults();
    faults.fail_ratio(
        1.0,
        FaultMatch::verb_resource("list", "pods"),
        FaultKind::Status(500),
    );
    let port = free_port().unwrap();
    let liveness = format!("http://127.0.0.1:{port}/healthz");
    let kopf = cluster.kopf(
        &["-A", "--standalone", "--liveness", &liveness],
        "example-16-indexing",
        &[("KOPF_INDEXING_TIMEOUT", "2".into())],
    );
    let probe = || http_get(port, "/healthz", Duration::from_secs(10)).ok();
    let body = tokio::task::block_in_place(|| {
        wait_for(DEADLINE, "the liveness probe to fail", || {
            probe().and_then(|(status, body)| (status == 500).then_some(body))
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", kopf.lines().join("\n")));
    let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let reason = answer["kopf.indexing"]["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("not fully listed") && reason.contains("pods"),
        "{answer}"
    );
    // The plugin's pool for sync handlers is visible in the metrics (issue 18 #9).
    let (_, metrics) = http_get(port, "/metrics", Duration::from_secs(10)).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kopf_plugin_pool_threads{") && l.contains(r#"state="max"} 512"#)),
        "{metrics}"
    );

    faults.clear();
    tokio::task::block_in_place(|| {
        wait_for(DEADLINE, "the liveness probe to pass again", || {
            probe().and_then(|(status, _)| (status == 200).then_some(()))
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", kopf.lines().join("\n")));
}

/// A replica that pauses (here: frozen by `kopf peering freeze`) while a sync handler
/// runs aborts the object's worker, but the plugin's thread runs on: the pause waits until
/// that call has returned (logged), so that whoever takes over never runs the handler while
/// this replica's call of it still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_waits_for_handler_calls_still_running_in_the_plugin() {
    let cluster = Cluster::start().await;
    for file in ["deploy/peering-crds.yaml", "deploy/peering-objects.yaml"] {
        let text = std::fs::read_to_string(workspace_root().join(file)).unwrap();
        cluster.cluster.apply_yaml(&text).await.unwrap();
    }
    let port = free_port().unwrap();
    let liveness = format!("http://127.0.0.1:{port}/healthz");
    let mut kopf = cluster.kopf(
        &["-A", "--liveness", &liveness],
        "fixture-settings-probe",
        &[("KOPF_FIXTURE_SLEEP_MS", "6000".into())],
    );
    cluster
        .cluster
        .create_object(json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": "slow-at-pause", "namespace": "default"},
            "spec": {},
        }))
        .await
        .unwrap();
    // The handler runs: one object call in the plugin's pool.
    tokio::task::block_in_place(|| {
        wait_for(DEADLINE, "the slow handler to run", || {
            let (_, metrics) = http_get(port, "/metrics", Duration::from_secs(10)).ok()?;
            metrics
                .lines()
                .any(|l| l.starts_with("kopf_plugin_pool_threads{") && l.ends_with(r#"state="busy"} 1"#))
                .then_some(())
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", kopf.lines().join("\n")));
    let frozen = std::process::Command::new(kopf_e2e::kopf_bin().unwrap())
        .args([
            "peering",
            "freeze",
            "-A",
            "-i",
            "admin",
            "--lifetime",
            "600",
            "--priority",
            "100",
        ])
        .env("KUBECONFIG", cluster.kubeconfig())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        frozen.status.success(),
        "{}",
        String::from_utf8_lossy(&frozen.stderr)
    );
    tokio::task::block_in_place(|| {
        kopf.wait_for_line(
            "Waiting for 1 handler call(s) still running in the plugins",
            DEADLINE,
        )?;
        kopf.wait_for_line("The handler calls still running have returned", DEADLINE)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", kopf.lines().join("\n")));
    let lines = kopf.lines();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle));
    assert!(
        at("Pausing operations") < at("Waiting for 1 handler call(s)"),
        "{}",
        lines.join("\n")
    );
}

/// The calls in `KOPF_FIXTURE_CALL_LOG`: (what, pid, ms since the epoch).
fn calls(path: &std::path::Path) -> Vec<(String, u32, u128)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            Some((
                parts.next()?.to_owned(),
                parts.next()?.parse().ok()?,
                parts.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// The Lease holder gets SIGTERM while a sync handler runs (longer than the workers' exit
/// timeout, so the worker abandons the call): it releases the Lease only once that call
/// has returned, so the follower that takes over never runs the handler while the exiting
/// replica's call of it still runs. Before, the Lease was released at once and the exit
/// killed the call half-way (its end was never recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exiting_lease_holder_releases_only_after_its_handler_calls_return() {
    let cluster = Cluster::start().await;
    let log = cluster.dir.path().join("calls.log");
    let lease = ["-A", "--standalone", "--lease", "default/kopf-exit"];
    let envs = [
        ("KOPF_FIXTURE_SLEEP_MS", "5000".to_owned()),
        ("KOPF_FIXTURE_CALL_LOG", log.display().to_string()),
    ];
    let mut holder = cluster.kopf(&lease, "fixture-settings-probe", &envs);
    tokio::task::block_in_place(|| holder.wait_for_line("Acquired the Lease", DEADLINE)).unwrap();
    let mut follower = cluster.kopf(&lease, "fixture-settings-probe", &envs);
    tokio::task::block_in_place(|| follower.wait_for_line("standing by", DEADLINE)).unwrap();
    cluster
        .cluster
        .create_object(json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": "slow-at-exit", "namespace": "default"},
            "spec": {},
        }))
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        wait_for(DEADLINE, "the holder's call to start", || {
            calls(&log)
                .iter()
                .any(|(what, _, _)| what == "start")
                .then_some(())
        })
    })
    .unwrap();
    holder.signal("TERM").unwrap();
    let status = holder.wait_exit_async(DEADLINE).await.unwrap();
    assert!(status.success(), "{}", holder.lines().join("\n"));
    let (holder_pid, follower_pid) = (holder.id(), follower.id());
    tokio::task::block_in_place(|| {
        wait_for(DEADLINE, "the follower's call to end", || {
            calls(&log)
                .iter()
                .any(|(what, pid, _)| what == "end" && *pid == follower_pid)
                .then_some(())
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", follower.lines().join("\n")));
    let calls = calls(&log);
    let at = |what: &str, pid: u32| {
        calls
            .iter()
            .find(|(w, p, _)| w == what && *p == pid)
            .map(|(_, _, ms)| *ms)
    };
    let holder_end = at("end", holder_pid).unwrap_or_else(|| {
        panic!(
            "the holder's call never returned: {calls:?}\n{}",
            holder.lines().join("\n")
        )
    });
    let follower_start = at("start", follower_pid).unwrap();
    assert!(
        follower_start >= holder_end,
        "the follower started the handler while the holder's call still ran: {calls:?}"
    );
    let lines = holder.lines();
    let position = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{}", lines.join("\n")))
    };
    assert!(position("The handler calls still running have returned") < position("Released the Lease"));
}

// ---- The webhook server under slow and flooding clients ----

/// `kopf run` with the admission example's webhook server on loopback (no managed
/// configurations): the process, the port and a TLS client trusting the dumped CA.
struct Webhooks {
    kopf: KopfProcess,
    port: u16,
    tls: tokio_rustls::TlsConnector,
}

impl Webhooks {
    fn start(cluster: &Cluster) -> Self {
        let cadump = cluster.dir.path().join("ca.pem");
        let cadump_arg = cadump.display().to_string();
        let args = [
            "-A",
            "--standalone",
            "--webhook-server",
            "https://127.0.0.1:0",
            "--webhook-cadump",
            &cadump_arg,
        ];
        let kopf = cluster.kopf(&args, "example-17-admission", &[]);
        let line = kopf
            .lines()
            .into_iter()
            .find(|l| l.contains("Serving admission webhooks at https://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no serving line:\n{}", kopf.lines().join("\n")));
        let port: u16 = line
            .split("https://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        use rustls_pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(&cadump).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            kopf,
            port,
            tls: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        }
    }

    /// A TLS connection (HTTP/1.1: no ALPN offered).
    async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        self.tls.connect(name, tcp).await.unwrap()
    }
}

/// Reads until the server closes the connection (or fails it); returns what it sent.
async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn review(uid: &str) -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "kopf.dev", "version": "v1", "kind": "KopfExample"},
            "resource": {"group": "kopf.dev", "version": "v1", "resource": "kopfexamples"},
            "requestKind": {"group": "kopf.dev", "version": "v1", "kind": "KopfExample"},
            "requestResource": {"group": "kopf.dev", "version": "v1", "resource": "kopfexamples"},
            "name": "x", "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": {
                "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
                "metadata": {"name": "x", "namespace": "default"},
                "spec": {"field": "ok"},
            },
            "oldObject": null, "dryRun": false, "options": null,
        },
    })
    .to_string()
}

/// Slow clients (headers trickled in, or a huge announced body) are cut off by the
/// server's timeouts and limits instead of holding a connection for ever, and while
/// dozens of them are connected, a real review is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_server_cuts_off_slow_and_oversized_clients() {
    use tokio::io::AsyncWriteExt as _;
    let cluster = Cluster::start().await;
    let webhooks = Webhooks::start(&cluster);

    // Slowloris: headers that never end, one more line every half second.
    let mut slow = Vec::new();
    for i in 0..40 {
        let mut stream = webhooks.connect().await;
        let head = format!("POST /check_spec HTTP/1.1\r\nHost: localhost\r\nX-Slow: {i}\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(tokio::spawn(async move {
            let started = Instant::now();
            let (mut reader, mut writer) = tokio::io::split(stream);
            let trickle = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if writer.write_all(b"X-More: x\r\n").await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = trickle => {}
                _ = read_to_close(&mut reader) => {}
            }
            started.elapsed()
        }));
    }
    // Meanwhile, a real review is answered promptly.
    let started = Instant::now();
    let mut stream = webhooks.connect().await;
    let body = review("uid-real");
    let request = format!(
        "POST /check_spec HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut stream))
        .await
        .expect("the review was not answered beside slow clients");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("uid-real"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // A body announced far over the limit is refused before it is read.
    let mut stream = webhooks.connect().await;
    let head = "POST /check_spec HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Content-Length: 1000000000\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut stream))
        .await
        .expect("an oversized body was waited for");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Every slow client was disconnected within the header timeout (plus a margin for a
    // loaded machine), none held on for ever.
    for task in slow {
        let held = tokio::time::timeout(Duration::from_secs(45), task)
            .await
            .expect("a slowloris connection was held open")
            .unwrap();
        assert!(held < Duration::from_secs(45), "held {held:?}");
    }
    let lines = webhooks.kopf.lines();
    assert!(
        !lines.iter().any(|l| l.contains("panicked")),
        "{}",
        lines.join("\n")
    );
}

// ---- Managed webhook configurations shared by replicas ----

/// Creates a KopfExample through the API (so the webhooks are called); the error text
/// if refused.
async fn admit(client: &kube::Client, name: &str, field: &str) -> Result<(), String> {
    use kube::api::{Api, DynamicObject, PostParams};
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &kopf_e2e::cluster::kopfexamples());
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"field": field},
    }))
    .unwrap();
    api.create(&PostParams::default(), &object)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The validating handlers of example 17 (one webhook each).
const EXAMPLE_17_VALIDATING: usize = 5;

fn webhooks_in(cluster: &Cluster, plural: &str) -> Option<usize> {
    let config =
        cluster
            .cluster
            .get_object("admissionregistration.k8s.io/v1", plural, None, "auto.kopf.dev")?;
    Some(config["webhooks"].as_array().map_or(0, Vec::len))
}

/// Two replicas of the admission example managing `auto.kopf.dev` behind one URL (one
/// port on two loopback addresses; the API server reaches the first), with `extra`
/// arguments each.
fn two_replicas(cluster: &Cluster, extra: &[&str]) -> (KopfProcess, KopfProcess) {
    let port = free_port().unwrap();
    let replica = |address: &str| {
        let server = format!("https://{address}:{port}");
        let mut args = vec![
            "-A",
            "--standalone",
            "--webhook-server",
            &server,
            "--webhook-host",
            "localhost",
            "--webhook-managed",
            "auto.kopf.dev",
        ];
        args.extend_from_slice(extra);
        let envs = [("KOPF_WEBHOOK_RECONCILE_INTERVAL", "2".to_owned())];
        cluster.kopf(&args, "example-17-admission", &envs)
    };
    let first = replica("127.0.0.1");
    // The second replica writes the configurations last.
    let second = replica("127.0.0.2");
    (first, second)
}

fn logs(first: &KopfProcess, second: &KopfProcess) -> String {
    format!(
        "first:\n{}\nsecond:\n{}",
        first.lines().join("\n"),
        second.lines().join("\n")
    )
}

/// Both replicas generate their certificates, yet the API server can verify either: one
/// CA shared through a Secret, one `caBundle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_generated_certificates_share_one_ca() {
    let cluster = Cluster::start().await;
    let client = cluster.cluster.admin_client().await.unwrap();
    let (first, second) = two_replicas(&cluster, &[]);
    let refused = admit(&client, "wrong-1", "wrong").await.unwrap_err();
    assert!(
        refused.contains("spec.field must not be 'wrong'."),
        "{refused}\n{}",
        logs(&first, &second)
    );
    admit(&client, "good-1", "ok")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&first, &second)));
    let secret = cluster
        .cluster
        .get_object("v1", "secrets", Some("default"), "auto.kopf.dev-ca")
        .expect("no Secret of the shared CA");
    assert!(secret.pointer("/data/ca.crt").is_some(), "{secret}");
}

/// With one certificate for both (files, as from cert-manager): a replica that exits
/// leaves the webhooks to the live one; configurations emptied behind the operator's
/// back are restored; the last replica removes its webhooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_last_replica_removes_the_webhooks() {
    let cluster = Cluster::start().await;
    let client = cluster.cluster.admin_client().await.unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = cluster.dir.path().join("tls.crt");
    let key_path = cluster.dir.path().join("tls.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (cert_path.display().to_string(), key_path.display().to_string());
    let files = ["--webhook-cert", &cert_arg, "--webhook-key", &key_arg];
    let (mut first, mut second) = two_replicas(&cluster, &files);
    let refused = admit(&client, "wrong-1", "wrong").await.unwrap_err();
    assert!(
        refused.contains("spec.field must not be 'wrong'."),
        "{refused}\n{}",
        logs(&first, &second)
    );

    // A rolling update: the second replica exits while the first lives on.
    second.signal("TERM").unwrap();
    assert!(
        tokio::task::block_in_place(|| second.wait_exit(DEADLINE))
            .unwrap()
            .success()
    );
    assert_eq!(
        webhooks_in(&cluster, "validatingwebhookconfigurations"),
        Some(EXAMPLE_17_VALIDATING),
        "{}",
        logs(&first, &second)
    );
    let refused = admit(&client, "wrong-2", "wrong").await.unwrap_err();
    assert!(refused.contains("spec.field must not be 'wrong'."), "{refused}");

    // Emptied behind the operator's back: restored by the live replica.
    cluster
        .cluster
        .apply_yaml(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\n\
             metadata: {name: auto.kopf.dev}\nwebhooks: []\n",
        )
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        wait_for(DEADLINE, "the emptied configuration to be restored", || {
            (webhooks_in(&cluster, "validatingwebhookconfigurations") == Some(EXAMPLE_17_VALIDATING))
                .then_some(())
        })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&first, &second)));

    // The last replica removes its (non-persistent) webhooks.
    first.signal("TERM").unwrap();
    assert!(
        tokio::task::block_in_place(|| first.wait_exit(DEADLINE))
            .unwrap()
            .success()
    );
    for plural in ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"] {
        assert_eq!(webhooks_in(&cluster, plural), Some(0), "{plural}");
    }
    admit(&client, "wrong-3", "wrong")
        .await
        .expect("webhooks left behind by the last replica");
}
