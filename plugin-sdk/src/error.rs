//! Handler errors (Kopf's `TemporaryError`, `PermanentError`, `AdmissionError`, and any
//! other error) and the SDK's own errors.

use std::error::Error as StdError;
use std::fmt;

use kopf_abi::protocol::{HandlerError, HandlerErrorKind};

/// Kopf's default delay of a [`TemporaryError`], in seconds.
pub const DEFAULT_TEMPORARY_DELAY: f64 = 60.0;

/// A handler error that is retried after a delay (Kopf's `kopf.TemporaryError`).
///
/// ```
/// let err = kopf::TemporaryError::new("not ready yet").delay(5.0);
/// assert_eq!(err.delay_secs(), Some(5.0));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TemporaryError {
    message: String,
    delay: Option<f64>,
}

impl TemporaryError {
    /// A temporary error retried after Kopf's default delay of 60 seconds.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            delay: Some(DEFAULT_TEMPORARY_DELAY),
        }
    }

    /// Sets the delay before the retry, in seconds (`0` retries immediately).
    pub fn delay(mut self, secs: impl Into<f64>) -> Self {
        self.delay = Some(secs.into());
        self
    }

    /// The delay before the retry, in seconds.
    pub fn delay_secs(&self) -> Option<f64> {
        self.delay
    }

    /// The error text.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TemporaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for TemporaryError {}

/// A handler error that fails the handler for this cause, with no retries
/// (Kopf's `kopf.PermanentError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermanentError {
    message: String,
}

impl PermanentError {
    /// A permanent error with this text.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The error text.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PermanentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for PermanentError {}

/// Denies an admission request (Kopf's `kopf.AdmissionError`); only meaningful in
/// validating and mutating webhook handlers. The default code is 500, as in Kopf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionError {
    message: String,
    code: Option<u16>,
}

impl AdmissionError {
    /// An admission error with this text and the default code.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: Some(500),
        }
    }

    /// Sets the HTTP code returned to the API server (e.g. `403`).
    pub fn code(mut self, code: u16) -> Self {
        self.code = Some(code);
        self
    }

    /// The error text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP code.
    pub fn status_code(&self) -> Option<u16> {
        self.code
    }
}

impl fmt::Display for AdmissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for AdmissionError {}

/// Any handler error: the error type of [`crate::Result`].
///
/// Like `anyhow::Error`, every `std::error::Error + Send + Sync + 'static` converts into
/// it, so `?` works on any error inside a handler. The SDK's own error types keep their
/// meaning through the conversion (found by downcasting): a [`TemporaryError`] is retried
/// after its delay, a [`PermanentError`] fails the handler, an [`AdmissionError`] denies
/// the admission request, and anything else is an *arbitrary* error, treated per the
/// handler's `errors` mode.
///
/// It deliberately does not implement `std::error::Error` itself (that would conflict
/// with the blanket conversion, exactly as in `anyhow`).
pub struct Error {
    kind: HandlerErrorKind,
    message: String,
    delay: Option<f64>,
    code: Option<u16>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// An arbitrary error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            kind: HandlerErrorKind::Arbitrary,
            message: message.to_string(),
            delay: None,
            code: None,
            source: None,
        }
    }

    /// A temporary error (see [`TemporaryError`]).
    pub fn temporary(message: impl Into<String>, delay: impl Into<f64>) -> Self {
        TemporaryError::new(message).delay(delay).into()
    }

    /// A permanent error (see [`PermanentError`]).
    pub fn permanent(message: impl Into<String>) -> Self {
        PermanentError::new(message).into()
    }

    /// How the host treats this error.
    pub fn kind(&self) -> HandlerErrorKind {
        self.kind
    }

    /// The error text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The retry delay of a temporary error, in seconds.
    pub fn delay(&self) -> Option<f64> {
        self.delay
    }

    /// The HTTP code of an admission error.
    pub fn code(&self) -> Option<u16> {
        self.code
    }

    /// The original error, if this one was converted from a `std::error::Error`.
    pub fn source_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// Borrows the original error as `E`, if it was one.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.source.as_deref().and_then(|e| e.downcast_ref::<E>())
    }

    /// The error as the ABI's JSON [`HandlerError`].
    pub fn to_handler_error(&self) -> HandlerError {
        HandlerError {
            kind: self.kind,
            message: self.message.clone(),
            delay: self.delay,
            code: self.code,
            panicked: false,
        }
    }
}

impl<E> From<E> for Error
where
    E: StdError + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        let boxed: Box<dyn StdError + Send + Sync + 'static> = Box::new(error);
        let message = boxed.to_string();
        let (kind, delay, code) = if let Some(t) = boxed.downcast_ref::<TemporaryError>() {
            (HandlerErrorKind::Temporary, t.delay, None)
        } else if boxed.downcast_ref::<PermanentError>().is_some() {
            (HandlerErrorKind::Permanent, None, None)
        } else if let Some(a) = boxed.downcast_ref::<AdmissionError>() {
            (HandlerErrorKind::Admission, None, a.code)
        } else {
            (HandlerErrorKind::Arbitrary, None, None)
        };
        Self {
            kind,
            message,
            delay,
            code,
            source: Some(boxed),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("delay", &self.delay)
            .field("code", &self.code)
            .finish()
    }
}

