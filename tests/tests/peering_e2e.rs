//! Peering and Lease elections end to end: real `kopf` processes (and Python Kopf) against
//! the emulator, with the `example-06-peering` plugin recording every handled creation as
//! a line `NAMESPACE/NAME IDENTITY` in a side-effects file.
//!
//! What is asserted comes from the handlers' own side effects (who handled which object,
//! how many times) and from the operators' logs (pausing, resuming, warnings).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kopf_e2e::cluster::TestCluster;
use kopf_e2e::{KopfProcess, plugin_path, run_kopf, wait_for, workspace_root};
use kopf_testing::{FaultKind, FaultMatch};
use serde_json::{Value, json};

/// Generous: a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);
/// The peering lifetime used in these tests (seconds).
const LIFETIME: u64 = 4;

/// A cluster (emulator or real API server) on its own runtime (the test thread blocks while waiting), plus files.
struct Cluster {
    runtime: tokio::runtime::Runtime,
    emu: TestCluster,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    effects: PathBuf,
}

impl Cluster {
    fn start(files: &[&str]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emu = runtime.block_on(TestCluster::start()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig).unwrap();
        let effects = dir.path().join("side-effects.txt");
        let cluster = Self {
            runtime,
            emu,
            dir,
            kubeconfig,
            effects,
        };
        for file in files {
            let text = std::fs::read_to_string(workspace_root().join(file)).unwrap();
            cluster.runtime.block_on(cluster.emu.apply_yaml(&text)).unwrap();
        }
        cluster
    }

    fn envs(&self, identity: &str) -> Vec<(String, String)> {
        vec![
            ("KUBECONFIG".into(), self.kubeconfig.display().to_string()),
            ("POD_ID".into(), identity.into()),
            (
                "KOPF_EXAMPLE_SIDE_EFFECTS".into(),
                self.effects.display().to_string(),
            ),
            ("KOPF_PEERING_LIFETIME".into(), LIFETIME.to_string()),
            ("KOPF_LEASE_DURATION".into(), "3".into()),
        ]
    }

