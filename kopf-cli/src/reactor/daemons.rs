//! Daemons and timers: background tasks per (object, handler), as Kopf's `daemons.py`.
//!
//! A daemon runs once per matching object for as long as the object exists and matches;
//! it restarts after temporary errors and is "done forever" (in this process) after it
//! returns or fails permanently. A timer invokes its handler every `interval` seconds
//! (optionally only after the object was unchanged for `idle` seconds, optionally aligned
//! to the interval grid with `sharp`), never overlapping itself.
//!
//! Stopping (object deleted, filters no longer matching, operator pausing or exiting) sets
//! the task's stop flag, which the handler sees through `ctx.stopped()`; then, after
//! `cancellation_backoff`, an async daemon is cancelled, and after `cancellation_timeout`
//! the task is abandoned. While a deleted object's daemons run, the finalizer stays.

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use kopf_abi::protocol::{HandlerKind, Invocation, ResourceInfo};
use parking_lot::{Condvar, Mutex};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{shared::Shared, wheel::Wheel};
use crate::{
    actions::{
        application,
        execution::{self, Attempt, Decision},
        invocation::{self, Call},
    },
    persistence::times::Timestamp,
    plugin::{HandlerRef, next_call_id},
    settings::seconds,
    structs::{patches::Patch, references::Resource},
};

/// How long a stopped daemon may take to exit by itself before cancellation, when
/// neither `cancellation_backoff` nor `settings.background.instant_exit_timeout` says.
const INSTANT_EXIT: Duration = Duration::from_millis(100);

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

/// The grid that timer ticks of long intervals are aligned to (see [`tick_deadline`]).
const TICK_GRID: Duration = Duration::from_millis(20);

/// When a timer sleeping `delay` should wake up: for intervals of 2 s and more, the end
/// of the delay rounded up to a grid of [`TICK_GRID`] shared by all timers (at most 1%
/// late). Many timers then wake the runtime together, once per grid step, instead of
/// one wake-up (and thread hand-off) per tick: with 10,000 timers, the wake-ups cost
/// more CPU than the ticks themselves.
fn tick_deadline(delay: Duration) -> Instant {
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

/// Stop flags of running daemon calls by call id, for the `daemon.*` host methods.
#[derive(Debug, Default)]
pub struct StopRegistry {
    flags: Mutex<HashMap<u64, Arc<StopFlag>>>,
}

impl StopRegistry {
    fn register(&self, call_id: u64, flag: Arc<StopFlag>) {
        self.flags.lock().insert(call_id, flag);
    }

    fn unregister(&self, call_id: u64) {
        self.flags.lock().remove(&call_id);
    }

    /// Answers `daemon.stopped` / `daemon.wait`: `{"stopped": bool, "reason": ...}`.
    pub fn answer(&self, call_id: u64, wait: Option<Option<Duration>>) -> Value {
        let flag = self.flags.lock().get(&call_id).cloned();
        let reason = match (flag, wait) {
            // An unknown call is not a running daemon: tell it to stop.
            (None, _) => return json!({"stopped": true, "reason": "DONE"}),
            (Some(flag), None) => flag.reason(),
            (Some(flag), Some(timeout)) => flag.wait_blocking(timeout),
        };
        json!({"stopped": reason.is_some(), "reason": reason.map(StopReason::as_str)})
    }
}

/// An object version as its daemons and timers need it: serialised once per version
/// (every call sends the same body; a compact JSON text also takes a fraction of the
/// memory of a [`Value`] tree), plus the name for logs and patches.
#[derive(Debug)]
struct Snapshot {
    /// The body as a JSON document.
    json: Box<str>,
    namespace: Option<Box<str>>,
    name: Option<Box<str>>,
}

impl Snapshot {
    fn of(body: &Value) -> Self {
        let text = |p: &str| body.pointer(p).and_then(Value::as_str).map(Box::from);
        let json = serde_json::to_string(body).unwrap_or_else(|error| {
            // A `Value` always serialises; this is only a guard.
            tracing::warn!(target: "kopf.objects", "Cannot serialise an object for its daemons: {error}");
            "null".to_owned()
        });
        Self {
            json: json.into_boxed_str(),
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
        }
    }

    /// `namespace/name` (or `name`) for log lines.
    fn reference(&self) -> String {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            (None, Some(name)) => name.to_string(),
            _ => "?".into(),
        }
    }
}

