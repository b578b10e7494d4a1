//! The object store: one global resourceVersion counter, collections of serialized objects,
//! per-collection event history for watch resumption, ownership and uid indices.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::resources::{GroupResource, Registry, ResourceDef, crd_to_def};

/// Labels of an object, shared between the stored object and its events.
pub type Labels = Arc<BTreeMap<String, String>>;

/// A stored object: its JSON bytes plus what selectors need.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Serialized JSON (storage version).
    pub json: Bytes,
    /// resourceVersion.
    pub rv: u64,
    /// Labels.
    pub labels: Labels,
}

impl Stored {
    /// Parse the object.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

/// The type of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

/// A change to one object, as recorded in history and broadcast to watches.
#[derive(Debug)]
pub struct Change {
    /// Collection.
    pub gr: GroupResource,
    /// Change type.
    pub kind: ChangeKind,
    /// resourceVersion of the change.
    pub rv: u64,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Object after the change (last state for deletions).
    pub json: Bytes,
    /// Labels after the change.
    pub labels: Labels,
    /// Labels before the change (modifications only).
    pub prev_labels: Option<Labels>,
}

/// Objects by (namespace, name), ordered like etcd keys.
pub type Objects = BTreeMap<(String, String), Stored>;

/// Objects of one resource.
#[derive(Debug, Default)]
pub struct Collection {
    /// (namespace, name) → object; ordered like etcd keys.
    pub objects: Objects,
    /// Recent changes, oldest first.
    pub history: VecDeque<Arc<Change>>,
    /// Watches from resourceVersions below this get 410 Gone.
    pub compacted_rv: u64,
    /// The objects as they were when a paginated list began, by that list's
    /// resourceVersion: continued pages are served from them, as the API server serves
    /// them from etcd's snapshot (not from the current state, which may be newer than
    /// the list's resourceVersion that the client then watches from).
    pub snapshots: BTreeMap<u64, Arc<Objects>>,
}

/// How many list snapshots a collection keeps for continued pages (oldest dropped first;
/// a continue token whose snapshot is gone gets 410 Gone, as after a compaction).
pub const LIST_SNAPSHOTS_KEPT: usize = 16;

/// A reference to one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjRef {
    /// Collection.
    pub gr: GroupResource,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// The whole store, guarded by one mutex.
#[derive(Debug)]
pub struct State {
    /// Last issued resourceVersion.
    pub rv: u64,
    /// Served resources.
    pub registry: Registry,
    /// Collections.
    pub collections: HashMap<GroupResource, Collection>,
    uids: HashMap<String, ObjRef>,
    dependents: HashMap<String, HashSet<ObjRef>>,
    history_window: usize,
    tx: broadcast::Sender<Arc<Change>>,
    rv_published: Arc<AtomicU64>,
}

/// Options of a deletion.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// `propagationPolicy` (Orphan, Background, Foreground).
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub rv: Option<String>,
    /// `dryRun=All`: compute, do not store.
    pub dry_run: bool,
}

pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(crate) fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub(crate) fn labels_of(v: &Value) -> Labels {
    let mut m = BTreeMap::new();
    if let Some(l) = v.pointer("/metadata/labels").and_then(|l| l.as_object()) {
        for (k, val) in l {
            if let Some(s) = val.as_str() {
                m.insert(k.clone(), s.to_string());
            }
        }
    }
    Arc::new(m)
}

fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(|x| x.as_str())
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(|f| f.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn owner_uids(v: &Value) -> Vec<String> {
    v.pointer("/metadata/ownerReferences")
        .and_then(|f| f.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get("uid").and_then(|u| u.as_str()).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn meta_mut(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !v.get("metadata").is_some_and(|m| m.is_object()) {
        v["metadata"] = json!({});
    }
    match v.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// DNS-1123 subdomain check.
pub(crate) fn valid_subdomain(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        })
}

/// DNS-1123 label check.
pub(crate) fn valid_label(n: &str) -> bool {
    n.len() <= 63 && !n.contains('.') && valid_subdomain(n)
}

impl State {
    /// A fresh store with the built-ins and the `default`, `kube-system`, `kube-public` namespaces.
    pub fn new(
        history_window: usize,
        tx: broadcast::Sender<Arc<Change>>,
        rv_published: Arc<AtomicU64>,
    ) -> Self {
        let mut st = State {
            rv: 0,
            registry: Registry::with_builtins(),
            collections: HashMap::new(),
            uids: HashMap::new(),
            dependents: HashMap::new(),
            history_window: history_window.max(1),
            tx,
            rv_published,
        };
        if let Some(ns_def) = st.registry.lookup("", "v1", "namespaces") {
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                crate::defaults::on_create(&ns_def, &mut obj);
                // Cannot fail: fresh store, valid names.
                let _ = st.create(&ns_def, "", obj, false);
            }
        }
        st
    }

    /// The collection of a resource (created on demand).
    pub fn coll(&mut self, gr: &GroupResource) -> &mut Collection {
        self.collections.entry(gr.clone()).or_default()
    }

    /// Get a stored object.
    pub fn get(&self, gr: &GroupResource, ns: &str, name: &str) -> Option<&Stored> {
        self.collections
            .get(gr)?
            .objects
            .get(&(ns.to_string(), name.to_string()))
    }

    /// Does a namespace exist (and is it not terminating)? `Err` carries the right API error.
    pub fn check_namespace(&self, ns: &str, for_create: bool) -> Result<(), ApiError> {
        let gr = GroupResource {
            group: String::new(),
            resource: "namespaces".into(),
        };
        match self.get(&gr, "", ns) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(s) if for_create => {
                let v = s.value();
                if v.pointer("/metadata/deletionTimestamp").is_some() {
                    Err(ApiError::forbidden(format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    )))
                } else {
                    Ok(())
                }
            }
            Some(_) => Ok(()),
        }
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        let window = self.history_window;
        let coll = self.coll(&change.gr);
        coll.history.push_back(change.clone());
        while coll.history.len() > window {
            if let Some(old) = coll.history.pop_front() {
                coll.compacted_rv = old.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(change);
        self.rv_published.store(self.rv, Ordering::Release);
    }

    fn index(&mut self, r: &ObjRef, old: Option<&Value>, new: Option<&Value>) {
        if let Some(old) = old {
            for o in owner_uids(old) {
                if let Some(set) = self.dependents.get_mut(&o) {
                    set.remove(r);
                    if set.is_empty() {
                        self.dependents.remove(&o);
                    }
                }
            }
            if new.is_none()
                && let Some(uid) = meta_str(old, "uid")
            {
                self.uids.remove(uid);
            }
        }
        if let Some(new) = new {
            for o in owner_uids(new) {
                self.dependents.entry(o).or_default().insert(r.clone());
            }
            if let Some(uid) = meta_str(new, "uid") {
                self.uids.insert(uid.to_string(), r.clone());
            }
        }
    }

    /// Store `obj` (whose metadata is final except resourceVersion) and emit the change.
    fn write(
        &mut self,
        gr: &GroupResource,
        ns: &str,
        name: &str,
        mut obj: Value,
        old: Option<&Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let json = Bytes::from(serde_json::to_vec(&obj).unwrap_or_default());
        let labels = labels_of(&obj);
        let r = ObjRef {
            gr: gr.clone(),
            namespace: ns.into(),
            name: name.into(),
        };
        self.index(&r, old, Some(&obj));
        let prev = self.coll(gr).objects.insert(
            (ns.into(), name.into()),
            Stored {
                json: json.clone(),
                rv,
                labels: labels.clone(),
            },
        );
        let kind = if prev.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.record(Change {
            gr: gr.clone(),
            kind,
            rv,
            namespace: ns.into(),
            name: name.into(),
            json,
            labels,
            prev_labels: prev.map(|p| p.labels),
        });
        obj
    }

    /// Remove an object for good (finalizers done), emit DELETED, then collect garbage.
    fn remove(&mut self, gr: &GroupResource, ns: &str, name: &str) -> Option<Value> {
        // A CRD's instances go first (kube's customresourcecleanup finalizer), then it stops serving.
        if gr.group == "apiextensions.k8s.io"
            && gr.resource == "customresourcedefinitions"
            && let Some(def) = self.get(gr, ns, name).and_then(|s| crd_to_def(&s.value()).ok())
        {
            let cgr = def.group_resource();
            let keys: Vec<(String, String)> = self
                .collections
                .get(&cgr)
                .map(|c| c.objects.keys().cloned().collect())
                .unwrap_or_default();
            for (kns, kname) in keys {
                self.remove(&cgr, &kns, &kname);
            }
            self.registry.remove(&cgr);
        }
        let stored = self
            .coll(gr)
            .objects
            .remove(&(ns.to_string(), name.to_string()))?;
        let mut last = stored.value();
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut last).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let json = Bytes::from(serde_json::to_vec(&last).unwrap_or_default());
        let r = ObjRef {
            gr: gr.clone(),
            namespace: ns.into(),
            name: name.into(),
        };
        self.index(&r, Some(&last), None);
        self.record(Change {
            gr: gr.clone(),
            kind: ChangeKind::Deleted,
            rv,
            namespace: ns.into(),
            name: name.into(),
            json,
            labels: stored.labels.clone(),
            prev_labels: None,
        });
        // Side effects: namespaces empty out, dependents get collected.
        for owner in owner_uids(&last) {
            self.release_foreground(&owner);
        }
        if let Some(uid) = meta_str(&last, "uid").map(String::from) {
            self.collect_dependents(&uid);
        }
        if !ns.is_empty() {
            self.maybe_finish_namespace(ns);
        }
        Some(last)
    }

    fn collect_dependents(&mut self, owner_uid: &str) {
        let Some(deps) = self.dependents.remove(owner_uid) else {
            return;
        };
        for d in deps {
            let Some(stored) = self.get(&d.gr, &d.namespace, &d.name) else {
                continue;
            };
            let v = stored.value();
            let alive = owner_uids(&v)
                .iter()
                .any(|u| u != owner_uid && self.uids.contains_key(u));
            if alive {
                continue;
            }
            if let Some(def) = self.registry.by_gr(&d.gr) {
                let _ = self.delete(&def, &d.namespace, &d.name, &DeleteOpts::default());
            }
        }
    }

    fn maybe_finish_namespace(&mut self, ns: &str) {
        let nsgr = GroupResource {
            group: String::new(),
            resource: "namespaces".into(),
        };
        let terminating = self
            .get(&nsgr, "", ns)
            .is_some_and(|s| s.value().pointer("/metadata/deletionTimestamp").is_some());
        if !terminating {
            return;
        }
        let lo = (ns.to_string(), String::new());
        let empty = self.collections.iter().all(|(gr, c)| {
            *gr == nsgr
                || c.objects
                    .range(lo.clone()..)
                    .next()
                    .is_none_or(|((n, _), _)| n != ns)
        });
        if empty {
            self.remove(&nsgr, "", ns);
        }
    }

    fn start_namespace_deletion(&mut self, ns: &str) {
        let nsgr = GroupResource {
            group: String::new(),
            resource: "namespaces".into(),
        };
        let mut victims = vec![];
        for (gr, c) in &self.collections {
            if *gr == nsgr {
                continue;
            }
            for ((n, name), _) in c.objects.range((ns.to_string(), String::new())..) {
                if n != ns {
                    break;
                }
                victims.push((gr.clone(), name.clone()));
            }
        }
        for (gr, name) in victims {
            if let Some(def) = self.registry.by_gr(&gr) {
                let _ = self.delete(&def, ns, &name, &DeleteOpts::default());
            }
        }
        self.maybe_finish_namespace(ns);
    }

    /// Create an already-validated object: assigns identity, stores, emits ADDED.
    pub fn create(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if def.namespaced {
            self.check_namespace(ns, true)?;
        }
        let gr = def.group_resource();
        let mut name = meta_str(&obj, "name").unwrap_or_default().to_string();
        check_annotations_size(def, &name, &obj)?;
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName").unwrap_or_default().to_string();
            loop {
                name = format!("{prefix}{}", random_suffix());
                if self.get(&gr, ns, &name).is_none() {
                    break;
                }
            }
        } else if self.get(&gr, ns, &name).is_some() {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        let is_crd = def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions";
        let crd_def = if is_crd {
            let d = crd_to_def(&obj).map_err(|errs| {
                let causes: Vec<(&str, &str, String)> = errs
                    .iter()
                    .map(|(f, m)| ("FieldValueInvalid", *f, m.clone()))
                    .collect();
                ApiError::invalid(&def.group, &def.kind, &name, &causes)
            })?;
            if let Some(existing) = self.registry.by_gr(&d.group_resource())
                && !existing.custom
            {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    &name,
                    &[(
                        "FieldValueInvalid",
                        "spec.names.plural",
                        "conflicts with a built-in resource".into(),
                    )],
                ));
            }
            Some(d)
        } else {
            None
        };
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), Value::String(name.clone()));
            if def.namespaced {
                m.insert("namespace".into(), Value::String(ns.into()));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), Value::String(new_uid()));
            m.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
            if tracks_generation(def) {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        if def.plural == "namespaces" && def.group.is_empty() {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        if let Some(d) = &crd_def {
            obj["status"] = crd_status(&obj);
            if !dry_run {
                self.registry.add(d.clone());
            }
        }
        if dry_run {
            return Ok(obj);
        }
        Ok(self.write(&gr, ns, &name, obj, None))
    }

    /// Store an updated object if its current resourceVersion is still `expected_rv`.
    /// Returns `Ok(None)` when stale (the caller retries or reports a conflict).
    #[allow(clippy::too_many_arguments)]
    pub fn commit_update(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        expected_rv: u64,
        old: &Value,
        mut new: Value,
        dry_run: bool,
    ) -> Result<Option<Value>, ApiError> {
        let gr = def.group_resource();
        let Some(cur) = self.get(&gr, ns, name) else {
            return Err(ApiError::not_found(&def.group, &def.plural, name));
        };
        if cur.rv != expected_rv {
            return Ok(None);
        }
        // `old` is what the caller read at `expected_rv`: still current.
        if *old == new {
            return Ok(Some(old.clone()));
        }
        check_annotations_size(def, name, &new)?;
        if dry_run {
            return Ok(Some(new));
        }
        let is_crd = def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions";
        if is_crd {
            let d = crd_to_def(&new).map_err(|errs| {
                let causes: Vec<(&str, &str, String)> = errs
                    .iter()
                    .map(|(f, m)| ("FieldValueInvalid", *f, m.clone()))
                    .collect();
                ApiError::invalid(&def.group, &def.kind, name, &causes)
            })?;
            if new.pointer("/metadata/deletionTimestamp").is_none() {
                new["status"] = crd_status(&new);
                self.registry.add(d);
            }
        }
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        if deleting && finalizers(&new).is_empty() {
            let stored = self.write(&gr, ns, name, new, Some(old));
            self.remove(&gr, ns, name);
            return Ok(Some(stored));
        }
        Ok(Some(self.write(&gr, ns, name, new, Some(old))))
    }

    /// Delete (or mark for deletion when finalizers are pending). Returns the object and whether
    /// it is gone.
    pub fn delete(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<(Value, bool), ApiError> {
        let gr = def.group_resource();
        let Some(cur) = self.get(&gr, ns, name) else {
            return Err(ApiError::not_found(&def.group, &def.plural, name));
        };
        let old = cur.value();
        let cur_rv = cur.rv;
        if let Some(uid) = &opts.uid
            && meta_str(&old, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.rv
            && *rv != cur_rv.to_string()
        {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {cur_rv}"
                ),
            ));
        }
        let mut fins = finalizers(&old);
        let is_ns = def.group.is_empty() && def.plural == "namespaces";
        if opts.dry_run {
            return Ok((old, fins.is_empty() && !is_ns));
        }
        match opts.propagation.as_deref() {
            Some("Orphan") => {
                // Orphan: strip our ownerReferences from dependents before we go.
                if let Some(uid) = meta_str(&old, "uid").map(String::from) {
                    self.orphan_dependents(&uid);
                }
            }
            Some("Foreground") => {
                let uid = meta_str(&old, "uid").unwrap_or_default().to_string();
                if self.dependents.get(&uid).is_some_and(|d| !d.is_empty())
                    && !fins.iter().any(|f| f == "foregroundDeletion")
                {
                    fins.push("foregroundDeletion".into());
                }
            }
            _ => {}
        }
        if fins.is_empty() && !is_ns {
            let last = self.remove(&gr, ns, name).unwrap_or(old);
            return Ok((last, true));
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok((old, false));
        }
        let mut new = old.clone();
        {
            let m = meta_mut(&mut new);
            if let Some(g) = m.get("generation").and_then(|g| g.as_i64()) {
                m.insert("generation".into(), json!(g + 1));
            }
            m.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if !fins.is_empty() {
                m.insert("finalizers".into(), json!(fins));
            }
        }
        if is_ns {
            new["status"] = json!({"phase": "Terminating"});
        }
        let stored = self.write(&gr, ns, name, new, Some(&old));
        if fins.iter().any(|f| f == "foregroundDeletion") {
            // Foreground: delete dependents now; the owner's finalizer goes when they are gone.
            if let Some(uid) = meta_str(&stored, "uid").map(String::from) {
                self.delete_dependents_foreground(&uid);
            }
        }
        if is_ns {
            self.start_namespace_deletion(name);
            if self.get(&gr, ns, name).is_none() {
                return Ok((stored, true));
            }
        }
        Ok((stored, false))
    }

    fn orphan_dependents(&mut self, uid: &str) {
        let Some(deps) = self.dependents.remove(uid) else {
            return;
        };
        for d in deps {
            let Some(s) = self.get(&d.gr, &d.namespace, &d.name) else {
                continue;
            };
            let old = s.value();
            let mut new = old.clone();
            if let Some(refs) = new
                .pointer_mut("/metadata/ownerReferences")
                .and_then(|r| r.as_array_mut())
            {
                refs.retain(|r| r.get("uid").and_then(|u| u.as_str()) != Some(uid));
            }
            self.write(&d.gr, &d.namespace, &d.name, new, Some(&old));
        }
    }

    fn delete_dependents_foreground(&mut self, uid: &str) {
        let deps: Vec<ObjRef> = self
            .dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        for d in deps {
            if let Some(def) = self.registry.by_gr(&d.gr) {
                let _ = self.delete(&def, &d.namespace, &d.name, &DeleteOpts::default());
            }
        }
        self.release_foreground(uid);
    }

    /// Drop the `foregroundDeletion` finalizer of an owner whose dependents are gone.
    fn release_foreground(&mut self, uid: &str) {
        if self.dependents.get(uid).is_some_and(|d| !d.is_empty()) {
            return;
        }
        let Some(r) = self.uids.get(uid).cloned() else {
            return;
        };
        let Some(s) = self.get(&r.gr, &r.namespace, &r.name) else {
            return;
        };
        let old = s.value();
        let rv = s.rv;
        if !finalizers(&old).iter().any(|f| f == "foregroundDeletion") {
            return;
        }
        let mut new = old.clone();
        if let Some(f) = new
            .pointer_mut("/metadata/finalizers")
            .and_then(|f| f.as_array_mut())
        {
            f.retain(|x| x != "foregroundDeletion");
        }
        if let Some(def) = self.registry.by_gr(&r.gr) {
            let _ = self.commit_update(&def, &r.namespace, &r.name, rv, &old, new, false);
        }
    }

    /// Forget history: every watch from an older resourceVersion gets 410 Gone.
    pub fn expire_history(&mut self) {
        let rv = self.rv;
        for c in self.collections.values_mut() {
            c.history.clear();
            c.compacted_rv = rv;
            c.snapshots.clear();
        }
    }
}

