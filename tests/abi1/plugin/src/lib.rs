//! FROZEN: a plugin of kopf ABI revision 1, written on the bare ABI as of kopf-abi 1.0.0
//! and the JSON protocol of revision 1. Never edit (see ../Cargo.toml).
//!
//! * `create_fn` (create, `kopfexamples.v1.kopf.dev`): logs through the host, asks the
//!   host for a method it cannot know (the answer must be `unsupported`), and returns
//!   `{"message": "hello from ABI 1", "field": spec.field}`.
//! * `startup_fn` (startup).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::RwLock;

use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString};
use kopf_abi::{Failure, FailureKind, HostTable, LogLevel, PluginModule};
use serde_json::{Value, json};

static HOST: RwLock<Option<HostTable>> = RwLock::new(None);

fn host() -> Option<HostTable> {
    HOST.read().ok().and_then(|h| *h)
}

fn guarded<T>(f: impl FnOnce() -> Result<T, Failure>) -> RResult<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => ROk(v),
        Ok(Err(e)) => RErr(e),
        Err(_) => RErr(Failure::new(FailureKind::PANIC, "the frozen plugin panicked")),
    }
}

extern "C" fn describe() -> RResult<RString, Failure> {
    guarded(|| {
        let doc = json!({
            "abi_revision": 1,
            "sdk_version": "frozen-abi1",
            "plugin": {"name": "kopf-abi1-plugin", "version": "1.0.0"},
            "handlers": [
                {"id": "create_fn", "kind": "create",
                 "selector": {"group": "kopf.dev", "version": "v1", "plural": "kopfexamples"}},
                {"id": "startup_fn", "kind": "startup"},
            ],
        });
        Ok(RString::from(doc.to_string()))
    })
}

extern "C" fn init(host: HostTable, _config: RStr<'_>) -> RResult<RString, Failure> {
    guarded(|| {
        if let Ok(mut h) = HOST.write() {
            *h = Some(host);
        }
        Ok(RString::from("{}"))
    })
}

fn object_of(inv: &Value) -> String {
    let part = |p: &str| inv.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
    let (ns, name) = (part("/body/metadata/namespace"), part("/body/metadata/name"));
    if ns.is_empty() {
        name
    } else {
        format!("{ns}/{name}")
    }
}

fn run(handler: &str, payload: &str) -> Result<Value, Failure> {
    let inv: Value =
        serde_json::from_str(payload).map_err(|e| Failure::new(FailureKind::BAD_PAYLOAD, e.to_string()))?;
    let h = host().ok_or_else(|| Failure::new(FailureKind::INTERNAL, "not initialised"))?;
    match handler {
        "create_fn" => {
            let unknown = (h.call)(
                h.context,
                RStr::from_str("abi1.no-such-method"),
                1,
                RStr::from_str("{}"),
            );
            let unsupported = matches!(&unknown, RErr(f) if f.kind == FailureKind::UNSUPPORTED);
            let msg = format!("ABI-1 create_fn: unknown host method unsupported={unsupported}");
            (h.log)(
                h.context,
                LogLevel::INFO,
                RStr::from_str("kopf_abi1_plugin"),
                RStr::from_str(&object_of(&inv)),
                RStr::from_str(&msg),
            );
            let field = inv.pointer("/body/spec/field").cloned().unwrap_or(Value::Null);
            Ok(json!({"result": {"message": "hello from ABI 1", "field": field}}))
        }
        "startup_fn" => Ok(json!({})),
        other => Err(Failure::new(
            FailureKind::UNKNOWN_HANDLER,
            format!("no handler {other:?}"),
        )),
    }
}

extern "C" fn invoke(handler: RStr<'_>, payload: RStr<'_>) -> RResult<RString, Failure> {
    guarded(|| run(handler.as_str(), payload.as_str()).map(|v| RString::from(v.to_string())))
}

extern "C" fn submit(call_id: u64, handler: RStr<'_>, payload: RStr<'_>) -> RResult<(), Failure> {
    let handler = handler.as_str().to_owned();
    let payload = payload.as_str().to_owned();
    guarded(move || {
        let h = host().ok_or_else(|| Failure::new(FailureKind::INTERNAL, "not initialised"))?;
        std::thread::spawn(move || {
            let outcome = match run(&handler, &payload) {
                Ok(v) => ROk(RString::from(v.to_string())),
                Err(f) => RErr(f),
            };
            (h.complete)(h.context, call_id, outcome);
        });
        Ok(())
    })
}

extern "C" fn cancel(_call_id: u64) {}

extern "C" fn control(method: RStr<'_>, _payload: RStr<'_>) -> RResult<RString, Failure> {
    RErr(Failure::new(
        FailureKind::UNSUPPORTED,
        format!("unknown control method {:?}", method.as_str()),
    ))
}

kopf_abi::export_plugin_module!(PluginModule {
    abi_revision: kopf_abi::ABI_REVISION,
    describe,
    init,
    invoke,
    submit,
    cancel,
    control,
});
