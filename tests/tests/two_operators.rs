//! Two embedded operators in one process, each on its own emulator, share no state
//! (issue 19): each handles its own objects, each one's `/metrics` counts only its own
//! work and role, a freeze of one's peering pauses that one only, and each one's events
//! go to its own emulator.
//!
//! Both run `examples/04-events` (a create handler posting four events) from the same
//! file: `dlopen` gives both the same image, whose statics the two `init`s share. Each
//! call names its operator (`Invocation::host_context`), and the SDK answers the call's
//! host calls (events, logs, the completion of the call) to that operator, so the objects
//! both handle at once each get their events and their metrics from their own operator.

use std::path::Path;
use std::time::Duration;

use kopf_cli::embedded::{Operator, OperatorHandle};
use kopf_e2e::cluster::TestCluster;
use kopf_e2e::{free_port, http_get, kopf_bin, plugin_path, workspace_root};
use kopf_testing::runner::wait_until;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);
/// Objects each operator handles at once, both operators together.
const OBJECTS: usize = 5;
const NS: &str = "default";

/// One operator on its own emulator, with its liveness endpoint (and `/metrics`).
struct Side {
    name: &'static str,
    cluster: TestCluster,
    kubeconfig: std::path::PathBuf,
    port: u16,
    operator: OperatorHandle,
}

