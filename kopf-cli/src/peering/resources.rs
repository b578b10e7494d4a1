//! The peering resources: `KopfPeering` (namespaced) and `ClusterKopfPeering` (cluster)
//! in `kopf.dev/v1`, or the legacy `zalando.org/v1`; and their detection.

use kube::Client;
use serde_json::Value;

use crate::clients::{ApiError, patching, urls::ResourcePath};

/// API groups serving the peering resources, preferred first.
pub const GROUPS: [&str; 2] = ["kopf.dev", "zalando.org"];
/// The served version.
pub const VERSION: &str = "v1";
/// The plural of the namespaced peering resource.
pub const NAMESPACED_PLURAL: &str = "kopfpeerings";
/// The plural of the cluster-wide peering resource.
pub const CLUSTER_PLURAL: &str = "clusterkopfpeerings";

/// The CRDs of both peering resources (`kopf.dev/v1`), as `deploy/peering-crds.yaml`.
pub const CRDS_YAML: &str = include_str!("crds.yaml");

/// Which peering resource: one object per namespace, or one for the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `ClusterKopfPeering`.
    Cluster,
    /// `KopfPeering` in each namespace.
    Namespaced,
}

impl Scope {
    /// The resource plural.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Cluster => CLUSTER_PLURAL,
            Self::Namespaced => NAMESPACED_PLURAL,
        }
    }

    /// The kind.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Cluster => "ClusterKopfPeering",
            Self::Namespaced => "KopfPeering",
        }
    }
}

/// A detected peering resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeeringResource {
    /// `kopf.dev` or `zalando.org`.
    pub group: String,
    /// Cluster or namespaced.
    pub scope: Scope,
}

impl PeeringResource {
    /// The resource path for URLs and watches.
    pub fn path(&self) -> ResourcePath {
        ResourcePath {
            group: self.group.clone(),
            version: VERSION.into(),
            plural: self.scope.plural().into(),
            namespaced: self.scope == Scope::Namespaced,
        }
    }

    /// The URL of the peering object `name` (in `namespace` for the namespaced scope).
    pub fn object_url(&self, namespace: Option<&str>, name: &str) -> String {
        self.path().object(self.namespace(namespace), name, None)
    }

    /// The collection URL (in `namespace` for the namespaced scope).
    pub fn collection_url(&self, namespace: Option<&str>) -> String {
        self.path().collection(self.namespace(namespace))
    }

    fn namespace<'a>(&self, namespace: Option<&'a str>) -> Option<&'a str> {
        match self.scope {
            Scope::Cluster => None,
            Scope::Namespaced => namespace,
        }
    }

    /// `kopf.dev/v1`.
    pub fn api_version(&self) -> String {
        format!("{}/{VERSION}", self.group)
    }

    /// A new, empty peering object.
    pub fn new_object(&self, namespace: Option<&str>, name: &str) -> Value {
        let mut metadata = serde_json::json!({"name": name});
        if let Some(ns) = self.namespace(namespace) {
            metadata["namespace"] = Value::from(ns);
        }
        serde_json::json!({"apiVersion": self.api_version(), "kind": self.scope.kind(), "metadata": metadata})
    }

    /// Human-readable location: `'default' in 'ns'` or `'default' cluster-wide`.
    pub fn describe(&self, namespace: Option<&str>, name: &str) -> String {
        match self.namespace(namespace) {
            Some(ns) => format!("{} {name:?} in {ns:?}", self.scope.kind()),
            None => format!("{} {name:?} cluster-wide", self.scope.kind()),
        }
    }
}

/// Finds the served peering resource of `scope`: `kopf.dev` first, then `zalando.org`.
/// `Ok(None)` when neither group serves it (the CRDs are not installed).
pub async fn detect(client: &Client, scope: Scope) -> Result<Option<PeeringResource>, ApiError> {
    for group in GROUPS {
        let url = format!("/apis/{group}/{VERSION}");
        let list = match patching::get(client, &url).await {
            Ok(list) => list,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let served = list.get("resources").and_then(Value::as_array).is_some_and(|rs| {
            rs.iter()
                .any(|r| r.get("name").and_then(Value::as_str) == Some(scope.plural()))
        });
        // Before Kopf 0.11, KopfPeering was cluster-scoped: such a legacy CRD does not fit.
        let namespaced_ok = list
            .get("resources")
            .and_then(Value::as_array)
            .and_then(|rs| {
                rs.iter()
                    .find(|r| r.get("name").and_then(Value::as_str) == Some(scope.plural()))
            })
            .and_then(|r| r.get("namespaced"))
            .and_then(Value::as_bool)
            .is_none_or(|namespaced| namespaced == (scope == Scope::Namespaced));
        if served && namespaced_ok {
            return Ok(Some(PeeringResource {
                group: group.to_owned(),
                scope,
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_scope() {
        let cluster = PeeringResource {
            group: "kopf.dev".into(),
            scope: Scope::Cluster,
        };
        assert_eq!(
            cluster.object_url(Some("ignored"), "default"),
            "/apis/kopf.dev/v1/clusterkopfpeerings/default"
        );
        let ns = PeeringResource {
            group: "zalando.org".into(),
            scope: Scope::Namespaced,
        };
        assert_eq!(
            ns.object_url(Some("ns1"), "p"),
            "/apis/zalando.org/v1/namespaces/ns1/kopfpeerings/p"
        );
        assert_eq!(ns.new_object(Some("ns1"), "p")["metadata"]["namespace"], "ns1");
        assert!(
            cluster.new_object(Some("x"), "p")["metadata"]
                .get("namespace")
                .is_none()
        );
    }

    #[test]
    fn crds_define_both_kinds_without_status_subresource() {
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(CRDS_YAML)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let names: Vec<&str> = docs
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"]);
        for doc in &docs {
            assert!(doc["spec"]["versions"][0].get("subresources").is_none());
        }
    }
}
