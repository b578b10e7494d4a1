//! Fault injection and request counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
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
    /// The client's user: its bearer token, or the user of basic auth (so that one of
    /// several clients can be singled out by giving each a kubeconfig with its own token).
    pub user: Option<String>,
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
            && self.user.as_ref().is_none_or(|u| Some(u) == r.user.as_ref())
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
    /// Never answer: the request is held until the client gives up or the emulator
    /// stops (a black-holed or wedged server, as a network partition looks to a client).
    BlackHole,
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
    /// The client's user (see [`FaultMatch::user`]), if known.
    pub user: Option<String>,
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
    random: Mutex<RandomFaults>,
    log: Mutex<Option<Vec<RequestRecord>>>,
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
            random: Mutex::new(RandomFaults::new(0)),
            log: Mutex::new(None),
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
        let mut random = self.random.lock();
        random.rules.clear();
        random.jitter = Duration::ZERO;
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
        self.take_counted(r).or_else(|| self.take_random(r))
    }

    /// Take the fault of a `fail_next` rule for this request, if any.
    fn take_counted(&self, r: &RequestInfo) -> Option<FaultKind> {
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

/// A probabilistic fault rule (see [`Faults::fail_ratio`]).
#[derive(Debug)]
struct RatioRule {
    ratio: f64,
    matcher: FaultMatch,
    kind: FaultKind,
}

/// Probabilistic faults and latency jitter, drawn from one seeded generator.
#[derive(Debug)]
struct RandomFaults {
    rng: StdRng,
    rules: Vec<RatioRule>,
    jitter: Duration,
}

impl RandomFaults {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            rules: Vec::new(),
            jitter: Duration::ZERO,
        }
    }
}

/// One API request as the emulator answered it (see [`Faults::record_requests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// When the request arrived (before any added latency).
    pub arrived: Instant,
    /// When the response (or the dropped connection) was produced.
    pub answered: Instant,
    /// Kubernetes verb (see [`FaultMatch::verb`]).
    pub verb: String,
    /// Plural resource ("" for non-resource paths).
    pub resource: String,
    /// Subresource, if any.
    pub subresource: Option<String>,
    /// Namespace, if any.
    pub namespace: Option<String>,
    /// Object name, if any.
    pub name: Option<String>,
    /// The client's User-Agent.
    pub user_agent: String,
    /// HTTP status code (0 for a dropped connection).
    pub status: u16,
    /// The Retry-After the response asked for, if any.
    pub retry_after: Option<Duration>,
}

impl RequestRecord {
    /// The identity of "the same request" for retry checks: client, verb and target.
    pub fn target(&self) -> (&str, &str, &str, Option<&str>, Option<&str>, Option<&str>) {
        (
            &self.user_agent,
            &self.verb,
            &self.resource,
            self.subresource.as_deref(),
            self.namespace.as_deref(),
            self.name.as_deref(),
        )
    }

    /// `verb resource[/sub] [namespace/]name`, for messages.
    pub fn describe(&self) -> String {
        let resource = match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        };
        let object = match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => format!(" {ns}/{name}"),
            (None, Some(name)) => format!(" {name}"),
            (Some(ns), None) => format!(" in {ns}"),
            (None, None) => String::new(),
        };
        format!("{} {resource}{object}", self.verb)
    }
}

/// Requests that repeated an earlier request answered with a `Retry-After` before that
/// time had passed (counted from the 429's answer to the repeat's arrival): one message per
/// offending request. "The same request" is the same client, verb and target
/// ([`RequestRecord::target`]).
pub fn retry_after_violations(records: &[RequestRecord]) -> Vec<String> {
    let mut records: Vec<&RequestRecord> = records.iter().collect();
    records.sort_by_key(|r| r.arrived);
    let mut violations = Vec::new();
    for (i, throttled) in records.iter().enumerate() {
        let Some(retry_after) = throttled.retry_after else {
            continue;
        };
        let not_before = throttled.answered + retry_after;
        let target = throttled.target();
        for later in records[i + 1..].iter() {
            if later.arrived >= not_before {
                break;
            }
            if later.target() == target && later.arrived >= throttled.answered {
                violations.push(format!(
                    "{} repeated {:?} after a 429 asking for Retry-After {:?}",
                    later.describe(),
                    later.arrived - throttled.answered,
                    retry_after
                ));
            }
        }
    }
    violations
}

impl Faults {
    /// Fail each request matching `matcher` with probability `ratio` (0.0..=1.0) with
    /// `kind`, for as long as the rule stays (until [`Faults::clear`]). Rules of
    /// [`Faults::fail_next`] take precedence; among ratio rules, the first that fires wins.
    /// The draws come from the generator seeded by [`Faults::seed`] (0 by default).
    pub fn fail_ratio(&self, ratio: f64, matcher: FaultMatch, kind: FaultKind) {
        self.random.lock().rules.push(RatioRule {
            ratio: ratio.clamp(0.0, 1.0),
            matcher,
            kind,
        });
    }