/// Kubernetes' limit on the total size of an object's annotations (keys plus values).
pub const ANNOTATIONS_SIZE_LIMIT: usize = 256 * 1024;

/// 422 Invalid when the annotations' keys and values exceed [`ANNOTATIONS_SIZE_LIMIT`]
/// bytes in total, as the API server's `ValidateAnnotationsSize`.
fn check_annotations_size(def: &ResourceDef, name: &str, obj: &Value) -> Result<(), ApiError> {
    let Some(annotations) = obj.pointer("/metadata/annotations").and_then(Value::as_object) else {
        return Ok(());
    };
    let total: usize = annotations
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if total > ANNOTATIONS_SIZE_LIMIT {
        return Err(ApiError::invalid(
            &def.group,
            &def.kind,
            name,
            &[(
                "FieldValueTooLong",
                "metadata.annotations",
                format!("Too long: must have at most {ANNOTATIONS_SIZE_LIMIT} bytes"),
            )],
        ));
    }
    Ok(())
}

fn tracks_generation(def: &ResourceDef) -> bool {
    def.custom
        || matches!(
            def.plural.as_str(),
            "deployments"
                | "replicasets"
                | "customresourcedefinitions"
                | "validatingwebhookconfigurations"
                | "mutatingwebhookconfigurations"
        )
}

/// Does this resource track `metadata.generation`?
pub(crate) fn generation_tracked(def: &ResourceDef) -> bool {
    tracks_generation(def)
}

fn crd_status(crd: &Value) -> Value {
    let now = now_rfc3339();
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(|v| v.as_array())
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(|s| s.as_bool()).unwrap_or(false))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts",
             "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"},
        ],
        "acceptedNames": names,
        "storedVersions": stored,
    })
}
