//! `kopf rbac`: the generated rules for example plugins, and an operator running on the
//! emulator with a ServiceAccount token bound to exactly those rules (the emulator enforces
//! RBAC for such tokens).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kopf_e2e::{KopfProcess, plugin_path, run_kopf, wait_for, workspace_root};
use serde_json::{Value, json};

/// Runs `kopf rbac ARGS...` and returns the YAML documents.
fn rbac(args: &[&str]) -> Vec<Value> {
    let out = run_kopf(std::iter::once("rbac").chain(args.iter().copied())).unwrap();
    assert!(
        out.status.success(),
        "kopf rbac failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    docs(&String::from_utf8(out.stdout).unwrap())
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The rules of a (Cluster)Role as `"group resource" -> verbs`.
fn rules_of(docs: &[Value], kind: &str, namespace: Option<&str>) -> BTreeMap<String, BTreeSet<String>> {
    let role = docs
        .iter()
        .find(|d| {
            d["kind"] == kind
                && d.pointer("/metadata/namespace").and_then(Value::as_str) == namespace
                && !d["metadata"]["name"].as_str().unwrap().ends_with("-lease")
        })
        .unwrap_or_else(|| panic!("no {kind} in {namespace:?}: {docs:#?}"));
    let mut out = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                let verbs = rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned());
                out.entry(format!("{} {}", g.as_str().unwrap(), r.as_str().unwrap()))
                    .or_insert_with(BTreeSet::new)
                    .extend(verbs);
            }
        }
    }
    out
}

fn expect(pairs: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

fn crd() -> String {
    workspace_root().join("examples/crd.yaml").display().to_string()
}

#[test]
fn minimal_example_cluster_wide() {
    let plugin = plugin_path("example-01-minimal").unwrap();
    let docs = rbac(&["-A", "-f", &crd(), plugin.to_str().unwrap()]);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]);
    assert_eq!(
        rules_of(&docs, "ClusterRole", None),
        expect(&[
            (" events", &["create"]),
            (
                "apiextensions.k8s.io customresourcedefinitions",
                &["list", "watch"]
            ),
            ("kopf.dev clusterkopfpeerings", &["get", "list", "patch", "watch"]),
            ("kopf.dev kopfexamples", &["get", "list", "patch", "watch"]),
            ("kopf.dev kopfexamples/status", &["patch"]),
        ])
    );
    let binding = &docs[2];
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "kopf-operator", "namespace": "default"}])
    );
}

#[test]
fn minimal_example_namespaced_standalone_with_lease() {
    let plugin = plugin_path("example-01-minimal").unwrap();
    let docs = rbac(&[
        "-n",
        "ns1",
        "-n",
        "ns2",
        "--standalone",
        "--lease",
        "kopf/leader",
        "-f",
        &crd(),
        plugin.to_str().unwrap(),
    ]);
    assert_eq!(
        rules_of(&docs, "ClusterRole", None),
        expect(&[(
            "apiextensions.k8s.io customresourcedefinitions",
            &["list", "watch"]
        )])
    );
    for ns in ["ns1", "ns2"] {
        assert_eq!(
            rules_of(&docs, "Role", Some(ns)),
            expect(&[
                (" events", &["create"]),
                ("kopf.dev kopfexamples", &["get", "list", "patch", "watch"]),
                ("kopf.dev kopfexamples/status", &["patch"]),
            ]),
            "{ns}"
        );
    }
    let lease = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "kopf-operator-lease" && d["kind"] == "Role")
        .unwrap();
    assert_eq!(lease["metadata"]["namespace"], "kopf");
    assert_eq!(lease["rules"][1]["resourceNames"], json!(["leader"]));
}

#[test]
fn namespace_globs_need_cluster_roles_and_namespace_watching() {
    let plugin = plugin_path("example-01-minimal").unwrap();
    let docs = rbac(&["-n", "team-*", "-f", &crd(), plugin.to_str().unwrap()]);
    assert!(!docs.iter().any(|d| d["kind"] == "Role"));
    let rules = rules_of(&docs, "ClusterRole", None);
    assert_eq!(rules[" namespaces"], ["list", "watch"].map(String::from).into());
    assert_eq!(
        rules["kopf.dev kopfpeerings"],
        ["get", "list", "patch", "watch"].map(String::from).into()
    );
}