impl Side {
    async fn start(name: &'static str, plugin: &Path, dir: &Path) -> Self {
        let cluster = TestCluster::start_emulator().await.unwrap();
        for file in [
            "examples/crd.yaml",
            "deploy/peering-crds.yaml",
            "deploy/peering-objects.yaml",
        ] {
            let yaml = std::fs::read_to_string(workspace_root().join(file)).unwrap();
            cluster.apply_yaml(&yaml).await.unwrap();
        }
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        cluster.write_kubeconfig(&kubeconfig).unwrap();
        let parsed = kube::config::Kubeconfig::from_yaml(&cluster.kubeconfig_yaml()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
            .await
            .unwrap();
        let port = free_port().unwrap();
        let operator = Operator::builder()
            .plugin_file(plugin)
            .clusterwide(true)
            .peering("default")
            .liveness(format!("http://127.0.0.1:{port}/healthz"))
            .config(config)
            .build()
            .unwrap()
            .spawn()
            .unwrap();
        tokio::task::block_in_place(|| operator.wait_ready(DEADLINE)).unwrap();
        Self {
            name,
            cluster,
            kubeconfig,
            port,
            operator,
        }
    }

    async fn create(&self, object: &str) {
        let body = json!({
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfExample",
            "metadata": {"name": object, "namespace": NS},
            "spec": {"field": self.name},
        });
        self.cluster.create_object(body).await.unwrap();
    }

    /// The names of the objects that this emulator's events are about.
    fn events_about(&self) -> Vec<String> {
        let events = self
            .cluster
            .list_objects("v1", "events", Some(NS), None)
            .unwrap_or_default();
        events
            .iter()
            .filter_map(|e| e.pointer("/involvedObject/name").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }

    /// The value of the first sample of `/metrics` whose line starts with `prefix`.
    fn metric(&self, prefix: &str) -> Option<f64> {
        let (status, text) = http_get(self.port, "/metrics", Duration::from_secs(5)).ok()?;
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    fn wait_metric(&self, prefix: &str, value: f64) {
        let what = format!("{} {prefix} = {value}", self.name);
        wait_until(DEADLINE, &what, || {
            (self.metric(prefix) == Some(value)).then_some(())
        })
        .unwrap();
    }

    /// `kopf peering ARGS... -A -i admin` against this side's emulator.
    fn peering(&self, args: &[&str]) {
        let out = std::process::Command::new(kopf_bin().unwrap())
            .arg("peering")
            .args(args)
            .args(["-A", "-i", "admin"])
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

const INVOKED: &str =
    r#"kopf_handler_invocations_total{kind="create",handler="create_fn",outcome="success"}"#;
const WATCHED: &str = r#"kopf_objects_watched{resource="kopfexamples"#;
const PAUSED: &str = r#"kopf_replica_paused{reason="peering"}"#;
const ACTIVE: &str = "kopf_replica_active ";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_embedded_operators_do_not_see_each_others_state() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = tokio::task::block_in_place(|| plugin_path("example-04-events")).unwrap();
    let a = Side::start("a", &plugin, dir.path()).await;
    let b = Side::start("b", &plugin, dir.path()).await;

    // Handlers run on each at once, events go to each one's own emulator.
    let names = |side: &Side| {
        (1..=OBJECTS)
            .map(|i| format!("{}{i}", side.name))
            .collect::<Vec<_>>()
    };
    let (a_names, b_names) = (names(&a), names(&b));
    let creations = a_names
        .iter()
        .map(|n| a.create(n))
        .chain(b_names.iter().map(|n| b.create(n)));
    futures::future::join_all(creations).await;
    tokio::task::block_in_place(|| {
        for side in [&a, &b] {
            wait_until(
                DEADLINE,
                &format!("4 events about each of {}'s objects", side.name),
                || {
                    let about = side.events_about();
                    names(side)
                        .iter()
                        .all(|own| about.iter().filter(|n| *n == own).count() == 4)
                        .then_some(())
                },
            )
            .unwrap();
            side.wait_metric(INVOKED, OBJECTS as f64);
            side.wait_metric(WATCHED, OBJECTS as f64);
        }
    });
    let sorted = |mut events: Vec<String>| {
        events.sort();
        events
    };
    let four_each = |names: &[String]| {
        sorted(
            names
                .iter()
                .flat_map(|n| std::iter::repeat_n(n.clone(), 4))
                .collect(),
        )
    };
    assert_eq!(
        sorted(a.events_about()),
        four_each(&a_names),
        "events on a's emulator"
    );
    assert_eq!(
        sorted(b.events_about()),
        four_each(&b_names),
        "events on b's emulator"
    );

    // A freeze of a's peering pauses a only.
    tokio::task::block_in_place(|| {
        a.peering(&["freeze", "--lifetime", "600", "--priority", "100"]);
        a.wait_metric(PAUSED, 1.0);
        a.wait_metric(ACTIVE, 0.0);
    });
    assert_eq!(b.metric(ACTIVE), Some(1.0), "b stays active while a is frozen");
    assert_ne!(b.metric(PAUSED), Some(1.0), "b is not paused by a's freeze");
    a.create("a9").await;
    b.create("b9").await;
    let before = OBJECTS as f64;
    tokio::task::block_in_place(|| {
        wait_until(DEADLINE, "b handles b9 while a is frozen", || {
            (b.events_about().iter().filter(|n| *n == "b9").count() == 4).then_some(())
        })
        .unwrap();
        b.wait_metric(INVOKED, before + 1.0);
    });
    assert!(
        !a.events_about().contains(&"a9".to_owned()),
        "a handled a9 while frozen"
    );
    assert_eq!(a.metric(INVOKED), Some(before), "a's handler ran while frozen");

    // Resumed, a handles its object; nothing ever crossed over.
    tokio::task::block_in_place(|| {
        a.peering(&["resume"]);
        a.wait_metric(ACTIVE, 1.0);
        wait_until(DEADLINE, "a handles a9 after the resume", || {
            (a.events_about().iter().filter(|n| *n == "a9").count() == 4).then_some(())
        })
        .unwrap();
        a.wait_metric(INVOKED, before + 1.0);
    });
    assert!(
        a.events_about().iter().all(|n| n.starts_with('a')),
        "{:?}",
        a.events_about()
    );
    assert!(
        b.events_about().iter().all(|n| n.starts_with('b')),
        "{:?}",
        b.events_about()
    );
    assert_eq!(a.metric(WATCHED), Some(before + 1.0));
    assert_eq!(b.metric(WATCHED), Some(before + 1.0));

    for side in [&a, &b] {
        side.operator.stop();
        tokio::task::block_in_place(|| side.operator.join()).unwrap();
    }
}
