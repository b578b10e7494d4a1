//! The stable plugin ABI between the `kopf` host binary and handler plugins.
//!
//! A plugin is a `cdylib` built with the `kopf` SDK. The host loads it with
//! [`abi_stable`] and talks to it through one tiny, frozen root module,
//! [`PluginModule`]:
//!
//! | entry | direction | what it carries |
//! |---|---|---|
//! | [`PluginModule::abi_revision`] | plugin → host | the [`ABI_REVISION`] the plugin was built against |
//! | [`PluginModule::describe`] | host → plugin | JSON [`protocol::PluginDescription`]: every handler and its options |
//! | [`PluginModule::init`] | host → plugin | the [`HostTable`] of callbacks and a JSON config; JSON back |
//! | [`PluginModule::invoke`] | host → plugin | handler id + JSON [`protocol::Invocation`] in, JSON [`protocol::Outcome`] out (blocking) |
//! | [`PluginModule::submit`] | host → plugin | the same, non-blocking: the outcome comes back through [`HostTable::complete`] |
//! | [`PluginModule::cancel`] | host → plugin | cancel a submitted call (async daemons) |
//! | [`PluginModule::control`] | host → plugin | a generic, versioned, JSON-in/JSON-out call for anything else |
//!
//! and one callback table in the other direction, [`HostTable`]: `log`, a generic
//! versioned `call` (post an event, look up an index, ask whether a daemon is stopped...),
//! and `complete` for submitted calls.
//!
//! # The versioning rule
//!
//! The struct layouts in this crate are **frozen**. abi_stable refuses to load a plugin
//! into a host whose root module has more prefix fields than the plugin's, so adding a
//! field would lock out every plugin built before. Instead:
//!
//! 1. New capabilities travel as new, optional fields of the JSON documents in
//!    [`protocol`] (serde defaults on both sides), or as new `method` names of
//!    [`HostTable::call`] and [`PluginModule::control`] (which answer
//!    [`FailureKind::UNSUPPORTED`] for methods they do not know).
//! 2. Only a change that cannot be expressed that way bumps [`ABI_REVISION`], together
//!    with a new root module type. The host reads the revision from the plain exported
//!    symbol [`REVISION_SYMBOL`] *before* the abi_stable layout check, so a plugin of
//!    another revision is refused with both revisions named, not with a layout dump.
//! 3. The crate's version is not the workspace's: its **major version is the ABI
//!    revision** (`1.y.z` for revision 1), checked at compile time. abi_stable records the
//!    defining crate's version in every type layout and refuses a plugin whose major
//!    differs, so releases of `kopf`, the SDK and this crate's `1.y` line all keep loading
//!    plugins built before. The root module's version strings are the revision itself
//!    ([`ABI_VERSION`]), not the crate version, so a newer `1.y` host does not demand a
//!    plugin built with at least its own minor version.
//!
//! `tests/abi1/` holds a plugin built against a frozen copy of revision 1; every future
//! `kopf` must load and run it (`tests/tests/abi_frozen.rs`).
//!
//! # Safety contract for plugins
//!
//! Every exported function must catch panics (`std::panic::catch_unwind`) and turn them
//! into [`Failure`]s of kind [`FailureKind::PANIC`]: a panic unwinding out of an
//! `extern "C"` function aborts the whole `kopf` process. The SDK's export macro does
//! this; hand-written plugins must too. A plugin has its own copies of `std`, `tokio` and
//! `tracing`: it must not expect the host's runtime or subscriber to be visible.
#![deny(missing_docs)]

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    sabi_types::VersionStrings,
    std_types::{RResult, RStr, RString},
};

pub mod protocol;

/// The ABI revision of this crate. A host loads only plugins of the same revision.
pub const ABI_REVISION: u32 = 1;

/// The version abi_stable checks for the root module: `ABI_REVISION.0.0`.
///
/// Fixed per revision, so that it never follows the crate's minor or patch releases.
pub const ABI_VERSION: &str = "1.0.0";

// The crate's major version must be the revision: abi_stable compares it in every layout.
const _: () = {
    let major = env!("CARGO_PKG_VERSION_MAJOR").as_bytes();
    let revision = ABI_VERSION.as_bytes();
    assert!(
        major.len() == 1 && revision[0] == major[0] && revision[1] == b'.',
        "kopf-abi's major version must equal ABI_REVISION (see the crate docs)"
    );
    assert!(revision[0] - b'0' == ABI_REVISION as u8);
};

/// The name of the plain `u32` static every plugin exports next to the abi_stable header.
///
/// The host reads it with a raw symbol lookup before any layout check.
pub const REVISION_SYMBOL: &str = "kopf_abi_revision";

/// What kind of failure a call across the ABI ended with.
///
/// A transparent `u8` rather than an enum, so that a value from a newer peer is
/// never undefined behaviour; unknown values read as [`FailureKind::INTERNAL`].
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailureKind(pub u8);

impl FailureKind {
    /// The handler id is not known to the plugin.
    pub const UNKNOWN_HANDLER: Self = Self(1);
    /// The JSON payload could not be read.
    pub const BAD_PAYLOAD: Self = Self(2);
    /// The handler (or the plugin) panicked; the message holds the panic text.
    pub const PANIC: Self = Self(3);
    /// Any other failure inside the plugin or the host.
    pub const INTERNAL: Self = Self(4);
    /// The method or capability is not supported by this side.
    pub const UNSUPPORTED: Self = Self(5);
    /// The call was cancelled before it completed.
    pub const CANCELLED: Self = Self(6);

