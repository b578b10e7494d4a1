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
//! The second test does the same with handlers of this test binary, served in-process to
//! both operators (one module, as an application embedding two operators would).

use std::path::{Path, PathBuf};
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

/// The in-process handlers: one event each, a sync handler through its `Context`, an
/// async one through `kopf::info` (the operator of the task's call).
#[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
fn in_process_sync(ctx: &kopf::Context) {
    ctx.info("Sync", format!("{} handled", ctx.object_ref()));
}

#[kopf::on::create("kopf.dev", "v1", "kopfexamples")]
async fn in_process_async(ctx: &kopf::Context) {
    // Suspends once: the event is posted after a yield, where the call's operator must still hold.
    tokio::task::yield_now().await;
    kopf::info(ctx.body(), "Async", format!("{} handled", ctx.object_ref()));
}

/// Where an operator's handlers come from.
enum Handlers {
    File(PathBuf),
    InProcess,
}

/// One operator on its own emulator, with its liveness endpoint (and `/metrics`).
struct Side {
    name: &'static str,
    cluster: TestCluster,
    kubeconfig: std::path::PathBuf,
    port: u16,
    operator: OperatorHandle,
}

impl Side {
    async fn start(name: &'static str, handlers: &Handlers, dir: &Path) -> Self {
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
        let builder = match handlers {
            Handlers::File(plugin) => Operator::builder().plugin_file(plugin),
            Handlers::InProcess => Operator::builder().module("in-process", kopf::plugin_module()),
        };
        let operator = builder
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

/// The names of a side's objects.
fn names(side: &Side) -> Vec<String> {
    (1..=OBJECTS).map(|i| format!("{}{i}", side.name)).collect()
}

/// Creates [`OBJECTS`] objects on each side, all at once, and waits until each side's
/// emulator has `events` events about each of its own objects.
async fn create_on_both(a: &Side, b: &Side, events: usize) -> (Vec<String>, Vec<String>) {
    let (a_names, b_names) = (names(a), names(b));
    let creations = a_names
        .iter()
        .map(|n| a.create(n))
        .chain(b_names.iter().map(|n| b.create(n)));
    futures::future::join_all(creations).await;
    tokio::task::block_in_place(|| {
        for side in [a, b] {
            let what = format!("{events} events about each of {}'s objects", side.name);
            wait_until(DEADLINE, &what, || {
                let about = side.events_about();
                names(side)
                    .iter()
                    .all(|own| about.iter().filter(|n| *n == own).count() == events)
                    .then_some(())
            })
            .unwrap();
        }
    });
    (a_names, b_names)
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
    let plugin = Handlers::File(plugin);
    let a = Side::start("a", &plugin, dir.path()).await;
    let b = Side::start("b", &plugin, dir.path()).await;

    // Handlers run on each at once, events go to each one's own emulator.
    let (a_names, b_names) = create_on_both(&a, &b, 4).await;
    tokio::task::block_in_place(|| {
        for side in [&a, &b] {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_embedded_operators_share_in_process_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let a = Side::start("a", &Handlers::InProcess, dir.path()).await;
    let b = Side::start("b", &Handlers::InProcess, dir.path()).await;
    let (a_names, b_names) = create_on_both(&a, &b, 2).await;
    let invoked = |handler: &str| {
        format!(r#"kopf_handler_invocations_total{{kind="create",handler="{handler}",outcome="success"}}"#)
    };
    tokio::task::block_in_place(|| {
        for side in [&a, &b] {
            side.wait_metric(&invoked("in_process_sync"), OBJECTS as f64);
            side.wait_metric(&invoked("in_process_async"), OBJECTS as f64);
        }
    });
    for (side, own) in [(&a, &a_names), (&b, &b_names)] {
        let mut about = side.events_about();
        about.sort();
        about.dedup();
        assert_eq!(&about, own, "events on {}'s emulator", side.name);
    }
    for side in [&a, &b] {
        side.operator.stop();
        tokio::task::block_in_place(|| side.operator.join()).unwrap();
    }
}
