//! `kopf rbac`: least-privilege RBAC derived from the plugins' handlers.
//!
//! The rules come from what the operator actually does (Kopf's `docs/deployment-rbac.yaml`,
//! narrowed to the handlers declared):
//!
//! * every served resource: `list`, `watch`; plus `get` and `patch` (and `patch` on
//!   `<plural>/status` when the resource has a status subresource, or when that is unknown)
//!   unless the resource is served only by index handlers: the engine re-reads an object
//!   with `get` after a patch that was refused (the object changed) or failed;
//! * kinds that `owns` handlers own: `list`, `watch` (their changes wake the owners);
//! * `customresourcedefinitions` `list`, `watch` (the operator observes CRDs);
//! * `namespaces` `list`, `watch` only for `-n` glob patterns;
//! * `events` `create` where objects live;
//! * the peering object `get`, `list`, `watch`, `patch` by name (`clusterkopfpeerings`
//!   with `-A`, `kopfpeerings` per namespace with `-n`; `--peering NAME`, default
//!   `default`: the operator watches it with `fieldSelector=metadata.name=NAME`), unless
//!   `--standalone`;
//! * with `--webhook-managed NAME` (and validate/mutate handlers): the two webhook
//!   configurations `get`, `patch` by that name, `create` (which cannot be
//!   limited by name); and in the operator's namespace the Secret `NAME-ca` of the CA the
//!   replicas share (`get` and `patch`, to renew it, by name; `create`);
//! * `leases` `get`, `create`, `update`, `patch` only with `--lease`, by name;
//! * `leases` `list`, `create`, `update`, `delete` only with `--sharding`, in the ring's
//!   namespace (members' Leases are named after their identities, unknown in advance);
//! * EVERYTHING handlers (and callable selectors, which are not asked offline: every
//!   resource they may accept): one rule per resource known at generation time (no `*`), and
//!   no Secrets unless `--include-secrets`; a warning says so, since resources added
//!   later are not covered.
//!
//! Selectors are resolved to API groups and plurals without a cluster: against the
//! built-in resources of Kubernetes and the CRDs given with `-f`. A selector naming a group
//! and a plural is used as written even when unknown. `--discover` resolves against the
//! cluster of the current kubeconfig instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use kopf_abi::protocol::{HandlerKind, ResourceSelector};
use serde_json::{Value, json};

use crate::clients::connection;
use crate::clients::scanning::{self, GroupFilter};
use crate::plugin::{PluginSet, render_selector};
use crate::structs::references::{self, NamespacePattern, Resource};

/// `kopf rbac` arguments.
#[derive(Debug, Args)]
pub struct RbacArgs {
    /// The plugins (`.so` files) whose handlers need the permissions.
    #[arg(value_name = "PLUGIN", required = true)]
    pub plugins: Vec<PathBuf>,
    /// Namespaces the operator will serve (as `kopf run -n`): repeatable; globs and
    /// comma-separated parts. Literal names get a Role per namespace.
    #[arg(short = 'n', long = "namespace", value_name = "PATTERN", value_parser = crate::structs::references::parse_namespace_pattern)]
    pub namespaces: Vec<String>,
    /// Cluster-wide operation (as `kopf run -A`; the default without `-n`).
    #[arg(short = 'A', long, conflicts_with = "namespaces")]
    pub all_namespaces: bool,
    /// The operator runs with `--standalone`: no peering permissions.
    #[arg(long)]
    pub standalone: bool,
    /// The operator runs with `--lease [NAMESPACE/]NAME`: permissions on that Lease.
    #[arg(long, value_name = "[NAMESPACE/]NAME")]
    pub lease: Option<String>,
    /// The operator runs with `--sharding [NAMESPACE/]NAME`: permissions on the ring's
    /// Leases (all Leases of that namespace: members are named after their identities).
    #[arg(long, value_name = "[NAMESPACE/]NAME", conflicts_with = "lease")]
    pub sharding: Option<String>,
    /// The operator runs with `--peering NAME`: permissions on that peering object only.
    #[arg(short = 'P', long, value_name = "NAME", default_value = "default")]
    pub peering: String,
    /// The operator runs with `--webhook-managed NAME`: permissions on those webhook
    /// configurations and on the Secret of the replicas' shared CA (`NAME-ca`).
    #[arg(long, value_name = "NAME")]
    pub webhook_managed: Option<String>,
    /// With EVERYTHING handlers: include Secrets (left out by default).
    #[arg(long)]
    pub include_secrets: bool,
    /// The name of the ServiceAccount, roles and bindings.
    #[arg(long, default_value = "kopf-operator")]
    pub name: String,
    /// The namespace of the ServiceAccount (where the operator's pod runs).
    #[arg(long, value_name = "NAMESPACE", default_value = "default")]
    pub service_account_namespace: String,
    /// Do not emit the ServiceAccount itself (only roles and bindings).
    #[arg(long)]
    pub no_service_account: bool,
    /// CRD manifests (YAML) to resolve bare resource names like `kopfexamples` offline.
    #[arg(short = 'f', long = "crd", value_name = "FILE")]
    pub crds: Vec<PathBuf>,
    /// Resolve selectors against the cluster of the current kubeconfig instead.
    #[arg(long)]
    pub discover: bool,
    /// Log debug details of failures.
    #[arg(short = 'd', long)]
    pub debug: bool,
}