/// The result type of handlers: `kopf::Result<T>` = `Result<T, kopf::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the SDK itself: bad registrations, bad selectors, host calls that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SdkError {
    /// A resource selector cannot be understood.
    #[error("handler {handler:?}: bad resource selector: {reason}")]
    Selector {
        /// The handler id.
        handler: String,
        /// What is wrong.
        reason: String,
    },
    /// A handler option or filter is invalid for this handler.
    #[error("handler {handler:?}: {reason}")]
    Option {
        /// The handler id.
        handler: String,
        /// What is wrong.
        reason: String,
    },
    /// Two handlers of one plugin have the same id.
    #[error(
        "duplicate handler id {id:?} ({first} and {second}); give one of them an explicit `id = \"...\"`"
    )]
    DuplicateId {
        /// The id.
        id: String,
        /// The first handler's kind.
        first: String,
        /// The second handler's kind.
        second: String,
    },
    /// Attributes stacked on one function share its id in a way that cannot work.
    #[error(
        "handler id {id:?} is shared by attributes stacked on one function, but {reason}; \
         give one of them an explicit `id = \"...\"`"
    )]
    SharedId {
        /// The id.
        id: String,
        /// What makes the sharing impossible.
        reason: String,
    },
    /// A handler has no function attached.
    #[error("handler {0:?} has no function; call `sync_fn` or `async_fn` on the builder")]
    NoFunction(String),
    /// The plugin's async runtime could not be built.
    #[error("cannot build the plugin's tokio runtime: {0}")]
    Runtime(String),
}

/// Errors of calls into the host ([`kopf_abi::HostTable::call`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HostCallError {
    /// The plugin was not initialised by a host (e.g. in a unit test without a host).
    #[error("the plugin is not initialised by a host")]
    NotInitialised,
    /// The host does not support this method.
    #[error("the host does not support {0:?}")]
    Unsupported(String),
    /// The host failed the call.
    #[error("host call {method:?} failed: {message}")]
    Failed {
        /// The method.
        method: String,
        /// The host's message.
        message: String,
    },
    /// The request or the answer is not valid JSON of the expected shape.
    #[error("host call {method:?}: bad JSON: {message}")]
    BadJson {
        /// The method.
        method: String,
        /// The decoding error.
        message: String,
    },
}

/// Why [`crate::Registry::invoke`] could not run a handler at all (handler errors are not
/// invoke errors: they are part of the [`kopf_abi::protocol::Outcome`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvokeError {
    /// No handler has this id.
    #[error("unknown handler id {0:?}")]
    UnknownHandler(String),
    /// The invocation JSON is malformed.
    #[error("bad invocation payload: {0}")]
    BadPayload(String),
    /// The registry itself is invalid.
    #[error(transparent)]
    Sdk(#[from] SdkError),
    /// The call was cancelled before it completed.
    #[error("the call was cancelled")]
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk on fire")]
    struct Custom;

    #[test]
    fn classification_by_downcast() {
        let e: Error = TemporaryError::new("later").delay(5).into();
        assert_eq!(e.kind(), HandlerErrorKind::Temporary);
        assert_eq!(e.delay(), Some(5.0));
        assert_eq!(e.message(), "later");

        let e: Error = PermanentError::new("never").into();
        assert_eq!(e.kind(), HandlerErrorKind::Permanent);
        assert_eq!(e.delay(), None);

        let e: Error = AdmissionError::new("denied").code(403).into();
        assert_eq!(e.kind(), HandlerErrorKind::Admission);
        assert_eq!(e.code(), Some(403));

        let e: Error = Custom.into();
        assert_eq!(e.kind(), HandlerErrorKind::Arbitrary);
        assert_eq!(e.message(), "disk on fire");
        assert!(e.downcast_ref::<Custom>().is_some());

        let e = Error::msg("plain");
        assert_eq!(e.to_handler_error().kind, HandlerErrorKind::Arbitrary);
        assert!(!e.to_handler_error().panicked);
    }

    #[test]
    fn defaults_follow_kopf() {
        assert_eq!(TemporaryError::new("x").delay_secs(), Some(60.0));
        assert_eq!(AdmissionError::new("x").status_code(), Some(500));
    }

    #[test]
    fn question_mark_works_on_any_error() {
        fn parse(s: &str) -> Result<i32> {
            Ok(s.parse::<i32>()?)
        }
        let err = parse("nope").unwrap_err();
        assert_eq!(err.kind(), HandlerErrorKind::Arbitrary);
        assert!(err.message().contains("invalid digit"));
    }
}
