//! The plugin side of the ABI: the functions of the exported [`PluginModule`].
//!
//! Every function catches panics and turns them into [`FailureKind::PANIC`] failures, so
//! nothing ever unwinds into the host.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, OnceLock};

use abi_stable::std_types::{RResult, RStr, RString};
use kopf_abi::protocol::{InitConfig, Invocation};
use kopf_abi::{ABI_REVISION, Failure, FailureKind, HostTable, PluginModule};
use tokio::task::AbortHandle;

use crate::error::InvokeError;
use crate::handler::handlers;
use crate::runtime::panic_message;
use crate::{host, logging, memo, runtime};

/// The root module value of this plugin (what the export macro leaks into the prefix
/// type). Tests can call its functions in-process.
pub fn plugin_module() -> PluginModule {
    PluginModule {
        abi_revision: ABI_REVISION,
        describe,
        init,
        invoke,
        submit,
        cancel,
        control,
    }
}

/// The `InitConfig.extra` flag a host sets when it calls this module in-process (embedded
/// operators): the SDK then leaves the process's `tracing` subscriber alone.
pub const IN_PROCESS_KEY: &str = "in_process";

fn guarded(f: impl FnOnce() -> Result<String, Failure>) -> RResult<RString, Failure> {
    let _quiet = runtime::QuietPanics::enter();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(s)) => RResult::ROk(RString::from(s)),
        Ok(Err(failure)) => RResult::RErr(failure),
        Err(payload) => RResult::RErr(Failure::new(FailureKind::PANIC, panic_message(payload.as_ref()))),
    }
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::new(FailureKind::INTERNAL, e.to_string())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, Failure> {
    serde_json::to_string(v).map_err(internal)
}

fn to_failure(e: InvokeError) -> Failure {
    let kind = match &e {
        InvokeError::UnknownHandler(_) => FailureKind::UNKNOWN_HANDLER,
        InvokeError::BadPayload(_) => FailureKind::BAD_PAYLOAD,
        InvokeError::Cancelled => FailureKind::CANCELLED,
        InvokeError::Sdk(_) => FailureKind::INTERNAL,
    };
    Failure::new(kind, e.to_string())
}

fn parse_invocation(payload: &str) -> Result<Invocation, Failure> {
    serde_json::from_str(payload).map_err(|e| to_failure(InvokeError::BadPayload(e.to_string())))
}

extern "C" fn describe() -> RResult<RString, Failure> {
    guarded(|| to_json(&handlers().map_err(internal)?.describe()))
}

extern "C" fn init(host_table: HostTable, config: RStr<'_>) -> RResult<RString, Failure> {
    guarded(|| {
        let config: InitConfig = if config.as_str().trim().is_empty() {
            InitConfig::default()
        } else {
            serde_json::from_str(config.as_str())
                .map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, format!("bad init config: {e}")))?
        };
        host::set_host(host_table, config.max_log_level);
        runtime::install_panic_hook();
        // In-process (embedded) plugins share the host's `tracing`: forwarding events to
        // the host would loop back into the same subscriber.
        if config
            .extra
            .get(IN_PROCESS_KEY)
            .and_then(serde_json::Value::as_bool)
            != Some(true)
        {
            logging::install_subscriber();
        }
        // Surface registration problems now rather than at the first call.
        handlers().map_err(internal)?;
        Ok("{}".to_owned())
    })
}

extern "C" fn invoke(handler: RStr<'_>, payload: RStr<'_>) -> RResult<RString, Failure> {
    guarded(|| {
        let registry = handlers().map_err(internal)?;
        let invocation = parse_invocation(payload.as_str())?;
        let outcome = registry
            .invoke(handler.as_str(), invocation)
            .map_err(to_failure)?;
        to_json(&outcome)
    })
}

fn calls() -> &'static Mutex<HashMap<u64, AbortHandle>> {
    static CALLS: OnceLock<Mutex<HashMap<u64, AbortHandle>>> = OnceLock::new();
    CALLS.get_or_init(Default::default)
}

fn complete(call_id: u64, outcome: RResult<RString, Failure>) {
    if let Some(h) = host::host() {
        (h.complete)(h.context, call_id, outcome);
    }
}

extern "C" fn submit(call_id: u64, handler: RStr<'_>, payload: RStr<'_>) -> RResult<(), Failure> {
    let started = guarded(|| {
        if host::host().is_none() {
            return Err(Failure::new(
                FailureKind::INTERNAL,
                "submit before init: no host to complete the call",
            ));
        }
        let registry = handlers().map_err(internal)?;
        let handler = registry
            .get(handler.as_str())
            .ok_or_else(|| to_failure(InvokeError::UnknownHandler(handler.as_str().to_owned())))?;
        let mut invocation = parse_invocation(payload.as_str())?;
        invocation.call_id.get_or_insert(call_id);
        let rt = runtime::runtime().map_err(internal)?;
        let mut running = calls().lock().unwrap_or_else(|e| e.into_inner());
        let work = rt.spawn(handler.run_async(invocation));
        running.insert(call_id, work.abort_handle());
        drop(running);
        rt.spawn(async move {
            let result = work.await;
            calls().lock().unwrap_or_else(|e| e.into_inner()).remove(&call_id);
            let outcome = match result {
                Ok(outcome) => match serde_json::to_string(&outcome) {
                    Ok(json) => RResult::ROk(RString::from(json)),
                    Err(e) => RResult::RErr(internal(e)),
                },
                Err(e) if e.is_cancelled() => {
                    RResult::RErr(Failure::new(FailureKind::CANCELLED, "the call was cancelled"))
                }
                Err(e) => RResult::RErr(Failure::new(FailureKind::PANIC, e.to_string())),
            };
            complete(call_id, outcome);
        });
        Ok(String::new())
    });
    match started {
        RResult::ROk(_) => RResult::ROk(()),
        RResult::RErr(f) => RResult::RErr(f),
    }
}

extern "C" fn cancel(call_id: u64) {
    let _ = catch_unwind(|| {
        let handle = calls()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&call_id)
            .cloned();
        if let Some(handle) = handle {
            handle.abort();
        }
    });
}

extern "C" fn control(method: RStr<'_>, payload: RStr<'_>) -> RResult<RString, Failure> {
    use kopf_abi::protocol::control_methods;
    guarded(|| match method.as_str() {
        control_methods::PING => Ok(r#"{"ok":true}"#.to_owned()),
        control_methods::MEMO => {
            memo::control(payload.as_str()).map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, e))
        }
        other => Err(Failure::new(
            FailureKind::UNSUPPORTED,
            format!("unknown control method {other:?}"),
        )),
    })
}

#[cfg(feature = "export")]
#[allow(unsafe_code)]
mod exported {
    kopf_abi::export_plugin_module!(super::plugin_module());
}