/// One resolved resource with the verbs it needs.
#[derive(Debug, Clone, Default)]
struct Need {
    namespaced: bool,
    verbs: BTreeSet<&'static str>,
    /// `Some(true)`: has a status subresource; `None`: unknown.
    status: Option<bool>,
}

/// A rule: `(group, resource)` with verbs, for any object of the resource.
type Rules = BTreeMap<(String, String), BTreeSet<&'static str>>;

/// Rules limited to named objects: `(group, resource, name)` with verbs.
type NamedRules = BTreeMap<(String, String, String), BTreeSet<&'static str>>;

/// Resources EVERYTHING handlers never get without asking.
const SENSITIVE: [(&str, &str); 1] = [("", "secrets")];

/// Returns the RBAC manifests as YAML text.
pub fn run(args: RbacArgs) -> Result<String> {
    let plugins = PluginSet::load(&args.plugins)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let catalog = runtime.block_on(catalog(&args))?;
    generate(&args, &plugins, &catalog)
}

/// The resources selectors are resolved against.
async fn catalog(args: &RbacArgs) -> Result<Vec<Resource>> {
    if args.discover {
        let config = connection::load_config(None).await?;
        let client = connection::make_client(config)?;
        return scanning::scan(&client, &GroupFilter::All)
            .await
            .context("discovery against the current kubeconfig's cluster failed");
    }
    let emulator = kopf_testing::Emulator::builder().start().await?;
    let result = async {
        for path in &args.crds {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            emulator
                .apply_yaml(&text)
                .await
                .with_context(|| format!("cannot use the manifests of {}", path.display()))?;
        }
        let config = connection::config_from_yaml(&emulator.kubeconfig_yaml()).await?;
        let client = connection::make_client(config)?;
        Ok::<_, anyhow::Error>(scanning::scan(&client, &GroupFilter::All).await?)
    }
    .await;
    emulator.shutdown().await;
    result
}

/// Resolves one selector to resources, or explains why it cannot.
fn resolve(sel: &ResourceSelector, catalog: &[Resource]) -> Result<Vec<Resource>> {
    let found = references::resolve(sel, catalog)?;
    if !found.is_empty() {
        return Ok(found.into_iter().cloned().collect());
    }
    if let (Some(group), Some(plural)) = (&sel.group, &sel.plural) {
        // Unknown here but fully named: use as written (assumed namespaced, status unknown).
        return Ok(vec![Resource {
            group: group.clone(),
            version: sel.version.clone().unwrap_or_default(),
            plural: plural.clone(),
            namespaced: true,
            subresources: BTreeSet::from(["?".to_owned()]),
            ..Resource::default()
        }]);
    }
    if references::is_specific(sel) {
        bail!(
            "cannot resolve the resource {:?} without a cluster: pass its CRD with -f FILE, \
             name the group and plural in the handler's selector, or use --discover",
            render_selector(Some(sel))
        );
    }
    Ok(vec![])
}

/// Builds the manifests from the plugins' handlers and a resource catalog.
fn generate(args: &RbacArgs, plugins: &PluginSet, catalog: &[Resource]) -> Result<String> {
    let needs = handler_needs(args, plugins, catalog)?;
    let (role_namespaces, globs) = role_namespaces(args);
    let managed = args.webhook_managed.as_ref().filter(|_| needs.webhooks);
    let mut rules = operator_rules(args, role_namespaces.is_some(), globs, managed);
    rules.add(&needs.resources, role_namespaces.is_some());
    warn_about(args, &needs, managed, catalog);
    let docs = documents(args, &rules, role_namespaces.as_ref(), managed)?;

    let mut out = String::new();
    out.push_str("# Generated by `kopf rbac` from the handlers of:\n");
    for plugin in plugins.plugins() {
        out.push_str(&format!("#   {}\n", plugin.name()));
    }
    out.push_str("# Add rules for whatever the handlers themselves read or create (children, etc.).\n");
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&doc)?);
    }
    Ok(out)
}

