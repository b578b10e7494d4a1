//! `owns` end to end (beyond Kopf; Kopf #58, #150, #317; kube-rs's `Controller::owns`):
//! the real `kopf` binary with the `owns` fixture plugin. A KopfExample's create handler
//! adopts a ConfigMap child; an event handler of KopfExamples with `owns = "v1/configmaps"`
//! runs for the parent whenever the child changes, with the child in `ctx.owned()`, and
//! patches the parent. The fixture records each run (`KOPF_OWNS_RECORD`).

mod reactor_common;

use kopf_e2e::KopfProcess;
use reactor_common::{Cluster, DEADLINE, NS, fixture};
use serde_json::{Value, json};

const PLUGIN: &str = "fixture-owns";

fn records(cluster: &Cluster) -> Vec<String> {
    std::fs::read_to_string(cluster.path("record"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn configmap(name: &str, value: &str, owner: Option<&Value>) -> Value {
    let mut body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": {"value": value},
    });
    if let Some(owner) = owner {
        body["metadata"]["ownerReferences"] = json!([{
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
        }]);
    }
    body
}

fn get_configmap(cluster: &Cluster, name: &str) -> Value {
    cluster
        .emu
        .get_object("v1", "configmaps", Some(NS), name)
        .unwrap_or_else(|| panic!("the ConfigMap {name} exists"))
}

/// Sets a ConfigMap's `data.value` (not counted).
async fn set_value(cluster: &Cluster, name: &str, value: &str) {
    let mut body = get_configmap(cluster, name);
    body["data"]["value"] = json!(value);
    if let Some(meta) = body["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    cluster.emu.apply_object(body).await.unwrap();
}

async fn wait_record(cluster: &Cluster, kopf: &KopfProcess, line: &str) {
    let found = || records(cluster).iter().any(|l| l == line);
    let start = std::time::Instant::now();
    while !found() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for the record {line:?}; records: {:#?}\nkopf log:\n{}",
            records(cluster),
            kopf.lines().join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn wait_seen(cluster: &Cluster, kopf: &KopfProcess, parent: &str, child: &str, value: &str) {
    cluster
        .wait_obj(
            parent,
            &format!("status.seen.{child} = {value}"),
            Some(kopf),
            |o| (o?.pointer(&format!("/status/seen/{child}"))? == value).then_some(()),
        )
        .await;
}

/// A child's change runs its parent's `owns` handler with the child (kind, name, event
/// type, body) and the handler's patch lands on the parent, for one PATCH and no GET; an
/// unowned ConfigMap and one owned by an object that is not served wake nobody; once the
/// parent is deleted, its orphaned child's changes wake nobody and break nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_childs_change_wakes_its_parent() {
    let cluster = Cluster::start().await;
    let plugin = fixture(PLUGIN);
    let stranger = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "not-served", "uid": "00000000-0000-0000-0000-000000000000"},
    });
    cluster
        .emu
        .create_object(configmap("stray", "x", None))
        .await
        .unwrap();
    cluster
        .emu
        .create_object(configmap("foreign", "x", Some(&stranger)))
        .await
        .unwrap();
    let record = cluster.path("record").display().to_string();
    let kopf = cluster.spawn_kopf_with(
        &["--standalone", "--verbose"],
        &plugin,
        &[("KOPF_OWNS_RECORD", record)],
    );

    // The create handler adopts the child; its creation wakes the parent.
    cluster.create("p1", "a").await;
    wait_record(&cluster, &kopf, "p1 p1-child ADDED a ConfigMap/configmaps").await;
    wait_seen(&cluster, &kopf, "p1", "p1-child", "a").await;
    let child = get_configmap(&cluster, "p1-child");
    assert_eq!(child["metadata"]["ownerReferences"][0]["name"], "p1", "{child}");
    // The creation's own cycle is over (its patch may follow the child's wake-up).
    cluster
        .wait_obj("p1", "the creation handled", Some(&kopf), |o| {
            let o = o?;
            (reactor_common::last_handled(o).is_some() && o.pointer("/status/make_child").is_some())
                .then_some(())
        })
        .await;
    wait_record(&cluster, &kopf, "p1 self MODIFIED").await;

    // A change of the child: one run for the parent, one PATCH of the parent, no GET.
    let counted = !cluster.emu.is_real();
    cluster.emu.reset_counters();
    set_value(&cluster, "p1-child", "b").await;
    wait_record(&cluster, &kopf, "p1 p1-child MODIFIED b ConfigMap/configmaps").await;
    wait_seen(&cluster, &kopf, "p1", "p1-child", "b").await;
    if counted {
        let counters = cluster.emu.counters();
        let patches = counters.get("patch", "kopfexamples") + counters.get("patch", "kopfexamples/status");
        assert_eq!(patches, 1, "{counters:#?}");
        assert_eq!(counters.get("get", "kopfexamples"), 0, "{counters:#?}");
        assert_eq!(counters.get("list", "kopfexamples"), 0, "{counters:#?}");
    }

    // Unowned (or owned by what is not served): nobody wakes. The stream is in order, so
    // the child's change after them is recorded only after they would have been.
    set_value(&cluster, "stray", "y").await;
    set_value(&cluster, "foreign", "y").await;
    set_value(&cluster, "p1-child", "c").await;
    wait_record(&cluster, &kopf, "p1 p1-child MODIFIED c ConfigMap/configmaps").await;
    let woken: Vec<_> = records(&cluster)
        .into_iter()
        .filter(|l| l.contains("stray") || l.contains("foreign"))
        .collect();
    assert!(woken.is_empty(), "{woken:?}");

    // The parent goes (and its child with it: garbage collection); a child that names
    // the deleted parent wakes nobody, and the operator carries on with another parent.
    let p1 = cluster.get("p1").unwrap();
    cluster.delete("p1").await;
    cluster
        .wait_obj("p1", "the parent deleted", Some(&kopf), |o| {
            o.is_none().then_some(())
        })
        .await;
    wait_record(&cluster, &kopf, "p1 self DELETED").await;
    cluster
        .emu
        .create_object(configmap("orphaned", "orphaned", Some(&p1)))
        .await
        .unwrap();
    cluster.create("p2", "z").await;
    wait_record(&cluster, &kopf, "p2 p2-child ADDED z ConfigMap/configmaps").await;
    set_value(&cluster, "p2-child", "zz").await;
    wait_record(&cluster, &kopf, "p2 p2-child MODIFIED zz ConfigMap/configmaps").await;
    let orphaned: Vec<_> = records(&cluster)
        .into_iter()
        .filter(|l| l.contains("orphaned"))
        .collect();
    assert!(orphaned.is_empty(), "{orphaned:?}");
    assert!(
        !kopf.lines().iter().any(|l| l.contains("panicked")),
        "{}",
        kopf.lines().join("\n")
    );
    // The ConfigMaps carry nothing of kopf's: they are watched, never handled.
    let stray = get_configmap(&cluster, "stray");
    assert!(stray["metadata"].get("annotations").is_none(), "{stray}");
    assert!(stray["metadata"].get("finalizers").is_none(), "{stray}");
    tokio::task::block_in_place(|| {
        let mut kopf = kopf;
        kopf.stop_gracefully(DEADLINE)
    })
    .unwrap();
}

