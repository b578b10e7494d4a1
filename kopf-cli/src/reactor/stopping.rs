//! Stopping daemons and timers: why (Kopf's `DaemonStoppingReason`), the flag their
//! handlers see (`ctx.stopped()`, from async code and from plugin threads), and the
//! registry that answers the `daemon.*` host methods by call id (the stop flag, and the
//! object's freshest body: Kopf's daemons see a body that follows the object).

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::{Condvar, Mutex};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Why a daemon or timer is asked to stop (Kopf's `DaemonStoppingReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The object was deleted.
    ResourceDeleted,
    /// The object no longer matches the handler's filters.
    FiltersMismatch,
    /// The operator pauses (peering).
    OperatorPausing,
    /// The operator exits.
    OperatorExiting,
}

impl StopReason {
    /// Kopf's name of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResourceDeleted => "RESOURCE_DELETED",
            Self::FiltersMismatch => "FILTERS_MISMATCH",
            Self::OperatorPausing => "OPERATOR_PAUSING",
            Self::OperatorExiting => "OPERATOR_EXITING",
        }
    }
}

/// A stop flag that both async code (the engine) and blocking plugin threads (through
/// the `daemon.wait` host call) can wait on.
#[derive(Debug, Default)]
pub struct StopFlag {
    reason: Mutex<Option<StopReason>>,
    changed: Condvar,
    notify: tokio::sync::Notify,
}

impl StopFlag {
    /// Sets the flag (the first reason wins) and wakes every waiter.
    pub fn set(&self, reason: StopReason) {
        let mut current = self.reason.lock();
        if current.is_none() {
            *current = Some(reason);
        }
        self.changed.notify_all();
        self.notify.notify_waiters();
    }

    /// The reason, if the flag is set.
    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock()
    }

    /// Blocks the calling (non-async) thread until set or `timeout` passes.
    pub fn wait_blocking(&self, timeout: Option<Duration>) -> Option<StopReason> {
        let mut current = self.reason.lock();
        match timeout {
            Some(timeout) => {
                let deadline = std::time::Instant::now() + timeout;
                while current.is_none() {
                    if self.changed.wait_until(&mut current, deadline).timed_out() {
                        break;
                    }
                }
            }
            None => {
                while current.is_none() {
                    self.changed.wait(&mut current);
                }
            }
        }
        *current
    }

    /// Sleeps for `duration` unless the flag is set first; returns whether it is set.
    pub async fn sleep(&self, duration: Duration) -> bool {
        self.sleep_until(Instant::now() + duration).await
    }

    /// Sleeps until `deadline` unless the flag is set first; returns whether it is set.
    pub async fn sleep_until(&self, deadline: Instant) -> bool {
        let notified = self.notify.notified();
        if self.reason().is_some() {
            return true;
        }
        tokio::select! {
            _ = notified => true,
            _ = tokio::time::sleep_until(deadline) => self.reason().is_some(),
        }
    }
}

/// Where a running daemon call reads its object's freshest body.
pub(super) trait LiveBody: Send + Sync {
    /// Appends the body as JSON text to `out`.
    fn push_json(&self, out: &mut String);
}

struct Registered {
    flag: Arc<StopFlag>,
    body: Arc<dyn LiveBody>,
}

/// Stop flags and live bodies of running daemon calls by call id, for the `daemon.*`
/// host methods.
#[derive(Default)]
pub struct StopRegistry {
    calls: Mutex<HashMap<u64, Registered>>,
}

impl std::fmt::Debug for StopRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopRegistry")
            .field("calls", &self.calls.lock().len())
            .finish()
    }
}

impl StopRegistry {
    pub(super) fn register(&self, call_id: u64, flag: Arc<StopFlag>, body: Arc<dyn LiveBody>) {
        self.calls.lock().insert(call_id, Registered { flag, body });
    }

    pub(super) fn unregister(&self, call_id: u64) {
        self.calls.lock().remove(&call_id);
    }

    /// Answers `daemon.body`: `{"body": <the object as last seen>}`, or `None` for a call
    /// that is not (or no longer) a running daemon or timer.
    pub fn body(&self, call_id: u64) -> Option<String> {
        let body = self.calls.lock().get(&call_id)?.body.clone();
        // The body is kept as JSON text: wrapped as it is, not parsed again.
        let mut answer = String::from(r#"{"body":"#);
        body.push_json(&mut answer);
        answer.push('}');
        Some(answer)
    }

    /// Answers `daemon.stopped` / `daemon.wait`: `{"stopped": bool, "reason": ...}`.
    pub fn answer(&self, call_id: u64, wait: Option<Option<Duration>>) -> Value {
        let flag = self.calls.lock().get(&call_id).map(|r| r.flag.clone());
        let reason = match (flag, wait) {
            // An unknown call is not a running daemon: tell it to stop.
            (None, _) => return json!({"stopped": true, "reason": "DONE"}),
            (Some(flag), None) => flag.reason(),
            (Some(flag), Some(timeout)) => flag.wait_blocking(timeout),
        };
        json!({"stopped": reason.is_some(), "reason": reason.map(StopReason::as_str)})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_flags_wake_async_and_blocking_waiters() {
        let flag = Arc::new(StopFlag::default());
        let blocking = {
            let flag = flag.clone();
            std::thread::spawn(move || flag.wait_blocking(Some(Duration::from_secs(10))))
        };
        let sleeper = {
            let flag = flag.clone();
            tokio::spawn(async move { flag.sleep(Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        flag.set(StopReason::ResourceDeleted);
        flag.set(StopReason::OperatorExiting);
        assert!(sleeper.await.unwrap());
        assert_eq!(blocking.join().unwrap(), Some(StopReason::ResourceDeleted));
        assert_eq!(
            flag.wait_blocking(Some(Duration::ZERO)),
            Some(StopReason::ResourceDeleted)
        );
    }

    struct Fixed(Mutex<&'static str>);

    impl LiveBody for Fixed {
        fn push_json(&self, out: &mut String) {
            out.push_str(&self.0.lock());
        }
    }

    #[test]
    fn registry_answers_for_known_and_unknown_calls() {
        let registry = StopRegistry::default();
        let flag = Arc::new(StopFlag::default());
        let live = Arc::new(Fixed(Mutex::new(r#"{"spec":{"x":1}}"#)));
        registry.register(7, flag.clone(), live.clone());
        assert_eq!(registry.body(7).as_deref(), Some(r#"{"body":{"spec":{"x":1}}}"#));
        *live.0.lock() = r#"{"spec":{"x":2}}"#;
        let answer: Value = serde_json::from_str(&registry.body(7).unwrap()).unwrap();
        assert_eq!(answer, json!({"body": {"spec": {"x": 2}}}));
        assert_eq!(registry.answer(7, None)["stopped"], false);
        assert_eq!(
            registry.answer(7, Some(Some(Duration::from_millis(1))))["stopped"],
            false
        );
        flag.set(StopReason::FiltersMismatch);
        assert_eq!(
            registry.answer(7, None),
            json!({"stopped": true, "reason": "FILTERS_MISMATCH"})
        );
        registry.unregister(7);
        assert_eq!(registry.answer(7, None)["stopped"], true);
        assert_eq!(registry.body(7), None);
    }
}
