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
//! the task is abandoned ("orphaned", as Kopf says). While a deleted object's daemons run,
//! the finalizer stays; orphaned ones no longer hold it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use kopf_abi::protocol::{HandlerKind, ResourceInfo};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{
    daemon_task::{Live, LiveCell, Progress, Snapshot, Step, Task},
    shared::Shared,
    stopping::{StopFlag, StopReason, StopRegistry},
    wheel::Wheel,
};
use crate::{plugin::HandlerRef, settings::seconds, structs::references::Resource};

/// How long a stopped daemon may take to exit by itself before cancellation, when
/// neither `cancellation_backoff` nor `settings.background.instant_exit_timeout` says.
const INSTANT_EXIT: Duration = Duration::from_millis(100);

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
                let span = run.span.clone();
                tokio::spawn(run.tick().instrument(span));
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

    /// Puts the operator's own writes (the body its patches returned) into the live body
    /// of the object's daemons and timers: the echoes of those patches are skipped, and
    /// the tasks would otherwise see the object as it was before them (Kopf's live body
    /// follows every event). Not a change for idle timers. Nothing for objects without tasks.
    pub fn refresh(&self, body: &Value) {
        let Some(uid) = uid_of(body) else { return };
        let objects = self.objects.lock();
        if let Some(live) = objects.get(uid).and_then(|tasks| tasks.live.as_ref()) {
            live.state.lock().object = Arc::new(Snapshot::of(body));
        }
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
        // In the object's span (the caller's), so that its lines name the object.
        let span = tracing::Span::current();
        let escalation = async move {
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
                tracing::warn!(target: "kopf.objects", "Daemon {id:?} did not exit in time. Leaving it orphaned.");
                // As in Kopf, an orphaned daemon no longer counts as running: the object's
                // finalizer is released (its task, if it ever ends, sets the latch again).
                done.set();
            }
        };
        tokio::spawn(escalation.instrument(span));
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
        // The tasks run in the object's span (the caller's, the object's worker), so that
        // their lines name the object and are posted with its events.
        let span = tracing::Span::current();
        let wheel_key = if is_timer {
            let key = self.next_wheel_key.fetch_add(1, Ordering::Relaxed);
            let run = Box::new(TimerRun {
                task,
                progress: None,
                key,
                wheel: self.wheel.clone(),
                end,
                span: span.clone(),
            });
            tokio::spawn(run.tick().instrument(span));
            Some(key)
        } else {
            let run = async move {
                if task.run().await {
                    end.done_forever();
                }
            };
            tokio::spawn(run.instrument(span));
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
    /// The object's span, entered by every tick.
    span: tracing::Span,
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