/// `kopf rbac` grants the owned kind `list` and `watch`, nothing more (the owners'
/// handlers patch the owners only); without it, the operator could not watch the children.
#[test]
fn rbac_lists_and_watches_owned_kinds() {
    let plugin = fixture_path(PLUGIN);
    let crd = kopf_e2e::workspace_root().join("examples/crd.yaml");
    let out = kopf_e2e::run_kopf([
        "rbac",
        "-A",
        "-f",
        crd.to_str().unwrap(),
        plugin.to_str().unwrap(),
    ])
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let role = serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|d| d["kind"] == "ClusterRole")
        .unwrap_or_else(|| panic!("no ClusterRole in {text}"));
    let rules: Vec<&Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|x| x == "configmaps"))
        })
        .collect();
    assert_eq!(rules.len(), 1, "{text}");
    assert_eq!(rules[0]["apiGroups"], json!([""]), "{text}");
    assert_eq!(rules[0]["resources"], json!(["configmaps"]), "{text}");
    assert_eq!(rules[0]["verbs"], json!(["list", "watch"]), "{text}");
}

fn fixture_path(name: &str) -> std::path::PathBuf {
    kopf_e2e::plugin_path(name).unwrap()
}

/// With `--sharding`, an owner may be another replica's and its wake-up would be lost:
/// `kopf run` refuses `owns` handlers there (exit 1, one clear line) rather than half-work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owns_is_refused_with_sharding() {
    let cluster = Cluster::start().await;
    let plugin = fixture(PLUGIN);
    let mut kopf = tokio::task::block_in_place(|| {
        KopfProcess::spawn_with_env(
            [
                "run".as_ref(),
                "-A".as_ref(),
                "--sharding".as_ref(),
                "default/ring".as_ref(),
                plugin.as_os_str(),
            ],
            [("KUBECONFIG", cluster.kubeconfig.as_os_str())],
        )
    })
    .unwrap();
    let status = tokio::task::block_in_place(|| kopf.wait_exit(DEADLINE)).unwrap();
    assert_eq!(status.code(), Some(1), "{}", kopf.lines().join("\n"));
    assert!(
        kopf.lines()
            .iter()
            .any(|l| l.contains("`owns` are not supported with --sharding")),
        "{}",
        kopf.lines().join("\n")
    );
}

/// `kopf inspect` shows the owned kinds as selectors.
#[test]
fn inspect_shows_owned_kinds() {
    let plugin = fixture_path(PLUGIN);
    let out = kopf_e2e::run_kopf(["inspect", plugin.to_str().unwrap()]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("reconcile"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("owns=[configmaps.v1]"), "{text}");
}
