//! One daemon's or timer's task: what it sees of its object (a snapshot serialised once
//! per version, kept live by the reactor), and its loop (initial delay, idle wait, one call
//! through the actions layer, the next sleep). [`super::daemons`] spawns and stops them.

use std::{sync::Arc, time::Duration};

use kopf_abi::protocol::{HandlerKind, Invocation, ResourceInfo};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    shared::Shared,
    stopping::{LiveBody, StopFlag, StopRegistry},
};
use crate::{
    actions::{
        application::{self, Applied},
        execution::{self, Attempt, Decision},
        invocation::{self, Call},
    },
    persistence::times::Timestamp,
    plugin::{HandlerRef, PluginSet, next_call_id},
    settings::seconds,
    structs::{
        patches::{Patch, PatchFn},
        references::Resource,
    },
};

/// The grid that timer ticks of long intervals are aligned to (see [`tick_deadline`]).
pub(super) const TICK_GRID: Duration = Duration::from_millis(20);

/// When a timer sleeping `delay` should wake up: for intervals of 2 s and more, the end
/// of the delay rounded up to a grid of [`TICK_GRID`] shared by all timers (at most 1%
/// late). Many timers then wake the runtime together, once per grid step, instead of
/// one wake-up (and thread hand-off) per tick: with 10,000 timers, the wake-ups cost
/// more CPU than the ticks themselves.
pub(super) fn tick_deadline(delay: Duration) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let deadline = Instant::now() + delay;
    if delay < TICK_GRID * 100 {
        return deadline;
    }
    let since = deadline.saturating_duration_since(epoch).as_nanos();
    let grid = TICK_GRID.as_nanos();
    let aligned = u64::try_from(since.div_ceil(grid) * grid).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(aligned)
}

/// An object version as its daemons and timers need it: serialised once per version
/// (every call sends the same body; a compact JSON text also takes a fraction of the
/// memory of a [`Value`] tree). Log lines name the object through the `object` span the
/// tasks run in.
#[derive(Debug)]
pub(super) struct Snapshot {
    /// The body as a JSON document.
    json: Box<str>,
}

impl Snapshot {
    pub(super) fn of(body: &Value) -> Self {
        let json = serde_json::to_string(body).unwrap_or_else(|error| {
            // A `Value` always serialises; this is only a guard.
            tracing::warn!(target: "kopf.objects", "Cannot serialise an object for its daemons: {error}");
            "null".to_owned()
        });
        Self {
            json: json.into_boxed_str(),
        }
    }
}

/// The live state of one object that its daemons and timers read.
#[derive(Debug, Clone)]
pub(super) struct Live {
    pub(super) object: Arc<Snapshot>,
    /// When the object's essence last changed (for idle timers).
    pub(super) changed_at: Instant,
}

/// [`Live`], shared by an object's tasks; `changed` wakes idle-only timers when the
/// essence changes. (A watch channel per object would cost ~500 bytes, this ~100.)
pub(super) struct LiveCell {
    pub(super) state: Mutex<Live>,
    pub(super) changed: tokio::sync::Notify,
}

impl LiveCell {
    pub(super) fn get(&self) -> Live {
        self.state.lock().clone()
    }
}

/// What `ctx.live_body()` of a running daemon or timer reads (the `daemon.body` host method).
impl LiveBody for LiveCell {
    fn push_json(&self, out: &mut String) {
        let object = self.state.lock().object.clone();
        out.push_str(&object.json);
    }
}

/// Where a daemon's or timer's loop stands between its steps.
pub(super) struct Progress {
    retries: u32,
    started: Box<str>,
    started_at: Instant,
    carried: CarriedFns,
}

/// Body functions (Kopf's `patch.fns`) whose JSON patch was refused (the object changed
/// meanwhile): they go again with the next attempt's patch, as in Kopf. Their plugins
/// forget them when this is dropped (the daemon or timer ended).
#[derive(Default)]
struct CarriedFns {
    fns: Vec<(usize, u64)>,
    plugins: Option<PluginSet>,
    /// The object as re-read after the refusal, and the live body's JSON then: the next
    /// attempt patches the re-read object while the live body is still that one (the
    /// operator's own patches do not always reach the live body, and a stale
    /// resourceVersion would be refused again).
    reread: Option<(Value, Arc<Snapshot>)>,
}

impl CarriedFns {
    /// The re-read object, if the live body has not moved on since.
    fn reread_for(&mut self, live: &Arc<Snapshot>) -> Option<Value> {
        match self.reread.take() {
            Some((fresh, then)) if Arc::ptr_eq(&then, live) || then.json == live.json => Some(fresh),
            _ => None,
        }
    }
}

