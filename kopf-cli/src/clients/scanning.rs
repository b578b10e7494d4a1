//! Discovery of the API's resources (`/api`, `/apis`, and each group-version).
//!
//! kube's own `Discovery` drops short names, singular names and categories, which Kopf's
//! selectors need, so the raw discovery documents are read here. Servers with aggregated
//! discovery (Kubernetes 1.30+) answer everything in the two requests for `/api` and `/apis`;
//! older servers (and the emulator) answer those with the plain lists, from which each
//! group-version is then read (one request each).

use std::collections::BTreeSet;

use http::header::ACCEPT;
use kube::Client;
use serde_json::Value;

use super::ApiError;
use crate::structs::references::Resource;

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

/// Pauses before the retries of a failed discovery request (Kopf's default
/// `networking.error_backoffs`): a passing server error must not stop the operator.
const RETRY_BACKOFFS: [u64; 8] = [1, 1, 2, 3, 5, 8, 13, 21];

/// Asks for the aggregated document and accepts the plain one (servers choose).
const AGGREGATED: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";

async fn get_json(client: &Client, path: &str) -> Result<Value, ApiError> {
    get_json_as(client, path, "application/json").await
}

async fn get_json_as(client: &Client, path: &str, accept: &str) -> Result<Value, ApiError> {
    let mut backoffs = RETRY_BACKOFFS.iter();
    loop {
        let request = http::Request::get(path)
            .header(ACCEPT, accept)
            .body(Vec::new())
            .map_err(|e| ApiError::Request(e.to_string()))?;
        let error = match super::requests::request_json(client, request).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        match backoffs.next() {
            Some(secs) if error.is_retriable() => {
                let delay = error.retry_delay(std::time::Duration::from_secs(*secs), false);
                tracing::warn!(%path, "discovery failed ({error}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
            _ => return Err(error),
        }
    }
}

/// Scans the API for resources of the wanted groups: with aggregated discovery, one request
/// for `/api` and one for `/apis`; otherwise also one per core version and one per wanted
/// group-version.
pub async fn scan(client: &Client, groups: &GroupFilter) -> Result<Vec<Resource>, ApiError> {
    let mut found = Vec::new();
    if groups.wants("") {
        let core = get_json_as(client, "/api", AGGREGATED).await?;
        if is_aggregated(&core) {
            found.extend(from_aggregated(client, &core, groups).await?);
        } else {
            let versions = string_list(core.get("versions"));
            for (index, version) in versions.iter().enumerate() {
                let list = get_json(client, &format!("/api/{version}")).await?;
                found.extend(parse(&list, "", version, index == 0)?);
            }
        }
    }
    if groups != &GroupFilter::Only(BTreeSet::from([String::new()])) {
        let apis = get_json_as(client, "/apis", AGGREGATED).await?;
        if is_aggregated(&apis) {
            found.extend(from_aggregated(client, &apis, groups).await?);
            return Ok(found);
        }
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
                found.extend(parse(&list, name, version, preferred == Some(version))?);
            }
        }
    }
    Ok(found)
}

fn is_aggregated(document: &Value) -> bool {
    document.get("kind").and_then(Value::as_str) == Some("APIGroupDiscoveryList")
}

/// The resources of an aggregated discovery document (`APIGroupDiscoveryList`), through the
/// same parser as the plain lists. Versions come in preference order. A version marked stale
/// (an aggregated API server that did not answer) is read on its own, as without aggregation.
async fn from_aggregated(
    client: &Client,
    document: &Value,
    groups: &GroupFilter,
) -> Result<Vec<Resource>, ApiError> {
    let mut found = Vec::new();
    for group in document
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = crate::structs::bodies::Body::new(group)
            .name()
            .unwrap_or_default();
        if !groups.wants(name) {
            continue;
        }
        let versions = group
            .get("versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for (index, entry) in versions.enumerate() {
            let Some(version) = entry.get("version").and_then(Value::as_str) else {
                continue;
            };
            let list = if entry.get("freshness").and_then(Value::as_str) == Some("Stale") {
                let path = match name {
                    "" => format!("/api/{version}"),
                    _ => format!("/apis/{name}/{version}"),
                };
                match get_json(client, &path).await {
                    Ok(list) => list,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                }
            } else {
                resource_list_of(entry)
            };
            found.extend(parse(&list, name, version, index == 0)?);
        }
    }
    Ok(found)
}

