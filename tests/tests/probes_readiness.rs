//! The readiness endpoint and the replica's role metrics end to end: the real `kopf`
//! binary with a real plugin against the emulator (or a real API server), asked over HTTP
//! on its `--liveness` listener (`/readyz`, `/metrics`).
//!
//! Readiness is false before the first listing (a listing refused by the emulator keeps
//! it false), while paused by a peering freeze, and on a `--lease` standby; true
//! otherwise. The role metrics follow the same pauses and the Lease.

use std::path::PathBuf;
use std::time::Duration;

use kopf_e2e::cluster::{TestCluster, emulator_only};
use kopf_e2e::{KopfProcess, free_port, http_get, kopf_bin, plugin_path, wait_for, workspace_root};
use kopf_testing::{FaultKind, FaultMatch};
use serde_json::Value;

/// Generous: a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

struct Cluster {
    _runtime: tokio::runtime::Runtime,
    emu: TestCluster,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emu = runtime.block_on(TestCluster::start()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig).unwrap();
        for file in [
            "examples/crd.yaml",
            "deploy/peering-crds.yaml",
            "deploy/peering-objects.yaml",
        ] {
            let text = std::fs::read_to_string(workspace_root().join(file)).unwrap();
            runtime.block_on(emu.apply_yaml(&text)).unwrap();
        }
        Self {
            _runtime: runtime,
            emu,
            _dir: dir,
            kubeconfig,
        }
    }

    /// Starts `kopf run -v --liveness ... ARGS... <example-01-minimal>` as `identity` and
    /// waits until it has discovered its resources; returns it and its liveness port.
    fn kopf(&self, identity: &str, args: &[&str]) -> (KopfProcess, u16) {
        let port = free_port().unwrap();
        let plugin = plugin_path("example-01-minimal").unwrap();
        let mut all: Vec<String> = vec![
            "run".into(),
            "-v".into(),
            format!("--liveness=http://127.0.0.1:{port}/healthz"),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all.push(plugin.display().to_string());
        let envs = [
            ("KUBECONFIG", self.kubeconfig.display().to_string()),
            ("POD_ID", identity.to_owned()),
            ("KOPF_LEASE_DURATION", "3".to_owned()),
            ("KOPF_PEERING_LIFETIME", "4".to_owned()),
        ];
        let mut process = KopfProcess::spawn_with_env(all, envs).unwrap();
        process.wait_for_line("The operator is ready", DEADLINE).unwrap();
        (process, port)
    }

    /// Runs `kopf peering ARGS...` to completion; it must succeed.
    fn peering(&self, args: &[&str]) {
        let out = std::process::Command::new(kopf_bin().unwrap())
            .arg("peering")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `GET /readyz`: the status code and the JSON body.
fn readyz(port: u16) -> (u16, Value) {
    let (status, body) = http_get(port, "/readyz", DEADLINE).unwrap();
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, value)
}

/// Waits until `/readyz` answers `status`; returns the body.
fn wait_ready(port: u16, status: u16) -> Value {
    wait_for(DEADLINE, &format!("/readyz to answer {status}"), || {
        let (code, body) = readyz(port);
        (code == status).then_some(body)
    })
    .unwrap()
}

/// The value of one sample of `/metrics`, by its name and labels as printed
/// (`kopf_replica_paused{reason="lease"}`).
fn metric(port: u16, sample: &str) -> Option<f64> {
    let (_, text) = http_get(port, "/metrics", DEADLINE).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until a sample of `/metrics` has `value`.
fn wait_metric(port: u16, sample: &str, value: f64) {
    wait_for(DEADLINE, &format!("{sample} to be {value}"), || {
        (metric(port, sample) == Some(value)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", http_get(port, "/metrics", DEADLINE)));
}

fn reasons(body: &Value) -> Vec<String> {
    body["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

#[test]
fn readiness_waits_for_the_listing_and_a_peering_freeze() {
    if emulator_only("a refused listing is a fault of the emulator") {
        return;
    }
    let cluster = Cluster::start();
    let faults = cluster.emu.expect_emulator("fault injection").faults();
    faults.fail_ratio(
        1.0,
        FaultMatch::verb_resource("list", "kopfexamples"),
        FaultKind::Status(500),
    );
    let (mut op, port) = cluster.kopf("op", &["-A"]);

    // Discovered and (once its first keep-alive is answered) not paused, but its
    // listing is refused: alive and not ready.
    wait_for(DEADLINE, "the listing to be the only reason", || {
        let (status, body) = readyz(port);
        let listing = reasons(&body);
        (status == 503 && listing.len() == 1 && listing[0].starts_with("listing: kopfexamples.v1.kopf.dev"))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", readyz(port)));
    let (status, _) = http_get(port, "/healthz", DEADLINE).unwrap();
    assert_eq!(status, 200, "liveness does not wait for the listing");
    assert_eq!(metric(port, "kopf_replica_active"), Some(1.0));

    faults.clear();
    assert_eq!(wait_ready(port, 200), serde_json::json!({"ready": true}));

    // A freeze by a peer of higher priority: paused, so not ready, and the role says so.
    cluster.peering(&[
        "freeze",
        "-A",
        "-i",
        "admin",
        "--lifetime",
        "600",
        "--priority",
        "100",
    ]);
    op.wait_for_line("Pausing operations", DEADLINE).unwrap();
    let body = wait_ready(port, 503);
    assert_eq!(reasons(&body), ["paused: peering"], "{body}");
    wait_metric(port, "kopf_replica_active", 0.0);
    wait_metric(port, r#"kopf_replica_paused{reason="peering"}"#, 1.0);

    cluster.peering(&["resume", "-A", "-i", "admin"]);
    op.wait_for_line("Resuming operations", DEADLINE).unwrap();
    wait_ready(port, 200);
    wait_metric(port, "kopf_replica_active", 1.0);
    wait_metric(port, r#"kopf_replica_paused{reason="peering"}"#, 0.0);
    assert_eq!(metric(port, "kopf_lease_holder"), Some(0.0), "no --lease");
    op.stop_gracefully(DEADLINE).unwrap();
}

#[test]
fn a_lease_standby_is_alive_not_ready_and_takes_over_the_role() {
    let cluster = Cluster::start();
    let lease = ["-A", "--standalone", "--lease", "default/kopf-ready"];
    let (mut one, one_port) = cluster.kopf("one", &lease);
    wait_metric(one_port, "kopf_lease_holder", 1.0);
    let (mut two, two_port) = cluster.kopf("two", &lease);
    two.wait_for_line("held by another replica", DEADLINE).unwrap();

    assert_eq!(wait_ready(one_port, 200), serde_json::json!({"ready": true}));
    assert_eq!(metric(one_port, "kopf_replica_active"), Some(1.0));
    assert_eq!(
        metric(one_port, r#"kopf_replica_paused{reason="lease"}"#),
        Some(0.0)
    );

    let (status, body) = readyz(two_port);
    assert_eq!(status, 503, "{body}");
    assert_eq!(reasons(&body), ["paused: lease"], "{body}");
    assert_eq!(metric(two_port, "kopf_lease_holder"), Some(0.0));
    assert_eq!(metric(two_port, "kopf_replica_active"), Some(0.0));
    assert_eq!(
        metric(two_port, r#"kopf_replica_paused{reason="lease"}"#),
        Some(1.0)
    );
    let (status, _) = http_get(two_port, "/healthz", DEADLINE).unwrap();
    assert_eq!(status, 200, "a standby is alive");

    // The holder stops (and releases the Lease): the standby becomes the holder and ready.
    one.stop_gracefully(DEADLINE).unwrap();
    wait_metric(two_port, "kopf_lease_holder", 1.0);
    wait_ready(two_port, 200);
    assert_eq!(metric(two_port, "kopf_replica_active"), Some(1.0));
    assert_eq!(
        metric(two_port, r#"kopf_replica_paused{reason="lease"}"#),
        Some(0.0)
    );
    two.stop_gracefully(DEADLINE).unwrap();
}
