//! The admission seam: hooks invoked on create, update and delete before anything is stored.
//! A later issue plugs webhook calls in here.

use futures::future::BoxFuture;
use serde_json::Value;

/// The operation being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// POST.
    Create,
    /// PUT / PATCH (any subresource).
    Update,
    /// DELETE.
    Delete,
}

/// What an admission hook sees.
#[derive(Debug, Clone)]
pub struct AdmissionRequest {
    /// Operation.
    pub operation: Operation,
    /// API group.
    pub group: String,
    /// Version used by the request.
    pub version: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource (`status`, `scale`), if any.
    pub subresource: Option<String>,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Name (may be empty on create with generateName).
    pub name: String,
    /// The new object (create/update).
    pub object: Option<Value>,
    /// The current object (update/delete).
    pub old_object: Option<Value>,
    /// The requesting user.
    pub user: String,
    /// Dry run requested.
    pub dry_run: bool,
}

/// A hook's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AdmissionDecision {
    /// Let it through unchanged.
    Allow,
    /// Let it through with this replacement object (mutation).
    Mutate(Value),
    /// Refuse with an HTTP code and message.
    Deny {
        /// HTTP status code (kube uses 400/403/422 etc.).
        code: u16,
        /// Message.
        message: String,
    },
}

/// An admission hook (mutating and/or validating), called in registration order.
pub trait AdmissionHook: Send + Sync {
    /// Decide on a request.
    fn admit(&self, request: AdmissionRequest) -> BoxFuture<'_, AdmissionDecision>;
}
