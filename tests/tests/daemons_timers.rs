//! Daemons and timers end to end: the real `kopf` binary with the 14-daemons and 15-timers
//! example plugins against the emulator or a real API server (`KOPF_TEST_CLUSTER`).

use std::path::Path;
use std::time::Duration;

use kopf_e2e::cluster::TestCluster;
use kopf_e2e::{KopfProcess, plugin_path, wait_for, workspace_root};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);
const FINALIZER: &str = "kopf.zalando.org/KopfFinalizerMarker";

struct Cluster {
    runtime: tokio::runtime::Runtime,
    emulator: TestCluster,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emulator = runtime.block_on(TestCluster::start()).unwrap();
        let crd = std::fs::read_to_string(workspace_root().join("examples/crd.yaml")).unwrap();
        runtime.block_on(emulator.apply_yaml(&crd)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        emulator.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
        Self {
            runtime,
            emulator,
            dir,
        }
    }

    fn kubeconfig(&self) -> String {
        self.dir.path().join("kubeconfig").display().to_string()
    }

    fn run_kopf(&self, plugin: &Path, extra_env: &[(&str, String)]) -> KopfProcess {
        let mut env = vec![("KUBECONFIG".to_owned(), self.kubeconfig())];
        env.extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let mut kopf = KopfProcess::spawn_with_env(
            [
                "run".as_ref(),
                "--verbose".as_ref(),
                "-n".as_ref(),
                "default".as_ref(),
                "--standalone".as_ref(),
                plugin.as_os_str(),
            ],
            env,
        )
        .unwrap();
        kopf.wait_for_line("The operator is ready", DEADLINE).unwrap();
        kopf
    }

    fn create(&self, name: &str) {
        let object = json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"field": "value"},
        });
        self.runtime
            .block_on(self.emulator.create_object(object))
            .unwrap();
    }

    fn get(&self, name: &str) -> Option<Value> {
        self.emulator
            .get_object("kopf.dev/v1", "kopfexamples", Some("default"), name)
    }

    fn delete(&self, name: &str) {
        self.runtime
            .block_on(
                self.emulator
                    .delete_object("kopf.dev/v1", "kopfexamples", Some("default"), name),
            )
            .unwrap();
    }
}

fn has_finalizer(object: &Value) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

fn stop(mut kopf: KopfProcess) {
    kopf.signal("TERM").unwrap();
    let status = kopf.wait_exit(DEADLINE).unwrap();
    assert_eq!(status.code(), Some(0), "{}", kopf.lines().join("\n"));
}

#[test]
fn daemons_run_per_object_and_release_it_when_stopped() {
    let cluster = Cluster::start();
    let markers = cluster.dir.path().join("markers.txt");
    let plugin = plugin_path("example-14-daemons").unwrap();
    let kopf = cluster.run_kopf(
        &plugin,
        &[
            ("KOPF_EXAMPLE_MARKERS", markers.display().to_string()),
            ("KOPF_RUN_VERBOSE", "1".to_owned()),
        ],
    );
    let read = || std::fs::read_to_string(&markers).unwrap_or_default();

    cluster.create("kex-daemons");
    wait_for(DEADLINE, "both daemons to start", || {
        let text = read();
        (text.contains("sync started default/kex-daemons")
            && text.contains("async started default/kex-daemons"))
        .then_some(())
    })
    .unwrap();
    // As in Kopf, daemons are spawned in the same cycle that adds the finalizer (which may
    // not be persisted yet when a fast daemon starts): the finalizer follows shortly.
    wait_for(DEADLINE, "the finalizer that daemons need", || {
        cluster.get("kex-daemons").filter(has_finalizer).map(|_| ())
    })
    .unwrap();

    cluster.delete("kex-daemons");
    // The sync daemon exits when asked; the async one is cancelled; then the object goes.
    wait_for(DEADLINE, "the object to be released", || {
        cluster.get("kex-daemons").is_none().then_some(())
    })
    .unwrap();
    assert!(read().contains("sync exited default/kex-daemons"), "{}", read());
    // The slow daemon (no cancellation timeout) was waited for, with reminders paced by
    // its `cancellation_polling`, and the finalizer stayed until it had exited.
    assert!(read().contains("slow exited default/kex-daemons"), "{}", read());
    assert!(
        kopf.lines()
            .iter()
            .any(|l| l.contains("\"background_slow_exit\" is still exiting. Next check is in 0.3 seconds.")),
        "{}",
        kopf.lines().join("\n")
    );
    let starts = read().lines().filter(|l| l.starts_with("sync started")).count();
    assert_eq!(starts, 1, "a daemon runs once per object: {}", read());
    stop(kopf);
}

