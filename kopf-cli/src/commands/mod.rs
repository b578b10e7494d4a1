//! The `kopf` subcommands.

pub mod crd;
pub mod emulator;
pub mod inspect;
pub mod new;
pub mod peering;
pub mod rbac;
pub mod run;
pub mod version;

use crate::plugin::HandlerRef;

/// One line describing a handler, for logs: `create handler "create_fn" for kopfexamples.v1.kopf.dev`.
pub fn handler_summary(handler: &HandlerRef) -> String {
    let spec = handler.spec();
    let mode = if spec.is_async { "async" } else { "sync" };
    if spec.kind.is_activity() {
        format!("{} handler {:?} ({mode})", spec.kind, spec.id)
    } else {
        format!(
            "{} handler {:?} for {} ({mode})",
            spec.kind,
            spec.id,
            crate::plugin::render_selector(spec.selector.as_ref())
        )
    }
}
