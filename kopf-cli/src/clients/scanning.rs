//! Discovery of the API's resources (`/api`, `/apis`, and each group-version).
//!
//! kube's own `Discovery` drops short names, singular names and categories, which Kopf's
//! selectors need, so the raw `APIResourceList`s are read here.

use std::collections::BTreeSet;

use http::header::ACCEPT;
use kube::Client;
use serde_json::Value;

use super::ApiError;

/// One resource as the API serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiscoveredResource {
    /// API group; empty for the core group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Whether this is the group's preferred version.
    pub preferred: bool,
    /// Plural name.
    pub plural: String,
    /// Singular name (lowercase kind when the server sends none).
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Short names.
    pub shortcuts: Vec<String>,
    /// Categories.
    pub categories: Vec<String>,
    /// Whether the objects are namespaced.
    pub namespaced: bool,
    /// Supported verbs.
    pub verbs: Vec<String>,
    /// Subresources (`status`, `scale`, ...).
    pub subresources: Vec<String>,
}

/// Which groups to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupFilter {
    /// Every group the server has.
    All,
    /// Only these groups (`""` for the core group).
    Only(BTreeSet<String>),
}

impl GroupFilter {
    fn wants(&self, group: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(groups) => groups.contains(group),
        }
    }
}

async fn get_json(client: &Client, path: &str) -> Result<Value, ApiError> {
    let request = http::Request::get(path)
        .header(ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| ApiError::Request(e.to_string()))?;
    Ok(client.request::<Value>(request).await?)
}

/// Scans the API for resources of the wanted groups: one request for `/api` plus one per
/// core version, one for `/apis` plus one per wanted group-version.
pub async fn scan(client: &Client, groups: &GroupFilter) -> Result<Vec<DiscoveredResource>, ApiError> {
    let mut found = Vec::new();
    if groups.wants("") {
        let core = get_json(client, "/api").await?;
        let versions = string_list(core.get("versions"));
        for (index, version) in versions.iter().enumerate() {
            let list = get_json(client, &format!("/api/{version}")).await?;
            parse_resource_list(&list, "", version, index == 0, &mut found);
        }
    }
    if groups != &GroupFilter::Only(BTreeSet::from([String::new()])) {
        let apis = get_json(client, "/apis").await?;
        for group in apis.get("groups").and_then(Value::as_array).into_iter().flatten() {
            let Some(name) = group.get("name").and_then(Value::as_str) else {
                continue;
            };
            if !groups.wants(name) {
                continue;
            }
            let preferred = group.pointer("/preferredVersion/version").and_then(Value::as_str);
            for version in group
                .get("versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(version) = version.get("version").and_then(Value::as_str) else {
                    continue;
                };
                let list = match get_json(client, &format!("/apis/{name}/{version}")).await {
                    Ok(list) => list,
                    // A group-version may vanish between the two requests (CRD deletion).
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                };
                parse_resource_list(&list, name, version, preferred == Some(version), &mut found);
            }
        }
    }
    Ok(found)
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads one `APIResourceList` into resources; subresource entries (`pods/status`)
/// are attached to their main resources.
pub fn parse_resource_list(
    list: &Value,
    group: &str,
    version: &str,
    preferred: bool,
    found: &mut Vec<DiscoveredResource>,
) {
    let entries = list
        .get("resources")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let start = found.len();
    for entry in entries {
        let Some(name) = entry.get("name").and_then(Value::as_str) else {
            continue;
        };
        if name.contains('/') {
            continue;
        }
        let kind = entry
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let singular = entry
            .get("singularName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| kind.to_lowercase());
        found.push(DiscoveredResource {
            group: group.to_owned(),
            version: version.to_owned(),
            preferred,
            plural: name.to_owned(),
            singular,
            kind,
            shortcuts: string_list(entry.get("shortNames")),
            categories: string_list(entry.get("categories")),
            namespaced: entry.get("namespaced").and_then(Value::as_bool).unwrap_or(false),
            verbs: string_list(entry.get("verbs")),
            subresources: Vec::new(),
        });
    }
    for entry in entries {
        let Some(name) = entry.get("name").and_then(Value::as_str) else {
            continue;
        };
        let Some((main, sub)) = name.split_once('/') else {
            continue;
        };
        if let Some(resource) = found[start..].iter_mut().find(|r| r.plural == main) {
            resource.subresources.push(sub.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_lists_with_subresources() {
        let list = json!({"kind": "APIResourceList", "groupVersion": "kopf.dev/v1", "resources": [
            {"name": "kopfexamples", "singularName": "kopfexample", "namespaced": true, "kind": "KopfExample",
             "verbs": ["get", "list", "watch", "patch"], "shortNames": ["kex", "kexes"], "categories": ["all"]},
            {"name": "kopfexamples/status", "singularName": "", "namespaced": true, "kind": "KopfExample",
             "verbs": ["get", "patch"]},
            {"name": "bindings", "namespaced": true, "kind": "Binding", "verbs": ["create"]},
        ]});
        let mut found = Vec::new();
        parse_resource_list(&list, "kopf.dev", "v1", true, &mut found);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].subresources, vec!["status"]);
        assert_eq!(found[0].shortcuts, vec!["kex", "kexes"]);
        assert_eq!(found[1].singular, "binding");
        assert!(found[0].preferred && found[0].namespaced);
    }
}