    /// Re-seed the generator behind [`Faults::fail_ratio`] and the latency jitter, for a
    /// reproducible sequence of draws.
    pub fn seed(&self, seed: u64) {
        self.random.lock().rng = StdRng::seed_from_u64(seed);
    }

    /// Add a random extra delay, uniform in `0..=jitter`, to every request (on top of
    /// [`Faults::set_latency`]); zero disables it.
    pub fn set_latency_jitter(&self, jitter: Duration) {
        self.random.lock().jitter = jitter;
    }

    /// The delay to add to one request: the latency plus a draw of the jitter.
    pub(crate) fn request_delay(&self) -> Duration {
        let latency = self.latency();
        let mut random = self.random.lock();
        if random.jitter.is_zero() {
            return latency;
        }
        let nanos = u64::try_from(random.jitter.as_nanos()).unwrap_or(u64::MAX);
        latency + Duration::from_nanos(random.rng.random_range(0..=nanos))
    }

    /// Take the fault of a `fail_ratio` rule for this request, if one fires.
    fn take_random(&self, r: &RequestInfo) -> Option<FaultKind> {
        let mut random = self.random.lock();
        let RandomFaults { rng, rules, .. } = &mut *random;
        rules
            .iter()
            .filter(|rule| rule.matcher.matches(r))
            .find(|rule| rng.random_bool(rule.ratio))
            .map(|rule| rule.kind.clone())
    }

    /// Start (`true`, clearing any earlier log) or stop (`false`) recording every API
    /// request with its timing and outcome.
    pub fn record_requests(&self, on: bool) {
        *self.log.lock() = on.then(Vec::new);
    }

    /// The requests recorded since [`Faults::record_requests`] was turned on, in the order
    /// they were answered.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log.lock().clone().unwrap_or_default()
    }

    /// Log one answered request, if recording.
    pub(crate) fn log_request(
        &self,
        info: &RequestInfo,
        arrived: Instant,
        user_agent: &str,
        status: u16,
        retry_after: Option<Duration>,
    ) {
        if let Some(log) = self.log.lock().as_mut() {
            log.push(RequestRecord {
                arrived,
                answered: Instant::now(),
                verb: info.verb.clone(),
                resource: info.resource.clone(),
                subresource: info.subresource.clone(),
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                user_agent: user_agent.to_string(),
                status,
                retry_after,
            });
        }
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
    /// Objects sent in list responses and watch events (not bookmarks), by resource
    /// (plural): what server-side selectors save.
    #[serde(default)]
    pub objects_sent: BTreeMap<String, u64>,
    /// Response body bytes sent, by `"user verb resource"` (the user as in `by_user`,
    /// the verb and resource as in `by_verb_resource`; a watch's bytes as its events
    /// stream): what each client receives.
    #[serde(default)]
    pub bytes_sent: BTreeMap<String, u64>,
}