/// The live state of one object that its daemons and timers read.
#[derive(Debug, Clone)]
struct Live {
    object: Arc<Snapshot>,
    /// When the object's essence last changed (for idle timers).
    changed_at: Instant,
}

/// [`Live`], shared by an object's tasks; `changed` wakes idle-only timers when the
/// essence changes. (A watch channel per object would cost ~500 bytes, this ~100.)
struct LiveCell {
    state: Mutex<Live>,
    changed: tokio::sync::Notify,
}

impl LiveCell {
    fn get(&self) -> Live {
        self.state.lock().clone()
    }
}

/// Set once when a task has ended; awaitable. (Small: one per running task.)
#[derive(Debug, Default)]
struct Latch {
    set: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Latch {
    fn set(&self) {
        self.set.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_set(&self) -> bool {
        self.set.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// Sets its latch when dropped: when the task ends, panics or is aborted.
struct SetOnDrop(Arc<Latch>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

struct Running {
    stop: Arc<StopFlag>,
    cancel: CancellationToken,
    done: Arc<Latch>,
    /// A timer's key in the resource's wheel, where it waits between ticks.
    wheel_key: Option<u64>,
}

#[derive(Default)]
struct ObjectTasks {
    live: Option<Arc<LiveCell>>,
    /// Running tasks by handler index (into `Background::handlers`): a few at most, so a
    /// vector, not a map (~200 bytes less per object).
    running: Vec<(usize, Running)>,
    /// Handlers that returned or failed permanently: not restarted in this process.
    finished: Vec<usize>,
}

/// The daemons and timers of one resource's objects.
pub struct Background {
    shared: Arc<Shared>,
    /// Shared by every task of the resource (a copy per task would cost ~1 KB each).
    resource: Arc<Resource>,
    resource_info: Arc<ResourceInfo>,
    handlers: Vec<HandlerRef>,
    registry: Arc<StopRegistry>,
    objects: Arc<Mutex<HashMap<String, ObjectTasks>>>,
    /// Timers between ticks.
    wheel: Wheel<Box<TimerRun>>,
    next_wheel_key: AtomicU64,
}

impl Drop for Background {
    fn drop(&mut self) {
        // Parked timers hold the wheel: closing it breaks the cycle and ends them.
        self.wheel.close();
    }
}

fn uid_of(body: &Value) -> Option<&str> {
    body.pointer("/metadata/uid").and_then(Value::as_str)
}

impl Background {
    /// The background tasks for `handlers` (only daemons and timers are kept).
    pub fn new(
        shared: Arc<Shared>,
        resource: Resource,
        handlers: &[HandlerRef],
        registry: Arc<StopRegistry>,
    ) -> Self {
        let handlers = handlers
            .iter()
            .filter(|h| matches!(h.kind(), HandlerKind::Daemon | HandlerKind::Timer))
            .cloned()
            .collect();
        Self {
            shared,
            resource_info: Arc::new(resource.info()),
            resource: Arc::new(resource),
            handlers,
            registry,
            objects: Arc::default(),
            wheel: Wheel::new(|run: Box<TimerRun>| {
                tokio::spawn(run.tick());
            }),
            next_wheel_key: AtomicU64::new(1),
        }
    }

    /// The daemon and timer handlers served.
    pub fn handlers(&self) -> &[HandlerRef] {
        &self.handlers
    }

    /// Brings the object's tasks in line with its newest state: spawns those that match
    /// and are not running, stops those that no longer match (`matching` lists the ids
    /// of the handlers whose filters match now), and stops all on deletion.
    pub fn adjust(&self, body: &Value, matching: &[String], essence_changed: bool) {
        let Some(uid) = uid_of(body) else { return };
        let deleting = body
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        let mut objects = self.objects.lock();
        let tasks = objects.entry(uid.to_owned()).or_default();
        let now = Instant::now();
        let object = Arc::new(Snapshot::of(body));
        match &tasks.live {
            Some(live) => {
                let mut state = live.state.lock();
                state.object = object;
                if essence_changed {
                    state.changed_at = now;
                    drop(state);
                    live.changed.notify_waiters();
                }
            }
            None => {
                tasks.live = Some(Arc::new(LiveCell {
                    state: Mutex::new(Live {
                        object,
                        changed_at: now,
                    }),
                    changed: tokio::sync::Notify::new(),
                }))
            }
        }
        tasks.running.retain(|(_, r)| !r.done.is_set());
        for (index, handler) in self.handlers.iter().enumerate() {
            let id = handler.id();
            let wanted = !deleting && matching.iter().any(|m| m == id) && !tasks.finished.contains(&index);
            let running = tasks.running.iter().find(|(i, _)| *i == index).map(|(_, r)| r);
            match (running, wanted) {
                (Some(running), false) => {
                    let reason = if deleting {
                        StopReason::ResourceDeleted
                    } else {
                        StopReason::FiltersMismatch
                    };
                    self.stop_one(handler, running, reason);
                }
                (None, true) => {
                    let Some(live) = tasks.live.clone() else {
                        continue;
                    };
                    let running = self.spawn(index, live, uid.to_owned());
                    tasks.running.push((index, running));
                }
                _ => {}
            }
        }
    }

    /// Whether any task of the object still runs (the finalizer must stay).
    pub fn alive(&self, body: &Value) -> bool {
        let Some(uid) = uid_of(body) else { return false };
        let mut objects = self.objects.lock();
        let Some(tasks) = objects.get_mut(uid) else {
            return false;
        };
        tasks.running.retain(|(_, r)| !r.done.is_set());
        !tasks.running.is_empty()
    }

    /// Forgets an object that is gone (its tasks were stopped before).
    pub fn forget(&self, body: &Value) {
        if let Some(uid) = uid_of(body) {
            let removed = self.objects.lock().remove(uid);
            for (index, running) in removed.map(|t| t.running).unwrap_or_default() {
                if let Some(handler) = self.handlers.get(index) {
                    self.stop_one(handler, &running, StopReason::ResourceDeleted);
                }
            }
        }
    }

    /// Stops the object's tasks (operator pausing or exiting) and waits for them a little;
    /// the object's state is forgotten (tasks are re-spawned after a resume's re-listing).
    pub async fn stop_object(&self, body: &Value, reason: StopReason) {
        let Some(uid) = uid_of(body) else { return };
        let Some(tasks) = self.objects.lock().remove(uid) else {
            return;
        };
        let mut waits = Vec::new();
        for (index, running) in tasks.running {
            if let Some(handler) = self.handlers.get(index) {
                self.stop_one(handler, &running, reason);
            }
            waits.push(running.done);
        }
        for done in waits {
            let _ = tokio::time::timeout(Duration::from_secs(5), done.wait()).await;
        }
    }

    /// Signals one task to stop and escalates per the handler's cancellation settings.
    fn stop_one(&self, handler: &HandlerRef, running: &Running, reason: StopReason) {
        if running.stop.reason().is_some() {
            return;
        }
        running.stop.set(reason);
        if let Some(key) = running.wheel_key {
            // A timer waiting for its next tick ends here (a ticking one after its tick).
            drop(self.wheel.take(key));
        }
        let options = &handler.spec().options;
        let background = &self.shared.settings.background;
        // Kopf gives daemons a moment to exit "instantly" before any escalation: a few
        // zero-time yields (async daemons that check the flag), then a short wait.
        let zero_time_cycles = background.instant_exit_zero_time_cycles;
        let instant = background
            .instant_exit_timeout
            .map(seconds)
            .unwrap_or(INSTANT_EXIT);
        let backoff = options
            .cancellation_backoff
            .map(seconds)
            .unwrap_or_default()
            .max(instant);
        let timeout = options.cancellation_timeout.map(seconds);
        let polling = seconds(
            options
                .cancellation_polling
                .unwrap_or(background.cancellation_polling),
        )
        .max(Duration::from_millis(10));
        let cancel = running.cancel.clone();
        let done = running.done.clone();
        let id = handler.id().to_owned();
        tokio::spawn(async move {
            for _ in 0..zero_time_cycles {
                if done.is_set() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            if tokio::time::timeout(backoff, done.wait()).await.is_ok() {
                return;
            }
            let Some(timeout) = timeout else {
                // No timeout: the daemon exits by itself, however long it takes; the
                // object keeps its finalizer until then (released the moment it exits,
                // not at the next poll). The polling only paces the reminders.
                loop {
                    tracing::debug!(target: "kopf.objects", "Daemon {id:?} is still exiting. Next check is in {} seconds.", polling.as_secs_f64());
                    if tokio::time::timeout(polling, done.wait()).await.is_ok() {
                        return;
                    }
                }
            };
            tracing::debug!(target: "kopf.objects", "Daemon {id:?} did not exit in time; cancelling it.");
            cancel.cancel();
            if tokio::time::timeout(timeout, done.wait()).await.is_err() {
                tracing::warn!(target: "kopf.objects", "Daemon {id:?} did not exit after cancellation; abandoning it.");
            }
        });
    }

    fn spawn(&self, index: usize, live: Arc<LiveCell>, uid: String) -> Running {
        let handler = self.handlers[index].clone();
        let is_timer = handler.kind() == HandlerKind::Timer;
        let stop = Arc::new(StopFlag::default());
        let cancel = CancellationToken::new();
        let done = Arc::new(Latch::default());
        let end = TaskEnd {
            index,
            uid,
            objects: Arc::downgrade(&self.objects),
            _ended: SetOnDrop(done.clone()),
        };
        let task = Task {
            shared: self.shared.clone(),
            resource: self.resource.clone(),
            resource_info: self.resource_info.clone(),
            handler,
            live,
            stop: stop.clone(),
            cancel: cancel.clone(),
            registry: self.registry.clone(),
        };
        let wheel_key = if is_timer {
            let key = self.next_wheel_key.fetch_add(1, Ordering::Relaxed);
            let run = Box::new(TimerRun {
                task,
                progress: None,
                key,
                wheel: self.wheel.clone(),
                end,
            });
            tokio::spawn(run.tick());
            Some(key)
        } else {
            tokio::spawn(async move {
                if task.run().await {
                    end.done_forever();
                }
            });
            None
        };
        Running {
            stop,
            cancel,
            done,
            wheel_key,
        }
    }
}

/// The end of a daemon's or timer's life: sets its latch when dropped.
struct TaskEnd {
    index: usize,
    uid: String,
    objects: Weak<Mutex<HashMap<String, ObjectTasks>>>,
    _ended: SetOnDrop,
}

impl TaskEnd {
    /// Returned or failed permanently: not restarted in this process.
    fn done_forever(self) {
        if let Some(objects) = self.objects.upgrade()
            && let Some(tasks) = objects.lock().get_mut(&self.uid)
        {
            tasks.finished.push(self.index);
        }
    }
}

/// A timer: a task only while it ticks; between ticks it waits in the resource's wheel.
struct TimerRun {
    task: Task,
    /// `None` until the initial delay has passed.
    progress: Option<Progress>,
    key: u64,
    wheel: Wheel<Box<TimerRun>>,
    end: TaskEnd,
}

impl TimerRun {
    async fn tick(mut self: Box<Self>) {
        let this = &mut *self;
        let progress = match &mut this.progress {
            Some(progress) => progress,
            None => {
                if !this.task.initial_delay().await {
                    return;
                }
                this.progress.insert(Progress::start())
            }
        };
        match this.task.step(progress).await {
            Step::Done => self.end.done_forever(),
            Step::Stopped => {}
            Step::Sleep(until) => {
                let (wheel, key, stop) = (self.wheel.clone(), self.key, self.task.stop.clone());
                // Stopped meanwhile: whoever stopped it may have looked for it in the
                // wheel before it got there, so it takes itself out again.
                if wheel.park(key, until, self).is_ok() && stop.reason().is_some() {
                    drop(wheel.take(key));
                }
            }
        }
    }
}

/// Where a daemon's or timer's loop stands between its steps.
struct Progress {
    retries: u32,
    started: Box<str>,
    started_at: Instant,
}

impl Progress {
    fn start() -> Self {
        Self {
            retries: 0,
            started: Timestamp::now().to_string().into_boxed_str(),
            started_at: Instant::now(),
        }
    }
}

/// What follows one step of a daemon or timer.
enum Step {
    /// Done forever (returned, failed permanently, or a one-shot timer ticked).
    Done,
    /// Stopped while waiting.
    Stopped,
    /// Sleep until then, then step again.
    Sleep(Instant),
}

struct Task {
    shared: Arc<Shared>,
    resource: Arc<Resource>,
    /// `resource.info()`, once per resource rather than per call.
    resource_info: Arc<ResourceInfo>,
    handler: HandlerRef,
    live: Arc<LiveCell>,
    stop: Arc<StopFlag>,
    cancel: CancellationToken,
    registry: Arc<StopRegistry>,
}

impl Task {
    /// Waits out the handler's initial delay; false if stopped meanwhile.
    async fn initial_delay(&self) -> bool {
        match self.handler.spec().options.initial_delay {
            // Boxed: a rare wait, kept out of the futures that live long.
            Some(delay) => !Box::pin(self.stop.sleep(seconds(delay))).await,
            None => true,
        }
    }

    /// Runs a daemon until stopped; returns true when it is done forever. (Timers run
    /// step by step through [`TimerRun::tick`].)
    async fn run(self) -> bool {
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
    async fn step(&self, progress: &mut Progress) -> Step {
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
            None => Box::pin(self.invoke(attempt, &progress.started)).await,
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

    async fn invoke(&self, attempt: Attempt, started: &str) -> Decision {
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
        let reference = object.reference();
        // No deadline: a daemon runs for as long as its object lives (a timer's call, too,
        // ends by its own or by the stop flag and cancellation).
        let call = Call {
            body_json: Some(&object.json),
            cancel: Some(&self.cancel),
            ..Call::new(&self.handler, &inv).about(&reference)
        };
        self.registry.register(call_id, self.stop.clone());
        let outcome = invocation::invoke(&self.shared.plugins, call).await;
        self.registry.unregister(call_id);
        let default_backoff = self.shared.settings.execution.default_backoff;
        let decision = execution::conclude(self.handler.spec(), attempt, &outcome, default_backoff);
        execution::log_decision(
            self.handler.kind(),
            self.handler.id(),
            &decision,
            Some(&reference),
        );
        let mut patch = Patch::new();
        application::collect(
            &mut patch,
            self.handler.id(),
            &outcome,
            decision == Decision::Success,
        );
        if !patch.is_empty() {
            self.apply(&object, &patch, &reference).await;
        }
        decision
    }

    /// Persists a daemon's or timer's patch and result the one way outcomes are applied
    /// (status first; nothing is sent when nothing would change).
    async fn apply(&self, object: &Snapshot, patch: &Patch, reference: &str) {
        let body: Value = match serde_json::from_str(&object.json) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(target: "kopf.objects", "[{reference}] Cannot read the object back for patching after {:?}: {error}", self.handler.id());
                return;
            }
        };
        if let Err(failed) = application::apply(&self.shared.client, &self.resource, &body, patch).await {
            tracing::warn!(target: "kopf.objects", "[{reference}] Patching after {:?} failed: {}", self.handler.id(), failed.describe(&self.resource));
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn snapshots_keep_the_body_as_json_and_the_name() {
        let body = json!({"metadata": {"name": "n", "namespace": "ns", "uid": "u"}, "spec": {"x": [1, 2]}});
        let snapshot = Snapshot::of(&body);
        assert_eq!(serde_json::from_str::<Value>(&snapshot.json).unwrap(), body);
        assert_eq!(snapshot.reference(), "ns/n");
        assert_eq!(Snapshot::of(&json!({"metadata": {"name": "c"}})).reference(), "c");
        assert_eq!(Snapshot::of(&json!({})).reference(), "?");
    }

    #[test]
    fn registry_answers_for_known_and_unknown_calls() {
        let registry = StopRegistry::default();
        let flag = Arc::new(StopFlag::default());
        registry.register(7, flag.clone());
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
    }
}