#[test]
fn all_at_once_example_gets_pods_and_webhook_configurations() {
    let plugin = plugin_path("example-99-all-at-once").unwrap();
    let docs = rbac(&[
        "-A",
        "--standalone",
        "--webhook-managed",
        "auto.kopf.dev",
        "-f",
        &crd(),
        plugin.to_str().unwrap(),
    ]);
    assert_eq!(
        rules_of(&docs, "ClusterRole", None),
        expect(&[
            (" events", &["create"]),
            // Event spies may patch; index handlers alone would only list and watch.
            (" pods", &["get", "list", "patch", "watch"]),
            (" pods/status", &["patch"]),
            (
                "admissionregistration.k8s.io mutatingwebhookconfigurations",
                &["create", "get", "patch"]
            ),
            (
                "admissionregistration.k8s.io validatingwebhookconfigurations",
                &["create", "get", "patch"]
            ),
            (
                "apiextensions.k8s.io customresourcedefinitions",
                &["list", "watch"]
            ),
            ("kopf.dev kopfexamples", &["get", "list", "patch", "watch"]),
            ("kopf.dev kopfexamples/status", &["patch"]),
        ])
    );
}

/// Every rule of every (Cluster)Role that grants `resource`.
fn granting(docs: &[Value], resource: &str) -> Vec<Value> {
    docs.iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .flat_map(|d| d["rules"].as_array().cloned().unwrap_or_default())
        .filter(|rule| {
            rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == resource)
        })
        .collect()
}

/// The verbs granted on `resource` without naming the objects (no `resourceNames`).
fn unnamed_verbs(docs: &[Value], resource: &str) -> BTreeSet<String> {
    granting(docs, resource)
        .into_iter()
        .filter(|rule| rule.get("resourceNames").is_none())
        .flat_map(|rule| rule["verbs"].as_array().cloned().unwrap_or_default())
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The `resourceNames` of every rule granting `resource`.
fn named(docs: &[Value], resource: &str) -> BTreeSet<String> {
    granting(docs, resource)
        .into_iter()
        .flat_map(|rule| rule["resourceNames"].as_array().cloned().unwrap_or_default())
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

/// Managed webhook configurations, their CA Secret and the peering object are the
/// operator's own, by name: only `create` (which cannot be limited by name) is unnamed.
#[test]
fn managed_objects_are_granted_by_name() {
    let plugin = plugin_path("example-17-admission").unwrap();
    let docs = rbac(&[
        "-A",
        "--webhook-managed",
        "auto.kopf.dev",
        "-f",
        &crd(),
        plugin.to_str().unwrap(),
    ]);
    for resource in ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"] {
        assert_eq!(
            unnamed_verbs(&docs, resource),
            BTreeSet::from(["create".to_owned()]),
            "{resource}"
        );
        assert_eq!(
            named(&docs, resource),
            BTreeSet::from(["auto.kopf.dev".to_owned()])
        );
    }
    assert!(
        unnamed_verbs(&docs, "clusterkopfpeerings").is_empty(),
        "{docs:#?}"
    );
    assert_eq!(
        named(&docs, "clusterkopfpeerings"),
        BTreeSet::from(["default".to_owned()])
    );
    // The shared CA of generated certificates: one Secret in the operator's namespace.
    assert_eq!(
        unnamed_verbs(&docs, "secrets"),
        BTreeSet::from(["create".to_owned()])
    );
    assert_eq!(
        named(&docs, "secrets"),
        BTreeSet::from(["auto.kopf.dev-ca".to_owned()])
    );
    let secrets_role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "kopf-operator-webhook-ca")
        .unwrap_or_else(|| panic!("{docs:#?}"));
    assert_eq!(secrets_role["metadata"]["namespace"], "default");

    // Without --webhook-managed, the operator does not touch any configuration.
    let docs = rbac(&["-A", "--standalone", "-f", &crd(), plugin.to_str().unwrap()]);
    assert!(unnamed_verbs(&docs, "validatingwebhookconfigurations").is_empty());
    assert!(named(&docs, "validatingwebhookconfigurations").is_empty());
    assert!(unnamed_verbs(&docs, "secrets").is_empty());
}

