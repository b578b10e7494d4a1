//! The host's callbacks, as handed to the plugin by `init`, and safe wrappers around them.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU8, Ordering};

use abi_stable::std_types::{RResult, RStr};
use kopf_abi::{HostTable, LogLevel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::HostCallError;

static HOST: RwLock<Option<HostTable>> = RwLock::new(None);
static MAX_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::TRACE.0);

/// Stores the host's callbacks (replacing earlier ones) and the most verbose level it prints.
pub(crate) fn set_host(host: HostTable, max_level: u8) {
    let mut guard = HOST.write().unwrap_or_else(|e| e.into_inner());
    *guard = Some(host);
    // 0 = "not given": forward everything and let the host filter.
    let level = if max_level == 0 {
        LogLevel::TRACE.0
    } else {
        max_level
    };
    MAX_LEVEL.store(level, Ordering::Relaxed);
}

/// The host's callbacks, if the plugin was initialised.
pub(crate) fn host() -> Option<HostTable> {
    *HOST.read().unwrap_or_else(|e| e.into_inner())
}

/// True when a host is attached (the plugin was initialised through the ABI).
pub fn is_initialised() -> bool {
    host().is_some()
}

/// The most verbose level the host prints.
pub(crate) fn max_level() -> LogLevel {
    LogLevel(MAX_LEVEL.load(Ordering::Relaxed))
}

/// Writes a line into the host's log; a no-op without a host or above the host's level.
pub(crate) fn log(level: LogLevel, target: &str, object: &str, message: &str) {
    if level > max_level() {
        return;
    }
    if let Some(h) = host() {
        (h.log)(
            h.context,
            level,
            RStr::from(target),
            RStr::from(object),
            RStr::from(message),
        );
    }
}

/// Calls a host method with a JSON payload and decodes the JSON answer.
pub fn call<P: Serialize, A: DeserializeOwned>(
    method: &str,
    version: u32,
    payload: &P,
) -> Result<A, HostCallError> {
    let h = host().ok_or(HostCallError::NotInitialised)?;
    let bad = |e: serde_json::Error| HostCallError::BadJson {
        method: method.to_owned(),
        message: e.to_string(),
    };
    let payload = serde_json::to_string(payload).map_err(bad)?;
    match (h.call)(
        h.context,
        RStr::from(method),
        version,
        RStr::from(payload.as_str()),
    ) {
        RResult::ROk(answer) => serde_json::from_str(answer.as_str()).map_err(bad),
        RResult::RErr(f) if f.kind == kopf_abi::FailureKind::UNSUPPORTED => {
            Err(HostCallError::Unsupported(method.to_owned()))
        }
        RResult::RErr(f) => Err(HostCallError::Failed {
            method: method.to_owned(),
            message: f.message.to_string(),
        }),
    }
}