#[test]
fn timers_tick_into_status_and_idle_timers_wait() {
    let cluster = Cluster::start();
    let plugin = plugin_path("example-15-timers").unwrap();
    let kopf = cluster.run_kopf(&plugin, &[]);

    cluster.create("kex-timers");
    let first = wait_for(DEADLINE, "a first tick", || {
        cluster
            .get("kex-timers")
            .and_then(|o| o["status"]["every_few_seconds_sync"]["tick"].as_u64())
    })
    .unwrap();
    wait_for(DEADLINE, "a later tick", || {
        let tick = cluster.get("kex-timers")?["status"]["every_few_seconds_sync"]["tick"].as_u64()?;
        (tick > first).then_some(())
    })
    .unwrap();
    wait_for(DEADLINE, "the idle timer", || {
        let object = cluster.get("kex-timers")?;
        (object["status"]["idle_timer"]["field"] == "value").then_some(())
    })
    .unwrap();
    assert!(has_finalizer(&cluster.get("kex-timers").unwrap()));

    cluster.delete("kex-timers");
    wait_for(DEADLINE, "the object to be released", || {
        cluster.get("kex-timers").is_none().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; the operator's log:\n{}", kopf.lines().join("\n")));
    stop(kopf);
}

fn pods_are<'a>(cluster: &'a Cluster, expected: &[&str]) -> impl FnMut() -> Option<()> + 'a {
    let expected: Vec<Value> = expected.iter().map(|n| json!(n)).collect();
    move || {
        let object = cluster.get("kex-indexing")?;
        (object["status"]["list_pods"]["pods"].as_array() == Some(&expected)).then_some(())
    }
}

fn create_pod(cluster: &Cluster, name: &str) {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    });
    cluster
        .runtime
        .block_on(cluster.emulator.create_object(pod))
        .unwrap();
}

#[test]
fn indices_are_complete_before_handlers_and_follow_the_objects() {
    let cluster = Cluster::start();
    // Pods that exist before the operator starts must be indexed before the timer runs.
    create_pod(&cluster, "pod-a");
    create_pod(&cluster, "pod-b");
    let plugin = plugin_path("example-16-indexing").unwrap();
    let kopf = cluster.run_kopf(&plugin, &[]);

    cluster.create("kex-indexing");
    wait_for(
        DEADLINE,
        "the indexed pods in status",
        pods_are(&cluster, &["pod-a", "pod-b"]),
    )
    .unwrap();
    let first = cluster.get("kex-indexing").unwrap();
    assert_ne!(
        first["status"]["list_pods"]["pods"],
        json!([]),
        "the index was read before it was complete"
    );

    create_pod(&cluster, "pod-c");
    wait_for(
        DEADLINE,
        "a new pod in the index",
        pods_are(&cluster, &["pod-a", "pod-b", "pod-c"]),
    )
    .unwrap();
    cluster
        .runtime
        .block_on(
            cluster
                .emulator
                .delete_object("v1", "pods", Some("default"), "pod-a"),
        )
        .unwrap();
    wait_for(
        DEADLINE,
        "a deleted pod leaving the index",
        pods_are(&cluster, &["pod-b", "pod-c"]),
    )
    .unwrap();
    stop(kopf);
}