/// What the resource handlers need, and whether there are EVERYTHING or webhook handlers.
#[derive(Default)]
struct Needs {
    resources: BTreeMap<(String, String), Need>,
    everything: bool,
    webhooks: bool,
}

/// The verbs each handler's resources need (activities need none).
fn handler_needs(args: &RbacArgs, plugins: &PluginSet, catalog: &[Resource]) -> Result<Needs> {
    let mut needs = Needs::default();
    for handler in plugins.handlers() {
        let spec = handler.spec();
        if spec.kind.is_activity() {
            continue;
        }
        if spec.kind.is_webhook() {
            needs.webhooks = true;
            continue;
        }
        let Some(sel) = &spec.selector else { continue };
        owned_needs(&mut needs, spec.options.owns.iter().flatten(), catalog)?;
        if sel.everything || sel.callable {
            needs.everything = true;
        }
        let resolved = if sel.everything {
            everything_resources(catalog, args.include_secrets)
        } else if sel.callable {
            // The callable is not asked offline: every resource it may accept is granted.
            let candidates: Vec<Resource> = catalog
                .iter()
                .filter(|r| references::check(sel, r))
                .cloned()
                .collect();
            everything_resources(&candidates, args.include_secrets)
        } else {
            resolve(sel, catalog)?
        };
        for res in resolved {
            let need = needs
                .resources
                .entry((res.group.clone(), res.plural.clone()))
                .or_default();
            need.namespaced = res.namespaced;
            need.verbs.extend(["list", "watch"]);
            if spec.kind != HandlerKind::Index {
                // `get`: the object is re-read after a refused or failed patch.
                need.verbs.extend(["get", "patch"]);
            }
            need.status = if res.subresources.contains("?") {
                None
            } else {
                Some(res.has_status_subresource())
            };
        }
    }
    Ok(needs)
}

/// Owned kinds (`owns`) are listed and watched, nothing more: their changes only wake
/// the owners' handlers, which patch the owners.
fn owned_needs<'a>(
    needs: &mut Needs,
    owned: impl Iterator<Item = &'a ResourceSelector>,
    catalog: &[Resource],
) -> Result<()> {
    for sel in owned {
        for res in resolve(sel, catalog)? {
            let need = needs
                .resources
                .entry((res.group.clone(), res.plural.clone()))
                .or_insert_with(|| Need {
                    status: Some(false),
                    ..Need::default()
                });
            need.namespaced = res.namespaced;
            need.verbs.extend(["list", "watch"]);
        }
    }
    Ok(())
}

/// The namespaces that get a Role (literal `-n` names only; cluster-wide or globs need a
/// ClusterRole), and whether `-n` has globs (then namespaces are listed and watched).
fn role_namespaces(args: &RbacArgs) -> (Option<BTreeSet<String>>, bool) {
    let patterns: Vec<String> = crate::structs::references::namespace_parts(&args.namespaces)
        .map(str::to_owned)
        .collect();
    let literal: Option<BTreeSet<String>> = patterns
        .iter()
        .map(|p| NamespacePattern::new(p).specific_name().map(str::to_owned))
        .collect();
    let role_namespaces = match (&literal, patterns.is_empty() || args.all_namespaces) {
        (Some(names), false) => Some(names.clone()),
        _ => None,
    };
    let globs = !patterns.is_empty() && literal.is_none();
    (role_namespaces, globs)
}

/// The rules of the ClusterRole and of the per-namespace Roles.
#[derive(Default)]
struct RuleSet {
    cluster: Rules,
    local: Rules,
    cluster_named: NamedRules,
    local_named: NamedRules,
}

impl RuleSet {
    /// The handlers' resources: namespaced ones in the Roles when there are Roles.
    fn add(&mut self, needs: &BTreeMap<(String, String), Need>, per_namespace: bool) {
        for ((group, plural), need) in needs {
            let rules = if need.namespaced && per_namespace {
                &mut self.local
            } else {
                &mut self.cluster
            };
            rules
                .entry((group.clone(), plural.clone()))
                .or_default()
                .extend(need.verbs.iter().copied());
            if need.verbs.contains("patch") && need.status != Some(false) {
                rules
                    .entry((group.clone(), format!("{plural}/status")))
                    .or_default()
                    .insert("patch");
            }
        }
    }
}