impl Drop for CarriedFns {
    fn drop(&mut self) {
        if let Some(plugins) = &self.plugins
            && !self.fns.is_empty()
        {
            plugins.release_patch_fns(&self.fns);
        }
    }
}

impl Progress {
    pub(super) fn start() -> Self {
        Self {
            retries: 0,
            started: Timestamp::now().to_string().into_boxed_str(),
            started_at: Instant::now(),
            carried: CarriedFns::default(),
        }
    }
}

/// What follows one step of a daemon or timer.
pub(super) enum Step {
    /// Done forever (returned, failed permanently, or a one-shot timer ticked).
    Done,
    /// Stopped while waiting.
    Stopped,
    /// Sleep until then, then step again.
    Sleep(Instant),
}

pub(super) struct Task {
    pub(super) shared: Arc<Shared>,
    pub(super) resource: Arc<Resource>,
    /// `resource.info()`, once per resource rather than per call.
    pub(super) resource_info: Arc<ResourceInfo>,
    pub(super) handler: HandlerRef,
    pub(super) live: Arc<LiveCell>,
    pub(super) stop: Arc<StopFlag>,
    pub(super) cancel: CancellationToken,
    pub(super) registry: Arc<StopRegistry>,
}

impl Task {
    /// Waits out the handler's initial delay; false if stopped meanwhile.
    pub(super) async fn initial_delay(&self) -> bool {
        match self.handler.spec().options.initial_delay {
            // Boxed: a rare wait, kept out of the futures that live long.
            Some(delay) => !Box::pin(self.stop.sleep(seconds(delay))).await,
            None => true,
        }
    }

    /// Runs a daemon until stopped; returns true when it is done forever. (Timers run
    /// step by step through [`TimerRun::tick`].)
    pub(super) async fn run(self) -> bool {
        if !self.initial_delay().await {
            return false;
        }
        let mut progress = Progress::start();
        loop {
            match self.step(&mut progress).await {
                Step::Done => return true,
                Step::Stopped => return false,
                Step::Sleep(until) => {
                    if self.stop.sleep_until(until).await {
                        return false;
                    }
                }
            }
        }
    }

    /// One call of the handler (after an idle timer's wait), and what comes next.
    pub(super) async fn step(&self, progress: &mut Progress) -> Step {
        let options = &self.handler.spec().options;
        let is_timer = self.handler.kind() == HandlerKind::Timer;
        if self.stop.reason().is_some() {
            return Step::Stopped;
        }
        if is_timer && let Some(idle) = options.idle {
            // Wait until the object has been unchanged for `idle` seconds.
            let idle = seconds(idle);
            loop {
                let since = self.live.get().changed_at.elapsed();
                if since >= idle {
                    break;
                }
                if Box::pin(self.stop.sleep(idle - since)).await {
                    return Step::Stopped;
                }
            }
        }
        let tick = Instant::now();
        let attempt = Attempt {
            retries: progress.retries,
            runtime: progress.started_at.elapsed().as_secs_f64(),
        };
        let decision = match execution::precheck(self.handler.spec(), attempt) {
            Some(decision) => decision,
            // Boxed: the call's state exists only during the call, so a daemon's
            // long-lived future stays small.
            None => Box::pin(self.invoke(attempt, progress)).await,
        };
        let delay = match decision {
            Decision::Success if is_timer => {
                progress.retries = 0;
                match options.interval {
                    Some(interval) if options.sharp.unwrap_or(false) => {
                        let elapsed = tick.elapsed().as_secs_f64();
                        interval - (elapsed % interval)
                    }
                    Some(interval) => interval,
                    None if options.idle.is_some() => {
                        // Idle-only timers wait for the next change, then idle again.
                        if !Box::pin(self.wait_for_change()).await {
                            return Step::Stopped;
                        }
                        0.0
                    }
                    None => return Step::Done, // A one-shot timer.
                }
            }
            Decision::Success | Decision::Failure { .. } => return Step::Done,
            Decision::Retry { delay, .. } => {
                progress.retries += 1;
                delay
            }
        };
        Step::Sleep(if is_timer {
            tick_deadline(seconds(delay))
        } else {
            Instant::now() + seconds(delay)
        })
    }

    /// Waits until the object's essence changes; false if stopped meanwhile (or after an
    /// hour without change).
    async fn wait_for_change(&self) -> bool {
        let before = self.live.get().changed_at;
        loop {
            let changed = self.live.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.live.get().changed_at != before {
                return true;
            }
            tokio::select! {
                () = changed => {}
                _ = self.stop.sleep(Duration::from_secs(3600)) => return false,
            }
        }
    }

