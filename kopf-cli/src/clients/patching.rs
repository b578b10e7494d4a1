//! Sending patches: merge patches and JSON patches, to objects and their `status`.

use http::header::{ACCEPT, CONTENT_TYPE};
use kube::Client;
use serde_json::Value;

use super::ApiError;

/// The content type of a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
}

impl PatchType {
    fn content_type(self) -> &'static str {
        match self {
            Self::Merge => "application/merge-patch+json",
            Self::Json => "application/json-patch+json",
        }
    }
}

/// Sends a request, named by its verb for the metrics of counted clients
/// ([`super::connection::counted_client`]).
async fn send(
    client: &Client,
    verb: &'static str,
    mut request: http::Request<Vec<u8>>,
) -> Result<Value, ApiError> {
    request.extensions_mut().insert(super::connection::ApiVerb(verb));
    super::requests::request_json(client, request).await
}

/// Sends one PATCH to `url` (an object's or a subresource's URL) and returns the
/// patched object as the server stored it.
pub async fn patch(client: &Client, url: &str, kind: PatchType, patch: &Value) -> Result<Value, ApiError> {
    let body = serde_json::to_vec(patch).map_err(|e| ApiError::Request(e.to_string()))?;
    let request = http::Request::patch(url)
        .header(CONTENT_TYPE, kind.content_type())
        .header(ACCEPT, "application/json")
        .body(body)
        .map_err(|e| ApiError::Request(e.to_string()))?;
    send(client, "patch", request).await
}

/// Fetches one object (used after a failed precondition to re-read the state).
pub async fn get(client: &Client, url: &str) -> Result<Value, ApiError> {
    let request = http::Request::get(url)
        .header(ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| ApiError::Request(e.to_string()))?;
    send(client, "get", request).await
}

/// Creates an object in a collection URL and returns it as stored.
pub async fn create(client: &Client, collection_url: &str, object: &Value) -> Result<Value, ApiError> {
    let body = serde_json::to_vec(object).map_err(|e| ApiError::Request(e.to_string()))?;
    let request = http::Request::post(collection_url)
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .body(body)
        .map_err(|e| ApiError::Request(e.to_string()))?;
    send(client, "create", request).await
}
