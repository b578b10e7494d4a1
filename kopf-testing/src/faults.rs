//! Fault injection and request counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::store::State;

/// Which requests a fault applies to (all given fields must match; `None` matches anything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FaultMatch {
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: Option<String>,
    /// Plural resource name (e.g. `kopfexamples`), or `resource/subresource`.
    pub resource: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
}

impl FaultMatch {
    /// Match everything.
    pub fn any() -> Self {
        Self::default()
    }

    /// Match a verb on a resource.
    pub fn verb_resource(verb: &str, resource: &str) -> Self {
        Self {
            verb: Some(verb.into()),
            resource: Some(resource.into()),
            ..Self::default()
        }
    }

    fn matches(&self, r: &RequestInfo) -> bool {
        let res_ok = match &self.resource {
            None => true,
            Some(want) => {
                *want == r.resource
                    || r.subresource
                        .as_ref()
                        .is_some_and(|s| *want == format!("{}/{}", r.resource, s))
            }
        };
        self.verb.as_ref().is_none_or(|v| *v == r.verb)
            && res_ok
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| Some(n) == r.namespace.as_ref())
            && self.name.as_ref().is_none_or(|n| Some(n) == r.name.as_ref())
    }
}

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FaultKind {
    /// Answer with this status code (and a Status body).
    Status {
        /// HTTP status code.
        code: u16,
    },
    /// Answer 429 with a Retry-After header.
    TooManyRequests {
        /// Seconds in Retry-After.
        retry_after_secs: u64,
    },
    /// Close the TCP connection without any response.
    DropConnection,
    /// Answer with this status code, content type and raw body bytes, as they are (for
    /// garbage responses: invalid UTF-8, HTML error pages, truncated JSON).
    RawBody {
        /// HTTP status code.
        code: u16,
        /// The `Content-Type` header.
        content_type: String,
        /// The body, byte for byte.
        body: Vec<u8>,
    },
}

impl FaultKind {
    /// Shorthand for `FaultKind::Status { code }`.
    #[allow(non_snake_case)]
    pub fn Status(code: u16) -> Self {
        FaultKind::Status { code }
    }

    /// Shorthand for a [`FaultKind::RawBody`].
    pub fn raw_body(code: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        FaultKind::RawBody {
            code,
            content_type: content_type.to_owned(),
            body: body.into(),
        }
    }
}

/// A request, as the emulator classifies it for faults and counters.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// Kubernetes verb.
    pub verb: String,
    /// Plural resource ("" for non-resource paths).
    pub resource: String,
    /// Subresource, if any.
    pub subresource: Option<String>,
    /// Namespace, if any.
    pub namespace: Option<String>,
    /// Name, if any.
    pub name: Option<String>,
}

#[derive(Debug)]
struct Rule {
    remaining: usize,
    matcher: FaultMatch,
    kind: FaultKind,
}

/// Fault injection controls (obtained from `EmulatorHandle::faults`).
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    latency: Mutex<Duration>,
    close_tx: tokio::sync::watch::Sender<u64>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("rules", &self.rules.lock())
            .finish_non_exhaustive()
    }
}

impl Faults {
    pub(crate) fn new(close_tx: tokio::sync::watch::Sender<u64>, state: Arc<Mutex<State>>) -> Self {
        Self {
            rules: Mutex::new(vec![]),
            latency: Mutex::new(Duration::ZERO),
            close_tx,
            state,
        }
    }

    /// Fail the next `n` requests matching `matcher` with `kind`.
    pub fn fail_next(&self, n: usize, matcher: FaultMatch, kind: FaultKind) {
        self.rules.lock().push(Rule {
            remaining: n,
            matcher,
            kind,
        });
    }

    /// Remove all pending faults and the latency.
    pub fn clear(&self) {
        self.rules.lock().clear();
        *self.latency.lock() = Duration::ZERO;
    }

    /// End every open watch stream (clients will re-watch from their last resourceVersion).
    pub fn close_watches(&self) {
        self.close_tx.send_modify(|g| *g += 1);
    }

    /// Forget the event history: watches from any resourceVersion issued so far get 410 Gone.
    pub fn expire_history(&self) {
        self.state.lock().expire_history();
    }

    /// Delay every API request by `d` (zero to disable).
    pub fn set_latency(&self, d: Duration) {
        *self.latency.lock() = d;
    }

    /// Current added latency.
    pub fn latency(&self) -> Duration {
        *self.latency.lock()
    }

    /// Take the fault for this request, if any.
    pub(crate) fn take(&self, r: &RequestInfo) -> Option<FaultKind> {
        let mut rules = self.rules.lock();
        let idx = rules
            .iter()
            .position(|rule| rule.remaining > 0 && rule.matcher.matches(r))?;
        rules[idx].remaining -= 1;
        let kind = rules[idx].kind.clone();
        if rules[idx].remaining == 0 {
            rules.remove(idx);
        }
        Some(kind)
    }
}

/// A snapshot of request counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Total API requests counted.
    pub total: u64,
    /// By `"verb resource"` (subresources as `resource/sub`), e.g. `"patch kopfexamples"`.
    pub by_verb_resource: BTreeMap<String, u64>,
    /// By User-Agent header.
    pub by_user_agent: BTreeMap<String, u64>,
    /// By user (bearer token or basic user; "anonymous" otherwise).
    pub by_user: BTreeMap<String, u64>,
    /// By HTTP status code.
    pub by_status: BTreeMap<u16, u64>,
}

impl Counters {
    /// Count for a verb and resource.
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.by_verb_resource
            .get(&format!("{verb} {resource}"))
            .copied()
            .unwrap_or(0)
    }

    /// Count for a status code.
    pub fn status(&self, code: u16) -> u64 {
        self.by_status.get(&code).copied().unwrap_or(0)
    }
}

/// Live counters.
#[derive(Debug, Default)]
pub(crate) struct CounterStore {
    inner: Mutex<Counters>,
}

impl CounterStore {
    pub(crate) fn record(&self, info: &RequestInfo, user_agent: &str, user: &str, status: u16) {
        let mut c = self.inner.lock();
        c.total += 1;
        let res = match &info.subresource {
            Some(s) => format!("{}/{}", info.resource, s),
            None => info.resource.clone(),
        };
        *c.by_verb_resource
            .entry(format!("{} {}", info.verb, res))
            .or_default() += 1;
        *c.by_user_agent.entry(user_agent.to_string()).or_default() += 1;
        *c.by_user.entry(user.to_string()).or_default() += 1;
        *c.by_status.entry(status).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> Counters {
        self.inner.lock().clone()
    }

    pub(crate) fn reset(&self) {
        *self.inner.lock() = Counters::default();
    }
}