/// What the operator itself needs: CRDs (and namespaces with globs) observed, events
/// posted, its peering object by name, its webhook configurations by name.
fn operator_rules(args: &RbacArgs, per_namespace: bool, globs: bool, managed: Option<&String>) -> RuleSet {
    let mut rules = RuleSet::default();
    rules
        .cluster
        .entry(("apiextensions.k8s.io".into(), "customresourcedefinitions".into()))
        .or_default()
        .extend(["list", "watch"]);
    if globs {
        rules
            .cluster
            .entry((String::new(), "namespaces".into()))
            .or_default()
            .extend(["list", "watch"]);
    }
    let namespaced_rules = if per_namespace {
        &mut rules.local
    } else {
        &mut rules.cluster
    };
    namespaced_rules
        .entry((String::new(), "events".into()))
        .or_default()
        .insert("create");
    if !args.standalone {
        let peering = args.peering.clone();
        let verbs = ["get", "list", "watch", "patch"];
        let (named, plural) = if per_namespace {
            (&mut rules.local_named, "kopfpeerings")
        } else if globs {
            (&mut rules.cluster_named, "kopfpeerings")
        } else {
            (&mut rules.cluster_named, "clusterkopfpeerings")
        };
        named
            .entry(("kopf.dev".into(), plural.into(), peering))
            .or_default()
            .extend(verbs);
    }
    if let Some(managed) = managed {
        for plural in ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"] {
            rules
                .cluster
                .entry(("admissionregistration.k8s.io".into(), plural.into()))
                .or_default()
                .insert("create");
            rules
                .cluster_named
                .entry((
                    "admissionregistration.k8s.io".into(),
                    plural.into(),
                    managed.clone(),
                ))
                .or_default()
                .extend(["get", "patch"]);
        }
    }
    rules
}

/// Tells what the rules cannot cover: unmanaged webhook configurations, resources that
/// EVERYTHING handlers will see later.
fn warn_about(args: &RbacArgs, needs: &Needs, managed: Option<&String>, catalog: &[Resource]) {
    if needs.webhooks && managed.is_none() {
        eprintln!(
            "kopf rbac: no permissions on webhook configurations: the operator manages none \
             without --webhook-managed NAME (pass the same option here if it does)."
        );
    }
    if needs.everything {
        eprintln!(
            "kopf rbac: warning: EVERYTHING handlers get rules for the {} resources known now \
             (resources added later are not covered: regenerate, or use --discover against the \
             cluster){}.",
            everything_resources(catalog, args.include_secrets).len(),
            if args.include_secrets {
                ""
            } else {
                "; Secrets are left out (--include-secrets to grant them)"
            }
        );
    }
}

/// The manifests: the service account, the ClusterRole and its binding, the webhook CA's
/// Role, the Lease and ring Roles, and a Role per namespace.
fn documents(
    args: &RbacArgs,
    rules: &RuleSet,
    role_namespaces: Option<&BTreeSet<String>>,
    managed: Option<&String>,
) -> Result<Vec<Value>> {
    let name = &args.name;
    let sa_ns = &args.service_account_namespace;
    let subject = json!([{"kind": "ServiceAccount", "name": name, "namespace": sa_ns}]);
    let mut docs: Vec<Value> = Vec::new();
    if !args.no_service_account {
        docs.push(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": sa_ns},
        }));
    }
    docs.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": render_all(&rules.cluster, &rules.cluster_named),
    }));
    docs.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": subject,
    }));
    if let Some(managed) = managed {
        // The CA shared by the replicas (generated certificates): in the operator's
        // namespace, as `kopf run` looks for it (POD_NAMESPACE, else `default`).
        let secret = format!("{managed}-ca");
        let role_rules = json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get", "patch"]},
        ]);
        docs.extend(bound_role(
            &format!("{name}-webhook-ca"),
            sa_ns,
            role_rules,
            &subject,
        ));
    }
    if let Some(lease) = &args.lease {
        let (ns, lease_name) = lease_place(lease, sa_ns, "--lease")?;
        // `create` cannot be limited by resourceNames, so it gets a rule of its own.
        let role_rules = json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease_name],
             "verbs": ["get", "patch", "update"]},
        ]);
        docs.extend(bound_role(&format!("{name}-lease"), &ns, role_rules, &subject));
    }
    if let Some(ring) = &args.sharding {
        let (ns, _) = lease_place(ring, sa_ns, "--sharding")?;
        // Member Leases are named after each replica's identity (unknown here) and the
        // ring is listed by label: none of it can be limited by name.
        let role_rules = json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
            "verbs": ["list", "create", "update", "delete"]}]);
        docs.extend(bound_role(&format!("{name}-sharding"), &ns, role_rules, &subject));
    }
    for ns in role_namespaces.into_iter().flatten() {
        let role_rules = render_all(&rules.local, &rules.local_named);
        docs.extend(bound_role(name, ns, role_rules, &subject));
    }
    Ok(docs)
}

