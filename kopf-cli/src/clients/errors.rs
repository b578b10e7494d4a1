//! Errors of API requests, classified the way the engine needs to react to them.

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
            },
            other => Self::Transport(other),
        }
    }
}