impl Counters {
    /// Count for a verb and resource.
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.by_verb_resource
            .get(&format!("{verb} {resource}"))
            .copied()
            .unwrap_or(0)
    }

    /// Objects of a resource (plural) sent in lists and watch events.
    pub fn objects(&self, resource: &str) -> u64 {
        self.objects_sent.get(resource).copied().unwrap_or(0)
    }

    /// Response body bytes sent to `user` about `resource` (plural), all verbs.
    pub fn bytes(&self, user: &str, resource: &str) -> u64 {
        let prefix = format!("{user} ");
        let suffix = format!(" {resource}");
        self.bytes_sent
            .iter()
            .filter(|(key, _)| {
                key.strip_prefix(&prefix)
                    .and_then(|rest| rest.strip_suffix(&suffix))
                    .is_some_and(|verb| !verb.contains(' '))
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// Response body bytes sent to `user` for `verb` requests (`list`, `watch`, ...)
    /// about `resource`.
    pub fn bytes_of(&self, user: &str, verb: &str, resource: &str) -> u64 {
        self.bytes_sent
            .get(&format!("{user} {verb} {resource}"))
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

    pub(crate) fn objects_sent(&self, resource: &str, count: usize) {
        if count > 0 {
            *self
                .inner
                .lock()
                .objects_sent
                .entry(resource.to_owned())
                .or_default() += count as u64;
        }
    }

    pub(crate) fn bytes_sent(&self, key: &str, bytes: usize) {
        if bytes > 0 {
            let mut c = self.inner.lock();
            match c.bytes_sent.get_mut(key) {
                Some(sum) => *sum += bytes as u64,
                None => {
                    c.bytes_sent.insert(key.to_owned(), bytes as u64);
                }
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Counters {
        self.inner.lock().clone()
    }

    pub(crate) fn reset(&self) {
        *self.inner.lock() = Counters::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults() -> Faults {
        let (close_tx, _) = tokio::sync::watch::channel(0);
        let (tx, _) = tokio::sync::broadcast::channel(1);
        let state = State::new(10, tx, Arc::new(std::sync::atomic::AtomicU64::new(0)));
        Faults::new(close_tx, Arc::new(Mutex::new(state)))
    }

    fn patch(name: &str) -> RequestInfo {
        RequestInfo {
            verb: "patch".into(),
            resource: "kopfexamples".into(),
            namespace: Some("default".into()),
            name: Some(name.into()),
            ..RequestInfo::default()
        }
    }

    fn draws(f: &Faults, n: usize) -> Vec<bool> {
        (0..n)
            .map(|i| f.take(&patch(&format!("o{i}"))).is_some())
            .collect()
    }

    #[test]
    fn fail_ratio_fires_at_about_the_ratio_and_only_on_matches() {
        let f = faults();
        f.fail_ratio(
            0.05,
            FaultMatch::verb_resource("patch", "kopfexamples"),
            FaultKind::Status(503),
        );
        let fired = draws(&f, 10_000).into_iter().filter(|x| *x).count();
        assert!((350..=650).contains(&fired), "{fired} of 10000 at 5%");
        let get = RequestInfo {
            verb: "get".into(),
            ..patch("x")
        };
        assert!(
            (0..1000).all(|_| f.take(&get).is_none()),
            "a non-matching verb was failed"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_and_another_seed_others() {
        let run = |seed| {
            let f = faults();
            f.seed(seed);
            f.fail_ratio(0.3, FaultMatch::any(), FaultKind::DropConnection);
            draws(&f, 200)
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn counted_rules_come_first_and_clear_removes_ratio_rules() {
        let f = faults();
        f.fail_ratio(1.0, FaultMatch::any(), FaultKind::Status(500));
        f.fail_next(1, FaultMatch::any(), FaultKind::Status(409));
        assert_eq!(f.take(&patch("a")), Some(FaultKind::Status(409)));
        assert_eq!(f.take(&patch("a")), Some(FaultKind::Status(500)));
        f.clear();
        assert_eq!(f.take(&patch("a")), None);
    }

    #[test]
    fn ratio_zero_never_fires_and_jitter_stays_within_bounds() {
        let f = faults();
        f.fail_ratio(0.0, FaultMatch::any(), FaultKind::Status(500));
        assert!(draws(&f, 1000).iter().all(|x| !x));
        f.set_latency(Duration::from_millis(3));
        f.set_latency_jitter(Duration::from_millis(2));
        let delays: Vec<Duration> = (0..200).map(|_| f.request_delay()).collect();
        assert!(
            delays
                .iter()
                .all(|d| (Duration::from_millis(3)..=Duration::from_millis(5)).contains(d))
        );
        assert!(delays.iter().any(|d| *d != delays[0]), "the jitter never varied");
    }

    fn record(name: &str, arrived: Instant, status: u16, retry_after: Option<u64>) -> RequestRecord {
        RequestRecord {
            arrived,
            answered: arrived,
            verb: "patch".into(),
            resource: "kopfexamples".into(),
            subresource: None,
            namespace: Some("default".into()),
            name: Some(name.into()),
            user_agent: "kopf/0.1.0".into(),
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_repeat_before_retry_after_is_a_violation_and_after_it_is_not() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let early = vec![
            record("a", t0, 429, Some(1)),
            record("a", t0 + ms(400), 200, None),
        ];
        let v = retry_after_violations(&early);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("patch kopfexamples default/a"), "{v:?}");
        let late = vec![
            record("a", t0, 429, Some(1)),
            record("a", t0 + ms(1000), 200, None),
        ];
        assert!(retry_after_violations(&late).is_empty());
        // Other objects may be requested meanwhile; the log may be in answer order.
        let others = vec![record("b", t0 + ms(10), 200, None), record("a", t0, 429, Some(1))];
        assert!(retry_after_violations(&others).is_empty());
    }

    #[test]
    fn requests_are_logged_only_while_recording() {
        let f = faults();
        let t0 = Instant::now();
        f.log_request(&patch("a"), t0, "ua", 200, None);
        assert!(f.requests().is_empty());
        f.record_requests(true);
        f.log_request(&patch("a"), t0, "ua", 429, Some(Duration::from_secs(2)));
        let log = f.requests();
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0].status, log[0].retry_after),
            (429, Some(Duration::from_secs(2)))
        );
        assert_eq!(log[0].describe(), "patch kopfexamples default/a");
        f.record_requests(false);
        assert!(f.requests().is_empty());
    }
}
