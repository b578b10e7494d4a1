//! Bounds of issue 18 outside the handler pipeline: the real `kopf` binary against the
//! emulator with fault injection (relists after 410 Gone).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kopf_e2e::cluster::TestCluster;
use kopf_e2e::{KopfProcess, plugin_path, wait_for, workspace_root};
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
