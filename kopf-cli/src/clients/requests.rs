//! Sending requests while keeping the server's `Retry-After`.
//!
//! The engine's kube client already retries 429, 503 and 504 answers by itself (kube's
//! server-aware retry policy: up to 15 times, exponential backoff from 5 ms, the server's
//! `Retry-After` as the minimum pause). When it gives up, [`request_json`] keeps what
//! kube's own `Client::request` drops: the `Retry-After` of the failure (header or
//! `details.retryAfterSeconds`), so that the engine's own backoffs respect it too
//! ([`ApiError::retry_delay`], and Kopf's `settings.networking.enforce_retry_after`).

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use kube::Client;
use serde_json::Value;

use super::ApiError;

/// The longest `Retry-After` taken from the server (a sanity bound against garbage).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Sends a request and decodes its JSON answer. Failures are [`ApiError::Status`] with
/// the server's `Retry-After`, if any; an undecodable success body is a transport error
/// (retriable, as with kube's own client).
pub async fn request_json(client: &Client, request: http::Request<Vec<u8>>) -> Result<Value, ApiError> {
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status();
    let retry_after = retry_after_header(response.headers());
    let bytes = response.into_body().collect().await?.to_bytes();
    if status.is_client_error() || status.is_server_error() {
        return Err(status_error(status, &bytes, retry_after));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Transport(kube::Error::SerdeError(e)))
}

/// Builds the error of a failed answer from its body: a Kubernetes `Status` if it is
/// one, else the body's text as the message.
fn status_error(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> ApiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok().filter(Value::is_object);
    let text = |key: &str| {
        parsed
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let retry_after = retry_after.or_else(|| {
        parsed
            .as_ref()
            .and_then(|p| p.pointer("/details/retryAfterSeconds"))
            .and_then(Value::as_u64)
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
    });
    ApiError::Status {
        code: status.as_u16(),
        reason: text("reason").unwrap_or_else(|| status.canonical_reason().unwrap_or_default().to_owned()),
        message: text("message").unwrap_or_else(|| {
            let body = String::from_utf8_lossy(body);
            body.trim().chars().take(500).collect()
        }),
        retry_after,
    }
}

/// The `Retry-After` header as a duration (only the seconds form; Kubernetes sends no
/// dates).
pub fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn failures_keep_the_status_and_the_retry_after() {
        let body = br#"{"kind":"Status","reason":"TooManyRequests","message":"slow down","details":{"retryAfterSeconds":7}}"#;
        let error = status_error(StatusCode::TOO_MANY_REQUESTS, body, None);
        assert_eq!(error.code(), Some(429));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert!(
            error.to_string().contains("TooManyRequests: slow down"),
            "{error}"
        );
        // The header wins over the body's details.
        let error = status_error(StatusCode::TOO_MANY_REQUESTS, body, Some(Duration::from_secs(2)));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
        // Not a Status: the text is the message.
        let error = status_error(StatusCode::BAD_GATEWAY, b"<html>Bad Gateway</html>", None);
        assert_eq!(error.code(), Some(502));
        assert!(error.is_retriable());
        assert!(error.to_string().contains("<html>Bad Gateway</html>"), "{error}");
    }

    #[test]
    fn only_the_seconds_form_of_the_header_is_understood() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after_header(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Fri, 31 Dec 1999 23:59:59 GMT"),
        );
        assert_eq!(retry_after_header(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("999999999"));
        assert_eq!(retry_after_header(&headers), Some(MAX_RETRY_AFTER));
    }
}
