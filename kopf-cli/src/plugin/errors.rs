//! What can go wrong while loading plugins or calling them.

use kopf_abi::Failure;
use kopf_abi::protocol::HandlerKind;

/// Everything that can go wrong while loading plugins or calling them.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin file does not exist.
    #[error("plugin file not found: {path}")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// The file exists but the dynamic loader refused it.
    #[error("{path} is not a shared library: {reason}")]
    NotALibrary {
        /// The path as given.
        path: String,
        /// The loader's reason.
        reason: String,
    },
    /// A shared library without the kopf ABI symbols.
    #[error("{path} is not a kopf plugin (no kopf ABI symbols; was it built with the kopf SDK as a cdylib?)")]
    NotAPlugin {
        /// The path as given.
        path: String,
    },
    /// A plugin built for another ABI revision.
    #[error(
        "{path} was built for kopf ABI revision {found}, but this kopf supports revision {expected}; \
         rebuild the plugin against a matching kopf SDK"
    )]
    RevisionMismatch {
        /// The path as given.
        path: String,
        /// The plugin's revision.
        found: u32,
        /// The host's revision.
        expected: u32,
    },
    /// abi_stable's layout or version check failed.
    #[error(
        "{path} has an incompatible kopf ABI layout (built with a different kopf-abi version?): {summary}"
    )]
    Layout {
        /// The path as given.
        path: String,
        /// A one-line summary of the mismatch.
        summary: String,
        /// abi_stable's full report (hundreds of lines); shown with `--debug`.
        detail: String,
    },
    /// A plugin's `describe` or `init` failed, or returned something unreadable.
    #[error("{path}: {step} failed: {message}")]
    Handshake {
        /// The path as given.
        path: String,
        /// `describe` or `init`.
        step: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Two handlers with the same id for the same resources.
    #[error("duplicate {kind} handler id {id:?} for {selector}: declared in {first} and in {second}")]
    DuplicateHandler {
        /// The handler kind.
        kind: HandlerKind,
        /// The handler id.
        id: String,
        /// The rendered selector.
        selector: String,
        /// The first plugin path.
        first: String,
        /// The second plugin path (the same as `first` for a duplicate inside one plugin).
        second: String,
    },
    /// The invocation could not be serialised.
    #[error("cannot encode the invocation of handler {handler:?}: {source}")]
    Encode {
        /// The handler id.
        handler: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The plugin answered a call with a failure.
    #[error("handler {handler:?} of plugin {plugin}: {failure}")]
    Call {
        /// The plugin name.
        plugin: String,
        /// The handler id.
        handler: String,
        /// The plugin's failure.
        failure: Failure,
    },
    /// The plugin's answer is not a valid outcome document.
    #[error("handler {handler:?} of plugin {plugin} returned an invalid outcome: {source}")]
    BadOutcome {
        /// The plugin name.
        plugin: String,
        /// The handler id.
        handler: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// A submitted call was lost: the plugin never completed it, or the worker died.
    #[error("handler {handler:?} of plugin {plugin}: {reason}")]
    Lost {
        /// The plugin name.
        plugin: String,
        /// The handler id.
        handler: String,
        /// What happened.
        reason: String,
    },
}

impl PluginError {
    /// Extra detail beyond the one-line message (abi_stable's layout dump), if any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Layout { detail, .. } => Some(detail),
            _ => None,
        }
    }

    /// The plugin's failure, for [`PluginError::Call`].
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::Call { failure, .. } => Some(failure),
            _ => None,
        }
    }
}