/// The resources EVERYTHING handlers serve: every listable and watchable resource of the
/// catalog except events (Kopf's EVERYTHING excludes them) and, unless asked, Secrets.
/// The namespace and name of `--lease`/`--sharding` `[NAMESPACE/]NAME` (the service
/// account's namespace by default).
fn lease_place(value: &str, default_ns: &str, flag: &str) -> Result<(String, String)> {
    let (ns, name) = value.split_once('/').unwrap_or((default_ns, value));
    if name.is_empty() || ns.is_empty() {
        bail!("invalid {flag} {value:?}: expected [NAMESPACE/]NAME");
    }
    Ok((ns.to_owned(), name.to_owned()))
}

/// A Role with these rules and its RoleBinding to the operator's service account.
fn bound_role(role: &str, ns: &str, rules: Value, subject: &Value) -> [Value; 2] {
    [
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": role, "namespace": ns},
            "rules": rules,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": subject,
        }),
    ]
}

fn everything_resources(catalog: &[Resource], include_secrets: bool) -> Vec<Resource> {
    let mut seen = BTreeSet::new();
    catalog
        .iter()
        .filter(|r| r.verbs.contains("list") && r.verbs.contains("watch"))
        .filter(|r| !(r.plural == "events" && matches!(r.group.as_str(), "" | "events.k8s.io")))
        .filter(|r| include_secrets || !SENSITIVE.contains(&(r.group.as_str(), r.plural.as_str())))
        .filter(|r| seen.insert((r.group.clone(), r.plural.clone())))
        .cloned()
        .collect()
}

/// Unnamed rules, then rules limited to named objects.
fn render_all(rules: &Rules, named: &NamedRules) -> Value {
    let mut out = match render_rules(rules) {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    out.extend(named.iter().map(|((group, resource, name), verbs)| {
        json!({
            "apiGroups": [group],
            "resources": [resource],
            "resourceNames": [name],
            "verbs": verbs.iter().collect::<Vec<_>>(),
        })
    }));
    Value::Array(out)
}

/// Rules as RBAC `PolicyRule`s: one per (group, resource), sorted.
fn render_rules(rules: &Rules) -> Value {
    Value::Array(
        rules
            .iter()
            .map(|((group, resource), verbs)| {
                json!({
                    "apiGroups": [group],
                    "resources": [resource],
                    "verbs": verbs.iter().collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, plural: &str, kind: &str, namespaced: bool, status: bool) -> Resource {
        Resource {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            kind: kind.into(),
            singular: kind.to_lowercase(),
            namespaced,
            preferred: true,
            subresources: if status {
                BTreeSet::from(["status".to_owned()])
            } else {
                BTreeSet::new()
            },
            verbs: ["list", "watch", "patch"].map(str::to_owned).into(),
            ..Resource::default()
        }
    }

    #[test]
    fn bare_names_resolve_against_the_catalog_or_fail_clearly() {
        let catalog = vec![
            res("", "pods", "Pod", true, true),
            res("kopf.dev", "kopfexamples", "KopfExample", true, true),
        ];
        let sel = ResourceSelector {
            any_name: Some("kopfexamples".into()),
            ..Default::default()
        };
        let found = resolve(&sel, &catalog).unwrap();
        assert_eq!(found[0].group, "kopf.dev");
        let unknown = ResourceSelector {
            any_name: Some("widgets".into()),
            ..Default::default()
        };
        let err = resolve(&unknown, &catalog).unwrap_err().to_string();
        assert!(err.contains("\"widgets\"") && err.contains("-f FILE"), "{err}");
        let named = ResourceSelector {
            group: Some("example.com".into()),
            plural: Some("widgets".into()),
            ..Default::default()
        };
        let found = resolve(&named, &catalog).unwrap();
        assert_eq!(
            (found[0].group.as_str(), found[0].plural.as_str()),
            ("example.com", "widgets")
        );
    }

    #[test]
    fn rules_render_one_per_resource() {
        let mut rules = Rules::new();
        rules.insert(("".into(), "events".into()), BTreeSet::from(["create"]));
        let v = render_rules(&rules);
        assert_eq!(
            v,
            json!([{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}])
        );
    }
}
