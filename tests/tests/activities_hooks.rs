//! Operator-level handlers end to end: the real `kopf` binary with the 13-hooks example
//! (startup retried and adjusting settings, login, probes over HTTP, metrics, cleanup on
//! SIGTERM) and a startup handler that fails permanently.

use std::time::Duration;

use kopf_e2e::{KopfProcess, free_port, http_get, plugin_path, wait_for};
use kopf_testing::{Emulator, EmulatorHandle, KUBECONFIG_USER};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);

struct Cluster {
    _runtime: tokio::runtime::Runtime,
    emulator: EmulatorHandle,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emulator = runtime.block_on(Emulator::builder().start()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        emulator.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
        Self {
            _runtime: runtime,
            emulator,
            dir,
        }
    }

    fn kubeconfig(&self) -> String {
        self.dir.path().join("kubeconfig").display().to_string()
    }

    /// A kubeconfig pointing nowhere: only a login handler can make the operator work.
    fn unreachable_kubeconfig(&self) -> String {
        let path = self.dir.path().join("unreachable");
        let text = self
            .emulator
            .kubeconfig_yaml()
            .replace(&self.emulator.url(), "http://127.0.0.1:9");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

#[test]
fn hooks_example_runs_startup_login_probes_metrics_and_cleanup() {
    let cluster = Cluster::start();
    let plugin = plugin_path("example-13-hooks").unwrap();
    let port = free_port().unwrap();
    let liveness = format!("http://127.0.0.1:{port}/healthz");
    let mut kopf = KopfProcess::spawn_with_env(
        [
            "run".as_ref(),
            "-A".as_ref(),
            "--standalone".as_ref(),
            "--liveness".as_ref(),
            liveness.as_ref(),
            plugin.as_os_str(),
        ],
        [
            ("KUBECONFIG", cluster.unreachable_kubeconfig()),
            ("HOOKS_SERVER", cluster.emulator.url()),
            ("HOOKS_TOKEN", KUBECONFIG_USER.to_owned()),
            ("HOOKS_FAILING_PROBE", "1".to_owned()),
        ],
    )
    .unwrap();
    kopf.wait_for_line("The operator is ready", DEADLINE).unwrap();
    let log = kopf.lines().join("\n");

    // Login: the kubeconfig points nowhere; the login handler's connection is used.
    assert!(log.contains("Logged in with handler 'login_fn'"), "{log}");
    // Startup: the first handler adjusted the settings (the second checks them), and the
    // second failed temporarily twice before succeeding.
    assert!(
        log.contains("Activity 'startup_fn_simple' adjusted the operator settings."),
        "{log}"
    );
    let retried = log
        .lines()
        .filter(|l| l.contains("Activity 'startup_fn_retried' failed temporarily"))
        .count();
    assert_eq!(retried, 2, "{log}");
    assert!(log.contains("Activity 'startup_fn_retried' succeeded."), "{log}");

    // Probes over HTTP: results by id; the failing one is reported, with status 500.
    let (status, body) = http_get(port, "/healthz", DEADLINE).unwrap();
    assert_eq!(status, 500, "{body}");
    let probes: Value = serde_json::from_str(&body).unwrap();
    assert!(
        probes["now"].as_str().is_some_and(|s| s.parse::<u64>().is_ok()),
        "{probes}"
    );
    assert_eq!(probes["random"], json!({"value": 42}));
    assert!(
        probes["failing"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("broken on purpose")),
        "{probes}"
    );
    // Cached for 10 s: a second request answers the same timestamp.
    let (_, again) = http_get(port, "/healthz", DEADLINE).unwrap();
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["now"], probes["now"]);

    // Metrics on the same listener.
    let (status, metrics) = http_get(port, "/metrics", DEADLINE).unwrap();
    assert_eq!(status, 200);
    for needle in [
        r#"kopf_handler_invocations_total{kind="startup",handler="startup_fn_retried",outcome="temporary"} 2"#,
        r#"kopf_handler_invocations_total{kind="startup",handler="startup_fn_retried",outcome="success"} 1"#,
        r#"kopf_handler_retries_total{kind="startup",handler="startup_fn_retried"} 2"#,
        r#"kopf_handler_invocations_total{kind="probe",handler="failing",outcome="arbitrary"} 1"#,
        "# TYPE kopf_handler_duration_seconds histogram",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in:\n{metrics}");
    }

    // Cleanup on SIGTERM, then a graceful exit.
    // (Wait for the exit first: `wait_for_line` gives up once the process has exited.)
    kopf.signal("TERM").unwrap();
    let status = kopf.wait_exit(DEADLINE).unwrap();
    assert_eq!(status.code(), Some(0), "{}", kopf.lines().join("\n"));
    wait_for(DEADLINE, "the cleanup handler's log line", || {
        kopf.lines()
            .iter()
            .any(|l| l.contains("Cleaning up: the hooks example is done."))
            .then_some(())
    })
    .unwrap();
}

#[test]
fn permanently_failing_startup_exits_1_with_a_clear_message() {
    let cluster = Cluster::start();
    let plugin = plugin_path("fixture-startup-fails").unwrap();
    let mut kopf = KopfProcess::spawn_with_env(
        [
            "run".as_ref(),
            "-A".as_ref(),
            "--standalone".as_ref(),
            plugin.as_os_str(),
        ],
        [("KUBECONFIG", cluster.kubeconfig())],
    )
    .unwrap();
    let status = kopf.wait_exit(DEADLINE).unwrap();
    let log = kopf.lines().join("\n");
    assert_eq!(status.code(), Some(1), "{log}");
    let error = wait_for(DEADLINE, "the error line", || {
        kopf.lines().into_iter().find(|l| l.starts_with("kopf: error:"))
    })
    .unwrap();
    assert_eq!(
        error,
        "kopf: error: startup failed: Activity 'must_fail' failed permanently: the database is unreachable",
        "{log}"
    );
    assert!(!log.contains("The operator is ready"), "{log}");
}