    /// A short, stable name for logs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::UNKNOWN_HANDLER => "unknown handler",
            Self::BAD_PAYLOAD => "bad payload",
            Self::PANIC => "panic",
            Self::UNSUPPORTED => "unsupported",
            Self::CANCELLED => "cancelled",
            _ => "internal error",
        }
    }
}

/// A typed failure of a call across the ABI. Handler errors (temporary, permanent,
/// arbitrary) are *not* failures: they are part of the JSON [`protocol::Outcome`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub kind: FailureKind,
    /// A human-readable description.
    pub message: RString,
}

impl Failure {
    /// Builds a failure of the given kind.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for Failure {}

/// Log levels for [`HostTable::log`]; a transparent `u8` for the same reason as [`FailureKind`].
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogLevel(pub u8);

impl LogLevel {
    /// Errors.
    pub const ERROR: Self = Self(1);
    /// Warnings.
    pub const WARN: Self = Self(2);
    /// Informational messages.
    pub const INFO: Self = Self(3);
    /// Debug messages.
    pub const DEBUG: Self = Self(4);
    /// Trace messages.
    pub const TRACE: Self = Self(5);
}

/// The host's callbacks, handed to the plugin once by [`PluginModule::init`].
///
/// All functions are thread-safe and may be called from any thread of the plugin.
/// `context` is an opaque value that the plugin passes back unchanged. One plugin image
/// may be initialised by several operators of one process (each with its own table):
/// each call's [`protocol::Invocation::host_context`] names the table whose `context` the
/// host calls made for that call pass back.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct HostTable {
    /// Opaque host state; pass it back as the first argument of every callback.
    pub context: usize,
    /// Writes a log line into the host's log. `object` is the `namespace/name` of the
    /// object being handled (empty for none); `target` is the plugin's log target.
    pub log:
        extern "C" fn(context: usize, level: LogLevel, target: RStr<'_>, object: RStr<'_>, message: RStr<'_>),
    /// A generic, versioned request to the host: `method` names it (for example
    /// `"event.post"`, `"index.get"`, `"daemon.wait"`), `version` is the method's own
    /// revision, `payload` and the answer are JSON. Unknown methods answer
    /// [`FailureKind::UNSUPPORTED`]. May block; never call it while holding a lock the
    /// host could need.
    pub call: extern "C" fn(
        context: usize,
        method: RStr<'_>,
        version: u32,
        payload: RStr<'_>,
    ) -> RResult<RString, Failure>,
    /// Delivers the JSON outcome of a call started with [`PluginModule::submit`].
    /// Called exactly once per submitted `call_id`.
    pub complete: extern "C" fn(context: usize, call_id: u64, outcome: RResult<RString, Failure>),
}

/// The root module every kopf plugin exports. Frozen: see the crate docs.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The [`ABI_REVISION`] the plugin was built against.
    pub abi_revision: u32,
    /// Returns the JSON [`protocol::PluginDescription`].
    pub describe: extern "C" fn() -> RResult<RString, Failure>,
    /// Hands the plugin the host's callbacks and a JSON configuration document
    /// (see [`protocol::InitConfig`]); returns JSON (currently `{}`). Called once,
    /// before any other call except `describe`.
    pub init: extern "C" fn(host: HostTable, config: RStr<'_>) -> RResult<RString, Failure>,
    /// Runs the handler `handler` with the JSON [`protocol::Invocation`] `payload` and
    /// returns the JSON [`protocol::Outcome`]. Blocks the calling thread until done.
    pub invoke: extern "C" fn(handler: RStr<'_>, payload: RStr<'_>) -> RResult<RString, Failure>,
    /// Starts the same call without blocking; the outcome is delivered later through
    /// [`HostTable::complete`] with the same `call_id`. An immediate `RErr` means the
    /// call was not started and `complete` will not be called.
    pub submit: extern "C" fn(call_id: u64, handler: RStr<'_>, payload: RStr<'_>) -> RResult<(), Failure>,
    /// Asks the plugin to cancel a submitted call (for example, an async daemon).
    /// `complete` is still called, with [`FailureKind::CANCELLED`] or the real outcome.
    pub cancel: extern "C" fn(call_id: u64),
    /// A generic, versioned JSON-in/JSON-out call for future needs (host → plugin).
    #[sabi(last_prefix_field)]
    pub control: extern "C" fn(method: RStr<'_>, payload: RStr<'_>) -> RResult<RString, Failure>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "kopf_plugin";
    const NAME: &'static str = "kopf_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION);
}

/// Exports a [`PluginModule`] from a `cdylib`: the abi_stable root module and the
/// plain [`REVISION_SYMBOL`] static.
///
/// `$module` is an expression evaluating to a [`PluginModule`]. Use it once per cdylib;
/// the SDK does this for you.
#[macro_export]
macro_rules! export_plugin_module {
    ($module:expr) => {
        /// The ABI revision this plugin was built against, readable without abi_stable.
        #[unsafe(no_mangle)]
        pub static kopf_abi_revision: u32 = $crate::ABI_REVISION;

        #[::abi_stable::export_root_module]
        fn kopf_plugin_root_module() -> $crate::PluginModuleRef {
            use ::abi_stable::prefix_type::PrefixTypeTrait;
            let module: $crate::PluginModule = $module;
            module.leak_into_prefix()
        }
    };
}