    /// Starts `kopf run ARGS... <plugin>` as `identity` and waits until it is ready.
    fn kopf(&self, identity: &str, args: &[&str]) -> KopfProcess {
        let plugin = plugin_path("example-06-peering").unwrap();
        let mut all: Vec<String> = vec!["run".into(), "-v".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.push(plugin.display().to_string());
        let mut process = KopfProcess::spawn_with_env(all, self.envs(identity)).unwrap();
        process.wait_for_line("The operator is ready", DEADLINE).unwrap();
        process
    }

    /// As [`Self::kopf`], with a kubeconfig of its own holding the token
    /// [`token_of`]`(identity)` (the emulator lets unknown tokens through unchecked).
    fn kopf_with_token(&self, identity: &str, args: &[&str]) -> KopfProcess {
        let kubeconfig = self.dir.path().join(format!("kubeconfig-{identity}"));
        std::fs::write(
            &kubeconfig,
            self.emu.kubeconfig_yaml_with_token(&token_of(identity)),
        )
        .unwrap();
        let plugin = plugin_path("example-06-peering").unwrap();
        let mut all: Vec<String> = vec!["run".into(), "-v".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.push(plugin.display().to_string());
        let mut envs = self.envs(identity);
        envs.retain(|(k, _)| k != "KUBECONFIG");
        envs.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        let mut process = KopfProcess::spawn_with_env(all, envs).unwrap();
        process.wait_for_line("The operator is ready", DEADLINE).unwrap();
        process
    }

    /// Runs `kopf peering ARGS...` to completion against the emulator.
    fn peering(&self, args: &[&str]) -> std::process::Output {
        self.command(&[&["peering"], args].concat())
    }

    /// `kopf ARGS...` against this cluster.
    fn command(&self, args: &[&str]) -> std::process::Output {
        let bin = kopf_e2e::kopf_bin().unwrap();
        Command::new(bin)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn create(&self, name: &str) {
        let obj = json!({
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfExample",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"field": name},
        });
        self.runtime.block_on(self.emu.create_object(obj)).unwrap();
    }

    fn object(&self, api_version: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        self.emu.get_object(api_version, plural, ns, name)
    }

    /// The side effects: object → identities that handled it, in order.
    fn effects(&self) -> BTreeMap<String, Vec<String>> {
        let text = std::fs::read_to_string(&self.effects).unwrap_or_default();
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some((object, identity)) = line.split_once(' ') {
                map.entry(object.to_owned())
                    .or_default()
                    .push(identity.to_owned());
            }
        }
        map
    }

    /// Waits until `name` was handled and that is persisted: the handler's result in its
    /// status and the diff-base in its annotations (two patches; an operator killed
    /// between them re-runs the handler elsewhere, which is Kopf's at-least-once).
    fn wait_handled(&self, name: &str) -> Vec<String> {
        wait_for(DEADLINE, &format!("{name} to be handled"), || {
            let obj = self.object("kopf.dev/v1", "kopfexamples", Some("default"), name)?;
            obj.pointer("/status/create_fn")?;
            obj.pointer("/metadata/annotations/kopf.zalando.org~1last-handled-configuration")?;
            self.effects().get(&format!("default/{name}")).cloned()
        })
        .unwrap_or_else(|e| {
            let obj = self.object("kopf.dev/v1", "kopfexamples", Some("default"), name);
            panic!("{e}: {obj:#?}; effects: {:?}", self.effects())
        })
    }

    /// Asserts that every object was handled exactly once, and returns who handled it.
    fn assert_exactly_once(&self) -> BTreeMap<String, String> {
        self.effects()
            .into_iter()
            .map(|(object, ids)| {
                assert_eq!(ids.len(), 1, "{object} handled {} times: {ids:?}", ids.len());
                (object, ids[0].clone())
            })
            .collect()
    }
}

/// The bearer token of a replica started with [`Cluster::kopf_with_token`].
fn token_of(identity: &str) -> String {
    format!("token-{identity}")
}

fn kill9(process: &KopfProcess) {
    process.signal("KILL").unwrap();
}

fn files() -> [&'static str; 3] {
    [
        "examples/crd.yaml",
        "deploy/peering-crds.yaml",
        "deploy/peering-objects.yaml",
    ]
}

#[test]
fn higher_priority_works_lower_takes_over_after_kill9() {
    let cluster = Cluster::start(&files());
    let high = cluster.kopf("high", &["-A", "--priority", "200"]);
    let mut low = cluster.kopf("low", &["-A", "--priority", "100"]);
    low.wait_for_line("Pausing operations in favour of high", DEADLINE)
        .unwrap();
    for name in ["a1", "a2", "a3"] {
        cluster.create(name);
    }
    for name in ["a1", "a2", "a3"] {
        assert_eq!(cluster.wait_handled(name), ["high"], "{name}");
    }

    kill9(&high);
    // Objects created during the hand-over are handled by the survivor, once.
    for name in ["b1", "b2", "b3"] {
        cluster.create(name);
    }
    low.wait_for_line("Resuming operations", Duration::from_secs(LIFETIME + 20))
        .unwrap();
    for name in ["b1", "b2", "b3"] {
        assert_eq!(cluster.wait_handled(name), ["low"], "{name}");
    }
    cluster.create("c1");
    assert_eq!(cluster.wait_handled("c1"), ["low"]);
    let handled = cluster.assert_exactly_once();
    assert_eq!(handled.len(), 7);

    // The dead peer's record was cleaned by the survivor.
    wait_for(DEADLINE, "the dead peer's record to be cleaned", || {
        let peering = cluster.object("kopf.dev/v1", "clusterkopfpeerings", None, "default")?;
        let status = peering.get("status")?.as_object()?;
        (!status.contains_key("high") && status.contains_key("low")).then_some(())
    })
    .unwrap();
}

/// A replica that starts while the peering object cannot be read or written must not
/// work before it has seen the peers: a live higher-priority peer may be working.
#[test]
fn a_replica_stays_paused_until_its_first_keepalive_is_answered() {
    if kopf_e2e::cluster::emulator_only("503s injected on the peering object") {
        return;
    }
    let cluster = Cluster::start(&files());
    // A live higher-priority peer (no `lastseen`: Kopf takes it as seen now).
    let peering = |status: Value| {
        json!({
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": "default"},
            "status": status,
        })
    };
    let ghost = peering(json!({"ghost": {"priority": 500, "lifetime": 3600}}));
    cluster.runtime.block_on(cluster.emu.apply_object(ghost)).unwrap();
    cluster.create("g1");
    let faults = cluster.emu.expect_emulator("fault injection").faults();
    let peerings = FaultMatch {
        resource: Some("clusterkopfpeerings".into()),
        ..FaultMatch::default()
    };
    faults.fail_ratio(1.0, peerings, FaultKind::Status(503));

    let plugin = plugin_path("example-06-peering").unwrap();
    let args = ["run", "-v", "-A", "--priority", "100"].map(String::from);
    let args = args.into_iter().chain([plugin.display().to_string()]);
    let mut low = KopfProcess::spawn_with_env(args, cluster.envs("low")).unwrap();
    // The start does not wait for peering forever: the reactor starts, paused.
    low.wait_for_line("The operator is ready", DEADLINE).unwrap();
    let refused = low.lines().iter().filter(|l| l.contains("503")).count();
    assert!(refused > 0, "the keep-alives were not refused");
    let watched = |c: &Cluster| {
        let counters = c.emu.counters();
        counters.get("list", "kopfexamples") + counters.get("watch", "kopfexamples")
    };
    assert_eq!(watched(&cluster), 0, "watched before seeing the peers");

    faults.clear();
    low.wait_for_line("Pausing operations in favour of ghost", DEADLINE)
        .unwrap();
    assert_eq!(watched(&cluster), 0, "watched beside a higher-priority peer");
    assert!(
        cluster.effects().is_empty(),
        "handled beside a higher-priority peer"
    );

    // The peer leaves: the replica resumes and handles what waited.
    cluster
        .runtime
        .block_on(cluster.emu.apply_object(peering(json!({}))))
        .unwrap();
    low.wait_for_line("Resuming operations", DEADLINE).unwrap();
    assert_eq!(cluster.wait_handled("g1"), ["low"]);
}

#[test]
fn equal_priorities_pause_both_with_a_warning() {
    let cluster = Cluster::start(&files());
    let mut one = cluster.kopf("one", &["-A", "--priority", "100"]);
    let mut two = cluster.kopf("two", &["-A", "--priority", "100"]);
    for process in [&mut one, &mut two] {
        process
            .wait_for_line("Possibly conflicting operators with the same priority", DEADLINE)
            .unwrap();
        process
            .wait_for_line("Pausing all operators, including self", DEADLINE)
            .unwrap();
    }
    cluster.create("x1");
    // Both paused: nothing handled while both live. A graceful exit removes the record
    // of one; the other resumes and handles the object once.
    assert!(cluster.effects().is_empty(), "handled while both were paused");
    two.signal("TERM").unwrap();
    assert!(two.wait_exit(DEADLINE).unwrap().success());
    one.wait_for_line("Resuming operations", DEADLINE).unwrap();
    assert_eq!(cluster.wait_handled("x1"), ["one"]);
    cluster.assert_exactly_once();
}

#[test]
fn freeze_pauses_and_resume_restarts() {
    let cluster = Cluster::start(&files());
    let mut op = cluster.kopf("op", &["-A"]);
    let out = cluster.peering(&[
        "freeze",
        "-A",
        "-i",
        "admin",
        "--lifetime",
        "600",
        "--priority",
        "100",
        "-m",
        "maintenance",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    op.wait_for_line("Pausing operations in favour of admin", DEADLINE)
        .unwrap();

    let out = cluster.peering(&["list", "-A"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let row = |id: &str| table.lines().find(|l| l.contains(id)).map(str::to_owned);
    assert!(
        row("admin").is_some_and(|r| r.contains("100") && r.ends_with("alive")),
        "{table}"
    );
    assert!(row("op").is_some_and(|r| r.ends_with("alive")), "{table}");

    cluster.create("f1");
    assert!(cluster.effects().is_empty(), "handled while frozen");
    let out = cluster.peering(&["resume", "-A", "-i", "admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    op.wait_for_line("Resuming operations", DEADLINE).unwrap();
    assert_eq!(cluster.wait_handled("f1"), ["op"]);
    cluster.assert_exactly_once();
}

/// Kopf's top-level `kopf freeze` and `kopf resume` work as `kopf peering freeze/resume`.
#[test]
fn top_level_freeze_and_resume_as_in_kopf() {
    let cluster = Cluster::start(&files());
    let mut op = cluster.kopf("op", &["-A"]);
    let out = cluster.command(&["freeze", "-A", "-i", "admin", "--lifetime", "600"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    op.wait_for_line("Pausing operations in favour of admin", DEADLINE)
        .unwrap();
    let out = cluster.command(&["resume", "-A", "-i", "admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    op.wait_for_line("Resuming operations", DEADLINE).unwrap();
    cluster.create("t1");
    assert_eq!(cluster.wait_handled("t1"), ["op"]);
}

#[test]
fn mandatory_peering_waits_for_the_object() {
    let cluster = Cluster::start(&["examples/crd.yaml", "deploy/peering-crds.yaml"]);
    let mut op = cluster.kopf("op", &["-A", "--peering", "mine"]);
    op.wait_for_line("does not exist: pausing until it does", DEADLINE)
        .unwrap();
    cluster.create("m1");
    assert!(
        cluster.effects().is_empty(),
        "handled before the peering object existed"
    );
    let out = cluster.peering(&["install", "--apply", "-A", "-P", "mine"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cluster.wait_handled("m1"), ["op"]);
    // The operator adds its record to the new object.
    wait_for(
        DEADLINE,
        "the operator's record in the new peering object",
        || {
            cluster
                .object("kopf.dev/v1", "clusterkopfpeerings", None, "mine")?
                .pointer("/status/op/priority")
                .map(|_| ())
        },
    )
    .unwrap();
}

#[test]
fn namespaced_operators_use_kopfpeering_per_namespace() {
    let cluster = Cluster::start(&files());
    let _high = cluster.kopf("nhigh", &["-n", "default", "--priority", "5"]);
    let mut low = cluster.kopf("nlow", &["-n", "default", "--priority", "1"]);
    low.wait_for_line("Pausing operations in favour of nhigh", DEADLINE)
        .unwrap();
    let peering = cluster
        .object("kopf.dev/v1", "kopfpeerings", Some("default"), "default")
        .unwrap();
    assert_eq!(peering.pointer("/status/nlow/priority"), Some(&json!(1)));
    assert_eq!(peering.pointer("/status/nlow/lifetime"), Some(&json!(LIFETIME)));
    cluster.create("n1");
    assert_eq!(cluster.wait_handled("n1"), ["nhigh"]);
}

#[test]
fn peering_commands_clean_install_and_explain_errors() {
    // No CRDs: a clear error.
    let bare = Cluster::start(&[]);
    let out = bare.peering(&["list", "-A"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kopf peering install --apply"), "{err}");

    // `install` prints the CRDs of deploy/.
    let out = bare.peering(&["install"]);
    assert!(out.status.success());
    let deployed = std::fs::read_to_string(workspace_root().join("deploy/peering-crds.yaml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), deployed);

    // `install --apply -n` creates the CRDs and the namespaced object.
    let out = bare.peering(&["install", "--apply", "-n", "default"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        bare.object("kopf.dev/v1", "kopfpeerings", Some("default"), "default")
            .is_some()
    );

    // `clean` removes dead records only.
    let dead = json!({"priority": 1, "lifetime": 1, "lastseen": "2020-01-01T00:00:00+00:00"});
    let alive = json!({"priority": 2, "lifetime": 3600, "lastseen": "2099-01-01T00:00:00.000000+00:00"});
    bare.runtime
        .block_on(bare.emu.apply_object(json!({
            "apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
            "metadata": {"name": "default", "namespace": "default"},
            "status": {"ghost": dead, "living": alive},
        })))
        .unwrap();
    let out = bare.peering(&["clean", "-n", "default"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Cleaned 1 dead peer"));
    let peering = bare
        .object("kopf.dev/v1", "kopfpeerings", Some("default"), "default")
        .unwrap();
    assert!(peering.pointer("/status/ghost").is_none(), "{peering}");
    assert!(peering.pointer("/status/living").is_some(), "{peering}");
    let out = bare.peering(&["list", "-n", "default"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("living"));

    // Bad usage is rejected by the parser.
    let out = run_kopf(["peering", "freeze", "-A"]).unwrap();
    assert_eq!(out.status.code(), Some(2), "--lifetime is required");
}

#[test]
fn lease_keeps_exactly_one_of_three_replicas_active() {
    let cluster = Cluster::start(&["examples/crd.yaml"]);
    let lease = ["-A", "--standalone", "--lease", "default/kopf-e2e"];
    let mut replicas: BTreeMap<String, KopfProcess> = ["r1", "r2", "r3"]
        .into_iter()
        .map(|id| (id.to_owned(), cluster.kopf(id, &lease)))
        .collect();
    let holder = |c: &Cluster| {
        c.object("coordination.k8s.io/v1", "leases", Some("default"), "kopf-e2e")
            .and_then(|l| {
                l.pointer("/spec/holderIdentity")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
    };
    let mut handled = 0;
    for round in 0..2 {
        let leader = wait_for(DEADLINE, "a live lease holder", || {
            holder(&cluster).filter(|h| replicas.contains_key(h))
        })
        .unwrap();
        replicas
            .get_mut(&leader)
            .unwrap()
            .wait_for_line("Acquired the Lease", DEADLINE)
            .unwrap();
        for i in 0..3 {
            let name = format!("l{round}-{i}");
            cluster.create(&name);
            assert_eq!(
                cluster.wait_handled(&name),
                std::slice::from_ref(&leader),
                "{name}"
            );
            handled += 1;
        }
        // Only the leader ever announced an acquisition among the survivors.
        let announcers: Vec<&String> = replicas
            .iter()
            .filter(|(_, p)| p.lines().iter().any(|l| l.contains("Acquired the Lease")))
            .map(|(id, _)| id)
            .collect();
        assert_eq!(announcers, [&leader], "round {round}");
        let process = replicas.remove(&leader).unwrap();
        kill9(&process);
        drop(process);
    }
    // The last replica: a graceful stop of it releases the lease.
    let last = wait_for(DEADLINE, "the last replica to lead", || {
        holder(&cluster).filter(|h| replicas.contains_key(h))
    })
    .unwrap();
    let mut process = replicas.remove(&last).unwrap();
    process.wait_for_line("Acquired the Lease", DEADLINE).unwrap();
    cluster.create("l-final");
    assert_eq!(cluster.wait_handled("l-final"), std::slice::from_ref(&last));
    process.signal("TERM").unwrap();
    assert!(process.wait_exit(DEADLINE).unwrap().success());
    assert!(process.lines().iter().any(|l| l.contains("Released the Lease")));
    assert_eq!(holder(&cluster), None);
    assert_eq!(cluster.assert_exactly_once().len(), handled + 1);
}

/// A Lease holder whose Lease requests hang (a black hole: no answer, no error) pauses
/// itself once its renew deadline passes, before the follower can take the Lease over:
/// the two replicas are never active at once. Each replica has its own token, so the
/// emulator can single out the holder's requests.
#[test]
fn a_lease_holder_with_hung_renewals_pauses_before_a_follower_takes_over() {
    if kopf_e2e::cluster::emulator_only("the holder's Lease requests black-holed") {
        return;
    }
    let cluster = Cluster::start(&["examples/crd.yaml"]);
    let lease = ["-A", "--standalone", "--lease", "default/kopf-hang"];
    let mut replicas: BTreeMap<String, KopfProcess> = ["h1", "h2"]
        .into_iter()
        .map(|id| (id.to_owned(), cluster.kopf_with_token(id, &lease)))
        .collect();
    let holder = wait_for(DEADLINE, "a lease holder", || {
        cluster
            .object("coordination.k8s.io/v1", "leases", Some("default"), "kopf-hang")?
            .pointer("/spec/holderIdentity")?
            .as_str()
            .filter(|h| replicas.contains_key(*h))
            .map(str::to_owned)
    })
    .unwrap();
    let follower = replicas.keys().find(|id| **id != holder).unwrap().clone();
    replicas
        .get_mut(&holder)
        .unwrap()
        .wait_for_line("Acquired the Lease", DEADLINE)
        .unwrap();
    cluster.create("hang-0");
    assert_eq!(cluster.wait_handled("hang-0"), std::slice::from_ref(&holder));

    let faults = cluster.emu.expect_emulator("fault injection").faults();
    let holders_leases = FaultMatch {
        resource: Some("leases".into()),
        user: Some(token_of(&holder)),
        ..FaultMatch::default()
    };
    faults.fail_ratio(1.0, holders_leases, FaultKind::BlackHole);
    // The follower takes over after the Lease stays unchanged for its duration; by then
    // the holder must have paused (its renew deadline is shorter than the duration).
    let taken = wait_for(DEADLINE, "the follower to take the Lease over", || {
        let lines = replicas[&follower].lines();
        lines
            .iter()
            .any(|l| l.contains("Acquired the Lease"))
            .then_some(())
    });
    let holder_lines = replicas[&holder].lines();
    taken.unwrap_or_else(|e| panic!("{e}\nholder:\n{}", holder_lines.join("\n")));
    assert!(
        holder_lines.iter().any(|l| l.contains("pausing operations")),
        "the follower took over while the hung holder was still active:\n{}",
        holder_lines.join("\n")
    );
    // Objects created now are handled by the new holder only.
    cluster.create("hang-1");
    assert_eq!(cluster.wait_handled("hang-1"), std::slice::from_ref(&follower));

    // The black hole ends: the old holder sees the new one and stays paused.
    faults.clear();
    cluster.create("hang-2");
    assert_eq!(cluster.wait_handled("hang-2"), std::slice::from_ref(&follower));
    assert_eq!(cluster.assert_exactly_once().len(), 3);
}

#[test]
fn lease_replicas_share_a_peering_record_and_yield_to_a_higher_priority() {
    let cluster = Cluster::start(&files());
    let replica = ["-A", "--priority", "100", "--lease", "default/combo"];
    let mut r1 = cluster.kopf("c1", &replica);
    let mut r2 = cluster.kopf("c2", &replica);
    // One shared record for both replicas: no same-priority conflict between them.
    wait_for(DEADLINE, "the replicas' shared peering record", || {
        peer_exists(&cluster, "lease:default/combo").then_some(())
    })
    .unwrap();
    cluster.create("k1");
    let leader = cluster.wait_handled("k1");
    assert!(leader == ["c1"] || leader == ["c2"], "{leader:?}");

    // A developer's operator with --dev pauses the active replica.
    let mut dev = cluster.kopf("dev", &["-A", "--dev"]);
    let active = if leader == ["c1"] { &mut r1 } else { &mut r2 };
    active
        .wait_for_line("Pausing operations in favour of dev", DEADLINE)
        .unwrap();
    cluster.create("k2");
    assert_eq!(cluster.wait_handled("k2"), ["dev"]);

    // The developer leaves: the active replica resumes.
    dev.signal("TERM").unwrap();
    assert!(dev.wait_exit(DEADLINE).unwrap().success());
    active.wait_for_line("Resuming operations", DEADLINE).unwrap();
    cluster.create("k3");
    assert_eq!(cluster.wait_handled("k3"), leader.as_slice());
    for process in [&r1, &r2] {
        assert!(
            !process.lines().iter().any(|l| l.contains("Possibly conflicting")),
            "replicas conflicted:\n{}",
            process.lines().join("\n")
        );
    }
    assert_eq!(cluster.assert_exactly_once().len(), 3);
}

// ---- Interoperability with Python Kopf on the same peering object ----

/// A Python Kopf process, killed on drop.
struct PythonKopf {
    child: Child,
    log: PathBuf,
}

impl PythonKopf {
    fn spawn(cluster: &Cluster, identity: &str, priority: i64) -> Self {
        let script = workspace_root().join("tests/python/peering_operator.py");
        let log = cluster.dir.path().join(format!("python-{identity}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new("python3")
            .args(["-m", "kopf", "run", "-A", "--priority"])
            .arg(priority.to_string())
            .arg(&script)
            .arg("--verbose")
            .envs(cluster.envs(identity))
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_text(&mut self, needle: &str) {
        let found = wait_for(DEADLINE, &format!("Python Kopf to log {needle:?}"), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Python Kopf exited ({status}):\n{}", self.text());
            }
            self.text().contains(needle).then_some(())
        });
        if let Err(e) = found {
            panic!("{e}\n---- Python Kopf log ----\n{}", self.text());
        }
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = wait_for(DEADLINE, "Python Kopf to exit", || {
            self.child.try_wait().ok().flatten()
        });
    }
}

impl Drop for PythonKopf {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- Python Kopf log ({}) ----\n{}",
                self.log.display(),
                self.text()
            );
        }
    }
}

fn peer_exists(cluster: &Cluster, identity: &str) -> bool {
    cluster
        .object("kopf.dev/v1", "clusterkopfpeerings", None, "default")
        .and_then(|p| p.get("status")?.get(identity).cloned())
        .is_some_and(|v| !v.is_null())
}

#[test]
fn python_kopf_with_higher_priority_pauses_kopf_and_vice_versa() {
    if !kopf_e2e::python_kopf_available() {
        return;
    }
    let cluster = Cluster::start(&files());
    // Python (200) over Rust (100).
    let mut python = PythonKopf::spawn(&cluster, "python-high", 200);
    wait_for(DEADLINE, "Python Kopf's keep-alive record", || {
        peer_exists(&cluster, "python-high").then_some(())
    })
    .unwrap();
    let mut rust = cluster.kopf("rust", &["-A", "--priority", "100"]);
    rust.wait_for_line("Pausing operations in favour of python-high", DEADLINE)
        .unwrap();
    cluster.create("p1");
    assert_eq!(cluster.wait_handled("p1"), ["python-high"]);

    // Python exits gracefully (removes its record): Rust resumes.
    python.terminate();
    rust.wait_for_line("Resuming operations", DEADLINE).unwrap();
    cluster.create("p2");
    assert_eq!(cluster.wait_handled("p2"), ["rust"]);

    // Rust (100) over a new Python (50).
    let mut python = PythonKopf::spawn(&cluster, "python-low", 50);
    python.wait_for_text("Pausing operations in favour of");
    cluster.create("p3");
    assert_eq!(cluster.wait_handled("p3"), ["rust"]);
    let handled = cluster.assert_exactly_once();
    assert_eq!(handled.len(), 3);
    assert!(
        !python.text().contains("Handling default/p3"),
        "{}",
        python.text()
    );
}
