//! Actions: running one handler of any kind and applying what it returned, as Kopf's
//! `kopf/_core/actions/` (invocation, execution, application).
//!
//! Every handler kind goes through here: resource handlers and sub-handlers (the reactor),
//! event and index handlers, daemons and timers, activities (startup, cleanup, login,
//! probe) and admission webhooks. So a handler's timeout, the mapping of a plugin failure
//! to a handler error, the handler metrics, the retry decision, its log line, the filter
//! callbacks' three-valued outcome, and the order of the patches that persist an outcome
//! (status first, then the body) are each written once.
//!
//! - [`invocation`]: one call of a handler or of its filter callbacks.
//! - [`execution`]: what an outcome means (retry, fail, succeed), and its log line.
//! - [`application`]: sending the patches that persist outcomes, and re-reading.

pub mod application;
pub mod execution;
pub mod invocation;
