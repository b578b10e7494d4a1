//! Resource definitions: built-in kinds, CRD-derived kinds, and the discovery documents.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

/// A printer column (`additionalPrinterColumns` of a CRD).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type (string, integer, date, ...).
    pub type_: String,
    /// A simple JSONPath such as `.spec.field`.
    pub json_path: String,
    /// Priority (0 = shown by default).
    pub priority: i64,
}

/// The scale subresource mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleSpec {
    /// JSONPath of the desired replicas, e.g. `.spec.replicas`.
    pub spec_replicas_path: String,
    /// JSONPath of the observed replicas, e.g. `.status.replicas`.
    pub status_replicas_path: String,
    /// JSONPath of the label selector string, if any.
    pub label_selector_path: Option<String>,
}

/// Everything the server knows about one served resource (one group, all its served versions).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDef {
    /// API group ("" for core).
    pub group: String,
    /// Served versions, the storage version included.
    pub versions: Vec<String>,
    /// The version objects are stored in.
    pub storage_version: String,
    /// Plural resource name (`kopfexamples`).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind (`KopfExample`).
    pub kind: String,
    /// List kind (`KopfExampleList`).
    pub list_kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (e.g. `all`).
    pub categories: Vec<String>,
    /// Has a `/status` subresource.
    pub status_subresource: bool,
    /// Has a `/scale` subresource.
    pub scale: Option<ScaleSpec>,
    /// Defined by a CRD (custom resource semantics).
    pub custom: bool,
    /// Printer columns (CRDs).
    pub printer_columns: Vec<PrinterColumn>,
    /// Structural schema per version (CRDs), for defaulting and pruning.
    pub schemas: HashMap<String, Value>,
    /// Whether DELETE returns the object (true) or a Success Status (false).
    pub returns_deleted_object: bool,
    /// Whether PUT without resourceVersion is allowed.
    pub unconditional_update: bool,
    /// Field-selector fields beyond `metadata.name`/`metadata.namespace` (a CRD's
    /// `selectableFields`, as `spec.color`); built-ins have theirs in `selectors.rs`.
    pub selectable_fields: Vec<String>,
}

impl ResourceDef {
    /// The key objects are stored under.
    pub fn group_resource(&self) -> GroupResource {
        GroupResource {
            group: self.group.clone(),
            resource: self.plural.clone(),
        }
    }

    /// `apiVersion` for a version of this resource.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }
}

/// A (group, resource) pair: the storage key of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// API group ("" for core).
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    scale: bool,
    returns_obj: bool,
) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        versions: vec![version.into()],
        storage_version: version.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: if ["pods", "services", "deployments", "replicasets"].contains(&plural) {
            vec!["all".into()]
        } else {
            vec![]
        },
        status_subresource: status,
        scale: scale.then(|| ScaleSpec {
            spec_replicas_path: ".spec.replicas".into(),
            status_replicas_path: ".status.replicas".into(),
            label_selector_path: None,
        }),
        custom: false,
        printer_columns: vec![],
        schemas: HashMap::new(),
        returns_deleted_object: returns_obj,
        unconditional_update: true,
        selectable_fields: vec![],
    }
}

/// The built-in resources served from the start.
pub fn builtins() -> Vec<ResourceDef> {
    let mut defs = builtins_core();
    defs.extend(crate::rbac::builtins(builtin));
    defs
}

#[allow(clippy::too_many_lines)] // split under issue 19
fn builtins_core() -> Vec<ResourceDef> {
    vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            false,
            true,
        ),
        builtin("", "v1", "pods", "Pod", true, &["po"], true, false, true),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            false,
            false,
        ),
        builtin("", "v1", "secrets", "Secret", true, &[], false, false, false),
        builtin("", "v1", "services", "Service", true, &["svc"], true, false, true),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            false,
            true,
        ),
        builtin("", "v1", "events", "Event", true, &["ev"], false, false, false),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            false,
            false,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            false,
            false,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
            true,
            true,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            false,
            true,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            false,
            &[],
            false,
            false,
            false,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            false,
            &[],
            false,
            false,
            false,
        ),
    ]
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn strings_at(v: &Value, path: &[&str]) -> Vec<String> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return vec![],
        }
    }
    cur.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Validate a CRD object and derive its resource definition. Errors are `(field, message)`.
