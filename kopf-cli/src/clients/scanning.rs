//! Discovery of the API's resources (`/api`, `/apis`, and each group-version).
//!
//! kube's own `Discovery` drops short names, singular names and categories, which Kopf's
//! selectors need, so the raw `APIResourceList`s are read here.

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

async fn get_json(client: &Client, path: &str) -> Result<Value, ApiError> {
    let mut backoffs = RETRY_BACKOFFS.iter();
    loop {
        let request = http::Request::get(path)
            .header(ACCEPT, "application/json")
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

/// Scans the API for resources of the wanted groups: one request for `/api` plus one per
/// core version, one for `/apis` plus one per wanted group-version.
pub async fn scan(client: &Client, groups: &GroupFilter) -> Result<Vec<Resource>, ApiError> {
    let mut found = Vec::new();
    if groups.wants("") {
        let core = get_json(client, "/api").await?;
        let versions = string_list(core.get("versions"));
        for (index, version) in versions.iter().enumerate() {
            let list = get_json(client, &format!("/api/{version}")).await?;
            found.extend(parse(&list, "", version, index == 0)?);
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
                found.extend(parse(&list, name, version, preferred == Some(version))?);
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
}