/// EVERYTHING handlers get one explicit rule per known resource, not `*`/`*`, and no
/// Secrets unless asked for, with a warning saying so.
#[test]
fn everything_handlers_get_explicit_rules_without_secrets() {
    let plugin = plugin_path("fixture-raw-plugin").unwrap();
    let args = [
        "rbac",
        "-A",
        "--standalone",
        "-f",
        &crd(),
        plugin.to_str().unwrap(),
    ];
    let out = run_kopf(args).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("EVERYTHING") && stderr.contains("--include-secrets"),
        "{stderr}"
    );
    let docs = docs(&String::from_utf8(out.stdout).unwrap());
    let rules = rules_of(&docs, "ClusterRole", None);
    assert!(
        rules.keys().all(|k| !k.split(' ').any(|part| part == "*")),
        "a wildcard rule: {rules:#?}"
    );
    let all = ["get", "list", "patch", "watch"].map(String::from).into();
    assert_eq!(rules.get(" configmaps"), Some(&all), "{rules:#?}");
    assert_eq!(rules.get("apps deployments"), Some(&all), "{rules:#?}");
    assert!(!rules.contains_key(" secrets"), "{rules:#?}");

    let with = rbac(&[
        "-A",
        "--standalone",
        "--include-secrets",
        "-f",
        &crd(),
        plugin.to_str().unwrap(),
    ]);
    assert_eq!(rules_of(&with, "ClusterRole", None).get(" secrets"), Some(&all));
}