#[allow(clippy::too_many_lines)] // split under issue 19
pub fn crd_to_def(crd: &Value) -> Result<ResourceDef, Vec<(&'static str, String)>> {
    let mut errs = vec![];
    let group = str_at(crd, &["spec", "group"]).unwrap_or_default().to_string();
    let plural = str_at(crd, &["spec", "names", "plural"])
        .unwrap_or_default()
        .to_string();
    let kind = str_at(crd, &["spec", "names", "kind"])
        .unwrap_or_default()
        .to_string();
    let name = str_at(crd, &["metadata", "name"]).unwrap_or_default();
    if group.is_empty() {
        errs.push(("spec.group", "Required value".to_string()));
    }
    if plural.is_empty() {
        errs.push(("spec.names.plural", "Required value".to_string()));
    }
    if kind.is_empty() {
        errs.push(("spec.names.kind", "Required value".to_string()));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push((
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = str_at(crd, &["spec", "scope"]).unwrap_or_default();
    if scope != "Namespaced" && scope != "Cluster" {
        errs.push((
            "spec.scope",
            format!("Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""),
        ));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push((
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    let mut served = vec![];
    let mut storage = None;
    let mut status = false;
    let mut scale = None;
    let mut columns = vec![];
    let mut schemas = HashMap::new();
    let mut selectable = vec![];
    for v in &versions {
        for f in v
            .get("selectableFields")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(p) = f.get("jsonPath").and_then(|x| x.as_str()) {
                let p = p.trim_start_matches('.').to_string();
                if !selectable.contains(&p) {
                    selectable.push(p);
                }
            }
        }
        let vname = v
            .get("name")
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string();
        if v.get("served").and_then(|x| x.as_bool()).unwrap_or(false) {
            served.push(vname.clone());
        }
        if v.get("storage").and_then(|x| x.as_bool()).unwrap_or(false) {
            if storage.is_some() {
                errs.push((
                    "spec.versions",
                    "Invalid value: must have exactly one version marked as storage version".into(),
                ));
            }
            storage = Some(vname.clone());
        }
        if let Some(sub) = v.get("subresources") {
            status |= sub.get("status").is_some();
            if let Some(sc) = sub.get("scale") {
                scale = Some(ScaleSpec {
                    spec_replicas_path: sc
                        .get("specReplicasPath")
                        .and_then(|x| x.as_str())
                        .unwrap_or(".spec.replicas")
                        .into(),
                    status_replicas_path: sc
                        .get("statusReplicasPath")
                        .and_then(|x| x.as_str())
                        .unwrap_or(".status.replicas")
                        .into(),
                    label_selector_path: sc
                        .get("labelSelectorPath")
                        .and_then(|x| x.as_str())
                        .map(String::from),
                });
            }
        }
        if columns.is_empty()
            && let Some(cols) = v.get("additionalPrinterColumns").and_then(|x| x.as_array())
        {
            for c in cols {
                columns.push(PrinterColumn {
                    name: c.get("name").and_then(|x| x.as_str()).unwrap_or_default().into(),
                    type_: c.get("type").and_then(|x| x.as_str()).unwrap_or("string").into(),
                    json_path: c
                        .get("jsonPath")
                        .and_then(|x| x.as_str())
                        .unwrap_or_default()
                        .into(),
                    priority: c.get("priority").and_then(|x| x.as_i64()).unwrap_or(0),
                });
            }
        }
        if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
            schemas.insert(vname.clone(), s.clone());
        }
    }
    if storage.is_none() && !versions.is_empty() {
        errs.push((
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let storage = storage.unwrap_or_default();
    Ok(ResourceDef {
        group,
        versions: served,
        storage_version: storage,
        singular: str_at(crd, &["spec", "names", "singular"])
            .map(String::from)
            .unwrap_or_else(|| kind.to_lowercase()),
        list_kind: str_at(crd, &["spec", "names", "listKind"])
            .map(String::from)
            .unwrap_or_else(|| format!("{kind}List")),
        short_names: strings_at(crd, &["spec", "names", "shortNames"]),
        categories: strings_at(crd, &["spec", "names", "categories"]),
        plural,
        kind,
        namespaced: scope == "Namespaced",
        status_subresource: status,
        scale,
        custom: true,
        printer_columns: columns,
        schemas,
        // kube-apiserver answers a DELETE that removes a custom resource at once with a
        // Success Status (the object only while finalizers keep it).
        returns_deleted_object: false,
        unconditional_update: false,
        selectable_fields: selectable,
    })
}

/// The registry of served resources.
#[derive(Debug, Default)]
pub struct Registry {
    /// By (group, version, plural).
    by_path: HashMap<(String, String, String), Arc<ResourceDef>>,
    /// By group resource (all versions share one def).
    by_gr: BTreeMap<GroupResource, Arc<ResourceDef>>,
}

impl Registry {
    /// A registry with the built-ins.
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        for d in builtins() {
            r.add(d);
        }
        r
    }

    /// Register (or re-register) a definition.
    pub fn add(&mut self, def: ResourceDef) {
        self.remove(&def.group_resource());
        let def = Arc::new(def);
        for v in &def.versions {
            self.by_path
                .insert((def.group.clone(), v.clone(), def.plural.clone()), def.clone());
        }
        self.by_gr.insert(def.group_resource(), def);
    }

    /// Stop serving a resource.
    pub fn remove(&mut self, gr: &GroupResource) -> Option<Arc<ResourceDef>> {
        let old = self.by_gr.remove(gr)?;
        self.by_path.retain(|_, d| d.group_resource() != *gr);
        Some(old)
    }

    /// Look up by URL parts.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Look up by group resource.
    pub fn by_gr(&self, gr: &GroupResource) -> Option<Arc<ResourceDef>> {
        self.by_gr.get(gr).cloned()
    }

    /// Look up by apiVersion + kind.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<(Arc<ResourceDef>, String)> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.by_gr
            .values()
            .find(|d| d.group == group && d.kind == kind && d.versions.iter().any(|v| v == version))
            .map(|d| (d.clone(), version.to_string()))
    }

    /// Groups with their versions (preferred first), core excluded, in a stable order:
    /// built-in groups first, then CRD groups alphabetically.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<(bool, String), Vec<String>> = BTreeMap::new();
        for d in self.by_gr.values() {
            if d.group.is_empty() {
                continue;
            }
            let e = groups.entry((d.custom, d.group.clone())).or_default();
            // Storage version first (kube prefers by version priority; good enough).
            if !e.contains(&d.storage_version) && d.versions.contains(&d.storage_version) {
                e.insert(0, d.storage_version.clone());
            }
            for v in &d.versions {
                if !e.contains(v) {
                    e.push(v.clone());
                }
            }
        }
        groups.into_iter().map(|((_, g), v)| (g, v)).collect()
    }

    /// Resources in a group/version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceDef>> {
        self.by_gr
            .values()
            .filter(|d| d.group == group && d.versions.iter().any(|v| v == version))
            .cloned()
            .collect()
    }
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `APIResourceList` for a group/version.
pub fn api_resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs = reg.in_group_version(group, version);
    if defs.is_empty() && !(group.is_empty() && version == "v1") {
        return None;
    }
    let mut resources = vec![];
    for d in defs {
        let mut r = json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": VERBS,
            "storageVersionHash": "emulator",
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        resources.push(r);
        if d.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", d.plural), "singularName": "", "namespaced": d.namespaced,
                "kind": d.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if d.scale.is_some() {
            resources.push(json!({
                "name": format!("{}/scale", d.plural), "singularName": "", "namespaced": d.namespaced,
                "group": "autoscaling", "version": "v1",
                "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": if group.is_empty() { version.to_string() } else { format!("{group}/{version}") },
        "resources": resources,
    }))
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `APIGroupList` for `/apis`.
pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg.groups().iter().map(|(g, v)| group_json(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `APIGroup` for `/apis/{group}`.
pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    reg.groups().iter().find(|(g, _)| g == group).map(|(g, v)| {
        let mut j = group_json(g, v);
        j["kind"] = json!("APIGroup");
        j["apiVersion"] = json!("v1");
        j
    })
}

fn resource_discovery(d: &ResourceDef, version: &str) -> Value {
    let gvk = |kind: &str| json!({"group": d.group, "version": version, "kind": kind});
    let mut subs = vec![];
    if d.status_subresource {
        subs.push(json!({"subresource": "status", "responseKind": gvk(&d.kind), "verbs": ["get", "patch", "update"]}));
    }
    if d.scale.is_some() {
        subs.push(json!({"subresource": "scale",
            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "verbs": ["get", "patch", "update"]}));
    }
    let mut r = json!({
        "resource": d.plural,
        "responseKind": gvk(&d.kind),
        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": d.singular,
        "verbs": VERBS,
    });
    if !d.short_names.is_empty() {
        r["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        r["categories"] = json!(d.categories);
    }
    if !subs.is_empty() {
        r["subresources"] = Value::Array(subs);
    }
    r
}

fn group_discovery(reg: &Registry, group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = reg
                .in_group_version(group, v)
                .iter()
                .map(|d| resource_discovery(d, v))
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": vs})
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`) for `/api` (core)
/// or `/apis` (all other groups).
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![group_discovery(reg, "", &["v1".to_string()])]
    } else {
        reg.groups()
            .iter()
            .map(|(g, vs)| group_discovery(reg, g, vs))
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}