/// One version of an aggregated document as the `APIResourceList` it stands for.
fn resource_list_of(version: &Value) -> Value {
    let mut resources = Vec::new();
    for resource in version
        .get("resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let plural = resource
            .get("resource")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = resource
            .pointer("/responseKind/kind")
            .cloned()
            .unwrap_or(Value::Null);
        resources.push(serde_json::json!({
            "name": plural,
            "singularName": resource.get("singularResource").cloned().unwrap_or(Value::Null),
            "namespaced": resource.get("scope").and_then(Value::as_str) == Some("Namespaced"),
            "kind": kind,
            "verbs": resource.get("verbs").cloned().unwrap_or(Value::Null),
            "shortNames": resource.get("shortNames").cloned().unwrap_or(Value::Null),
            "categories": resource.get("categories").cloned().unwrap_or(Value::Null),
        }));
        for sub in resource
            .get("subresources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let subresource = sub.get("subresource").and_then(Value::as_str).unwrap_or_default();
            resources.push(serde_json::json!({
                "name": format!("{plural}/{subresource}"),
                "kind": sub.pointer("/responseKind/kind").cloned().unwrap_or(Value::Null),
                "verbs": sub.get("verbs").cloned().unwrap_or(Value::Null),
            }));
        }
    }
    serde_json::json!({"kind": "APIResourceList", "resources": resources})
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

fn parse(list: &Value, group: &str, version: &str, preferred: bool) -> Result<Vec<Resource>, ApiError> {
    Resource::from_api_resource_list(group, version, preferred, list)
        .map_err(|e| ApiError::Unexpected(format!("discovery of {group}/{version}: {e}")))
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
        ]});
        let found = parse(&list, "kopf.dev", "v1", true).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].has_status_subresource());
        assert!(found[0].shortcuts.contains("kex"));
        assert!(found[0].preferred && found[0].namespaced && found[0].is_watchable());
        assert!(GroupFilter::All.wants("x") && !GroupFilter::Only(BTreeSet::new()).wants("x"));
    }

    #[test]
    fn aggregated_versions_read_like_resource_lists() {
        let version = json!({"version": "v1", "freshness": "Current", "resources": [
            {"resource": "kopfexamples", "responseKind": {"group": "kopf.dev", "version": "v1", "kind": "KopfExample"},
             "scope": "Namespaced", "singularResource": "kopfexample", "verbs": ["get", "list", "watch", "patch"],
             "shortNames": ["kex"], "categories": ["all"],
             "subresources": [{"subresource": "status", "responseKind": {"kind": "KopfExample"}, "verbs": ["get", "patch"]}]},
            {"resource": "clusterthings", "responseKind": {"kind": "ClusterThing"}, "scope": "Cluster", "verbs": ["get"]},
        ]});
        let found = parse(&resource_list_of(&version), "kopf.dev", "v1", true).unwrap();
        assert_eq!(found.len(), 2);
        let kex = &found[0];
        assert_eq!(
            (kex.kind.as_str(), kex.singular.as_str()),
            ("KopfExample", "kopfexample")
        );
        assert!(kex.namespaced && kex.has_status_subresource() && kex.is_watchable());
        assert!(kex.shortcuts.contains("kex") && kex.categories.contains("all"));
        let cluster_thing = &found[1];
        assert!(!cluster_thing.namespaced && cluster_thing.singular == "clusterthing");
        assert!(is_aggregated(&json!({"kind": "APIGroupDiscoveryList"})));
        assert!(!is_aggregated(&json!({"kind": "APIGroupList"})));
    }
}