#[test]
fn bare_names_without_their_crd_are_a_clear_error() {
    let plugin = plugin_path("example-01-minimal").unwrap();
    let out = run_kopf(["rbac", "-A", plugin.to_str().unwrap()]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot resolve the resource \"kopfexamples\" without a cluster")
            && err.contains("-f FILE"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn deploy_rbac_matches_the_generator() {
    let plugin = plugin_path("example-01-minimal").unwrap();
    let generated = rbac(&["-A", "-f", &crd(), plugin.to_str().unwrap()]);
    let committed = docs(&std::fs::read_to_string(workspace_root().join("deploy/rbac.yaml")).unwrap());
    assert_eq!(
        committed, generated,
        "deploy/rbac.yaml is stale: regenerate it with kopf rbac"
    );
}

/// Starts an emulator with the CRD, the generated RBAC (optionally edited) and a token for
/// the ServiceAccount; returns the emulator and a kubeconfig using that token.
async fn cluster_with_rbac(
    edit: impl FnOnce(&mut Vec<Value>),
) -> (
    kopf_testing::EmulatorHandle,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let plugin = plugin_path("example-01-minimal").unwrap();
    let mut docs = rbac(&["-A", "-f", &crd(), plugin.to_str().unwrap()]);
    edit(&mut docs);
    let emu = kopf_testing::Emulator::builder().start().await.unwrap();
    emu.apply_yaml(&std::fs::read_to_string(crd()).unwrap())
        .await
        .unwrap();
    for doc in docs {
        emu.apply_object(doc).await.unwrap();
    }
    emu.add_token("sa-token-1", "system:serviceaccount:default:kopf-operator");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, emu.kubeconfig_yaml_with_token("sa-token-1")).unwrap();
    (emu, dir, kubeconfig)
}

async fn create_example(emu: &kopf_testing::EmulatorHandle) {
    emu.create_object(json!({
        "apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"name": "kex-rbac", "namespace": "default"}, "spec": {"field": "x"},
    }))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_with_exactly_the_generated_rbac() {
    let (emu, _dir, kubeconfig) = cluster_with_rbac(|_| {}).await;
    let plugin = plugin_path("example-01-minimal").unwrap();
    let mut kopf = KopfProcess::spawn_with_env(
        ["run", "-A", "--verbose", plugin.to_str().unwrap()],
        [("KUBECONFIG", kubeconfig.as_os_str())],
    )
    .unwrap();
    kopf.wait_for_line("The operator is ready", Duration::from_secs(60))
        .unwrap();
    create_example(&emu).await;
    let status = wait_for(Duration::from_secs(30), "status.create_fn", || {
        emu.get_object("kopf.dev/v1", "kopfexamples", Some("default"), "kex-rbac")
            .and_then(|o| o.pointer("/status/create_fn").cloned())
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", kopf.lines().join("\n")));
    assert_eq!(status, json!({"message": "hello world"}));
    // Every request of the operator was authorised by the generated rules.
    let counters = emu.counters();
    assert_eq!(
        counters.status(403),
        0,
        "forbidden requests: {:?}\n{}",
        counters,
        kopf.lines().join("\n")
    );
    assert!(
        counters.by_user.get("sa-token-1").copied().unwrap_or(0) > 0,
        "{counters:?}"
    );
    kopf.signal("TERM").unwrap();
    kopf.wait_exit(Duration::from_secs(30)).unwrap();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_verb_is_a_clear_permission_error_not_a_crash() {
    // Drop `patch` on kopfexamples (the main resource, not the status).
    let (emu, _dir, kubeconfig) = cluster_with_rbac(|docs| {
        let role = docs.iter_mut().find(|d| d["kind"] == "ClusterRole").unwrap();
        for rule in role["rules"].as_array_mut().unwrap() {
            if rule["resources"] == json!(["kopfexamples"]) {
                rule["verbs"] = json!(["list", "watch"]);
            }
        }
    })
    .await;
    let plugin = plugin_path("example-01-minimal").unwrap();
    let mut kopf = KopfProcess::spawn_with_env(
        ["run", "-A", "--verbose", plugin.to_str().unwrap()],
        [("KUBECONFIG", kubeconfig.as_os_str())],
    )
    .unwrap();
    kopf.wait_for_line("The operator is ready", Duration::from_secs(60))
        .unwrap();
    create_example(&emu).await;
    let expected = "cannot patch resource \\\"kopfexamples\\\" in API group \\\"kopf.dev\\\"";
    let plain = "cannot patch resource \"kopfexamples\" in API group \"kopf.dev\"";
    let line = wait_for(Duration::from_secs(30), "a permission error in the log", || {
        kopf.lines()
            .into_iter()
            .find(|l| l.contains(plain) || l.contains(expected))
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", kopf.lines().join("\n")));
    eprintln!("the permission error as logged: {line}");
    assert!(emu.counters().status(403) > 0);
    // Still running (`kill -0` succeeds): a permission problem is logged, not fatal.
    assert!(
        kopf.signal("0").is_ok(),
        "the operator exited:\n{}",
        kopf.lines().join("\n")
    );
    kopf.signal("TERM").unwrap();
    kopf.wait_exit(Duration::from_secs(30)).unwrap();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_enforces_rbac_only_for_service_account_tokens() {
    let emu = kopf_testing::Emulator::builder().start().await.unwrap();
    emu.apply_yaml(&std::fs::read_to_string(crd()).unwrap())
        .await
        .unwrap();
    emu.add_token("t-sa", "system:serviceaccount:ns:sa");
    emu.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n")
        .await
        .unwrap();
    // A Secret-held token works too.
    emu.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: sa2-token, namespace: ns, annotations: \
         {kubernetes.io/service-account.name: sa2}}\ntype: kubernetes.io/service-account-token\n\
         data: {token: dC1zYTI=}\n",
    )
    .await
    .unwrap();
    let client = |token: &str| {
        let yaml = emu.kubeconfig_yaml_with_token(token);
        async move {
            let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            kube::Client::try_from(config).unwrap()
        }
    };
    let list = |c: kube::Client| async move {
        let req = http::Request::get("/apis/kopf.dev/v1/namespaces/default/kopfexamples")
            .body(vec![])
            .unwrap();
        c.request::<Value>(req).await
    };
    // The kubeconfig's own user and unknown tokens are not subject to RBAC.
    assert!(list(client(kopf_testing::KUBECONFIG_USER).await).await.is_ok());
    assert!(list(client("someone-else").await).await.is_ok());
    for token in ["t-sa", "t-sa2"] {
        let err = list(client(token).await).await.unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err:?}")
        };
        assert_eq!(status.code, 403);
        let user = if token == "t-sa" { "sa" } else { "sa2" };
        assert_eq!(
            status.message,
            format!(
                "kopfexamples.kopf.dev is forbidden: User \"system:serviceaccount:ns:{user}\" cannot list resource \
                 \"kopfexamples\" in API group \"kopf.dev\" in the namespace \"default\""
            )
        );
    }
    // A RoleBinding in `default` to a ClusterRole grants it there only.
    emu.apply_yaml(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader}\nrules:\n\
         - {apiGroups: [kopf.dev], resources: [kopfexamples], verbs: [list]}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: r, namespace: default}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}\n\
         subjects: [{kind: ServiceAccount, name: sa, namespace: ns}]\n",
    )
    .await
    .unwrap();
    assert!(list(client("t-sa").await).await.is_ok());
    assert!(list(client("t-sa2").await).await.is_err());
    let other = http::Request::get("/apis/kopf.dev/v1/namespaces/other/kopfexamples")
        .body(vec![])
        .unwrap();
    assert!(client("t-sa").await.request::<Value>(other).await.is_err());
    emu.shutdown().await;
}