    async fn invoke(&self, attempt: Attempt, progress: &mut Progress) -> Decision {
        let started = &*progress.started;
        let object = self.live.get().object;
        let call_id = next_call_id();
        let inv = Invocation {
            resource: Some(ResourceInfo::clone(&self.resource_info)),
            retry: attempt.retries,
            runtime: attempt.runtime,
            started: Some(started.to_owned()),
            param: self.handler.spec().options.param.clone(),
            call_id: Some(call_id),
            ..Default::default()
        };
        // No deadline: a daemon runs for as long as its object lives (a timer's call, too,
        // ends by its own or by the stop flag and cancellation).
        let call = Call {
            body_json: Some(&object.json),
            cancel: Some(&self.cancel),
            ..Call::new(&self.handler, &inv)
        };
        self.registry
            .register(call_id, self.stop.clone(), self.live.clone());
        let outcome = invocation::invoke(&self.shared.metrics, &self.shared.plugins, call).await;
        self.registry.unregister(call_id);
        let default_backoff = self.shared.settings.execution.default_backoff;
        let decision = execution::conclude(
            &self.shared.metrics,
            self.handler.spec(),
            attempt,
            &outcome,
            default_backoff,
        );
        execution::log_decision(self.handler.kind(), self.handler.id(), &decision);
        let mut patch = Patch::new();
        let reread = progress.carried.reread_for(&object);
        for (plugin, token) in std::mem::take(&mut progress.carried.fns) {
            patch.push_fn(PatchFn::Plugin { plugin, token });
        }
        application::collect(
            &mut patch,
            self.handler.id(),
            &outcome,
            decision == Decision::Success,
        );
        application::collect_fns(&mut patch, self.handler.plugin().index(), &outcome);
        if !patch.is_empty() {
            match self.apply(&object, reread, &patch).await {
                Some(fresh) => {
                    progress.carried = CarriedFns {
                        fns: patch.plugin_fns(),
                        plugins: Some(self.shared.plugins.clone()),
                        reread: Some((fresh, object)),
                    };
                }
                None => self.shared.plugins.release_patch_fns(&patch.plugin_fns()),
            }
        }
        decision
    }

    /// Persists a daemon's or timer's patch and result the one way outcomes are applied
    /// (status first; nothing is sent when nothing would change), to `reread` if given,
    /// else to the live `object`. The object as re-read when its JSON patch was refused
    /// because the object changed meanwhile.
    async fn apply(&self, object: &Snapshot, reread: Option<Value>, patch: &Patch) -> Option<Value> {
        let body: Value = match reread {
            Some(body) => body,
            None => match serde_json::from_str(&object.json) {
                Ok(body) => body,
                Err(error) => {
                    tracing::warn!(target: "kopf.objects", "Cannot read the object back for patching after {}: {error}", execution::handler_name(self.handler.kind(), self.handler.id()));
                    return None;
                }
            },
        };
        let plugins = &self.shared.plugins;
        match application::apply(&self.shared.client, plugins, &self.resource, &body, patch).await {
            Ok(Applied::Conflicted(fresh)) => Some(fresh),
            Ok(_) => None,
            Err(failed) => {
                tracing::warn!(target: "kopf.objects", "Patching after {} failed: {}", execution::handler_name(self.handler.kind(), self.handler.id()), failed.describe(&self.resource));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn long_timer_intervals_wake_on_a_shared_grid() {
        use super::{TICK_GRID, tick_deadline};
        use std::time::Duration;
        use tokio::time::Instant;
        let a = tick_deadline(Duration::from_secs(10));
        let b = tick_deadline(Duration::from_millis(10_007));
        let now = Instant::now();
        for deadline in [a, b] {
            let from_now = deadline.saturating_duration_since(now);
            assert!(
                from_now <= Duration::from_secs(10) + TICK_GRID * 2,
                "{from_now:?}"
            );
        }
        // Both fall on the same grid: their distance is a whole number of steps.
        let apart = b.max(a) - b.min(a);
        assert_eq!(apart.as_nanos() % TICK_GRID.as_nanos(), 0, "{apart:?}");
        // Short intervals keep their precision.
        let short = tick_deadline(Duration::from_millis(500));
        assert!(short.saturating_duration_since(Instant::now()) <= Duration::from_millis(500));
    }

    use super::*;

    #[test]
    fn snapshots_keep_the_body_as_json() {
        let body = json!({"metadata": {"name": "n", "namespace": "ns", "uid": "u"}, "spec": {"x": [1, 2]}});
        let snapshot = Snapshot::of(&body);
        assert_eq!(serde_json::from_str::<Value>(&snapshot.json).unwrap(), body);
    }
}
