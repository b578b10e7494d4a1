//! Errors of API requests, classified the way the engine needs to react to them.

use std::time::Duration;

/// An API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with a `Status` failure.
    #[error("API error {code} {reason}: {message}")]
    Status {
        /// HTTP status code.
        code: u16,
        /// The `reason` of the Status (e.g. `NotFound`, `Conflict`, `Expired`).
        reason: String,
        /// The human-readable message.
        message: String,
        /// How long the server asked us to wait before retrying (the `Retry-After`
        /// header or the Status's `details.retryAfterSeconds`), if it did.
        retry_after: Option<Duration>,
    },
    /// The request could not be sent or the response could not be read.
    #[error("API request failed: {0}")]
    Transport(#[source] kube::Error),
    /// A request could not be built (a bug or an invalid name).
    #[error("cannot build the API request: {0}")]
    Request(String),
    /// The response was not what the API promises.
    #[error("unexpected API response: {0}")]
    Unexpected(String),
}

impl ApiError {
    /// The HTTP status code, if the server answered with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Status { code, .. } => Some(*code),
            Self::Transport(kube::Error::Api(status)) => Some(status.code),
            _ => None,
        }
    }

    /// 404: the object or the resource is gone.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// 410: the requested resourceVersion is too old (relist needed).
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }

    /// 409 or 422: a precondition or a JSON-patch `test` failed.
    pub fn is_conflict(&self) -> bool {
        matches!(self.code(), Some(409) | Some(422))
    }

    /// 401/403: the credentials do not allow this.
    pub fn is_permission(&self) -> bool {
        matches!(self.code(), Some(401) | Some(403))
    }

    /// How a failed request reads in a log line: for 401/403 a permission error naming the
    /// verb and the resource the operator's credentials lack (`resource` as RBAC names it,
    /// e.g. `"kopfexamples" in API group "kopf.dev"`), otherwise the error itself.
    pub fn describe(&self, verb: &str, resource: &str) -> String {
        if self.is_permission() {
            format!(
                "permission denied: the operator may not {verb} {resource} ({self}); \
                 its role needs the verb {verb:?} on that resource (see `kopf rbac`)"
            )
        } else {
            format!("{verb} {resource} failed: {self}")
        }
    }

    /// The server's `Retry-After`, if it sent one with this failure.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The pause before retrying after this failure, given the caller's own `backoff`:
    /// the server's `Retry-After` wins when it is longer, or always when `enforce` is set
    /// (Kopf's `settings.networking.enforce_retry_after`).
    pub fn retry_delay(&self, backoff: Duration, enforce: bool) -> Duration {
        match self.retry_after() {
            Some(asked) if enforce || asked > backoff => asked,
            _ => backoff,
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self.code() {
            Some(code) => code == 429 || code >= 500,
            None => matches!(self, Self::Transport(_)),
        }
    }
}

impl From<kube::Error> for ApiError {
    fn from(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => Self::Status {
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
                retry_after: None,
            },
            other => Self::Transport(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttled(seconds: u64) -> ApiError {
        ApiError::Status {
            code: 429,
            reason: "TooManyRequests".into(),
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(seconds)),
        }
    }

    #[test]
    fn permission_errors_name_the_verb_and_the_resource() {
        let forbidden = ApiError::Status {
            code: 403,
            reason: "Forbidden".into(),
            message: "no".into(),
            retry_after: None,
        };
        let resource = r#""kopfexamples" in API group "kopf.dev""#;
        let text = forbidden.describe("get", resource);
        assert!(
            text.starts_with(
                r#"permission denied: the operator may not get "kopfexamples" in API group "kopf.dev""#
            ) && text.contains(r#"the verb "get""#),
            "{text}"
        );
        let other = ApiError::Unexpected("x".into()).describe("patch", resource);
        assert!(
            other.starts_with("patch \"kopfexamples\"") && !other.contains("permission"),
            "{other}"
        );
    }

    #[test]
    fn retry_after_is_the_minimum_delay_unless_enforced() {
        let backoff = Duration::from_secs(2);
        assert_eq!(throttled(5).retry_delay(backoff, false), Duration::from_secs(5));
        assert_eq!(
            throttled(1).retry_delay(backoff, false),
            backoff,
            "the longer backoff wins"
        );
        assert_eq!(
            throttled(1).retry_delay(backoff, true),
            Duration::from_secs(1),
            "enforced: the server's value, even if shorter"
        );
        let plain = ApiError::Unexpected("x".into());
        assert_eq!(plain.retry_delay(backoff, true), backoff);
    }
}
