//! URL paths of resources and objects.

/// Where a resource's objects live in the API: enough to build every URL we need.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourcePath {
    /// API group; empty for the core group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural name.
    pub plural: String,
    /// Whether the objects are namespaced.
    pub namespaced: bool,
}

impl ResourcePath {
    /// The collection URL: cluster-wide when `namespace` is `None` (or the resource is
    /// cluster-scoped), else within that namespace.
    pub fn collection(&self, namespace: Option<&str>) -> String {
        let prefix = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{prefix}/namespaces/{ns}/{}", self.plural),
            _ => format!("{prefix}/{}", self.plural),
        }
    }

    /// One object's URL, optionally a subresource of it (`status`).
    pub fn object(&self, namespace: Option<&str>, name: &str, subresource: Option<&str>) -> String {
        let base = format!("{}/{}", self.collection(namespace), name);
        match subresource {
            Some(sub) => format!("{base}/{sub}"),
            None => base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, namespaced: bool) -> ResourcePath {
        ResourcePath {
            group: group.into(),
            version: "v1".into(),
            plural: "things".into(),
            namespaced,
        }
    }

    #[test]
    fn core_and_group_paths() {
        assert_eq!(
            res("", true).collection(Some("ns")),
            "/api/v1/namespaces/ns/things"
        );
        assert_eq!(res("", true).collection(None), "/api/v1/things");
        assert_eq!(
            res("kopf.dev", true).object(Some("ns"), "x", Some("status")),
            "/apis/kopf.dev/v1/namespaces/ns/things/x/status"
        );
        assert_eq!(
            res("kopf.dev", false).collection(Some("ns")),
            "/apis/kopf.dev/v1/things"
        );
    }
}
