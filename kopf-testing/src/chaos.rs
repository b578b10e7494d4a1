//! A periodic chaos driver: closes watch streams and expires the event history at fixed
//! intervals while a test runs (the probabilistic per-request faults are in `faults.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::EmulatorHandle;

/// What the chaos driver does, and how often. `None` disables an action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChaosPlan {
    /// End every open watch stream this often (clients re-watch from their position).
    pub close_watches_every: Option<Duration>,
    /// Advance the resourceVersion and forget the event history this often: every watch
    /// gets 410 Gone when it next resumes (e.g. after `close_watches_every`) and must
    /// re-list.
    pub expire_history_every: Option<Duration>,
}

/// How many times each chaos action was done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChaosCounts {
    /// Watch streams closed (rounds, not streams).
    pub watch_closes: u64,
    /// History expiries.
    pub history_expiries: u64,
}

#[derive(Debug, Default)]
struct Tally {
    watch_closes: AtomicU64,
    history_expiries: AtomicU64,
}

/// One periodic chaos action.
#[derive(Debug, Clone, Copy)]
enum Action {
    CloseWatches,
    ExpireHistory,
}

impl Action {
    async fn run(self, emu: &EmulatorHandle, tally: &Tally) {
        match self {
            Self::CloseWatches => {
                emu.faults().close_watches();
                tally.watch_closes.fetch_add(1, Ordering::Relaxed);
            }
            Self::ExpireHistory => {
                // Advance the resourceVersion first (as other resources' writes do in a
                // real cluster): then even a watcher that saw the latest event of its
                // resource is behind the compaction and gets 410 when it resumes.
                let n = tally.history_expiries.fetch_add(1, Ordering::Relaxed) + 1;
                let tick = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "kopf-testing-chaos", "namespace": "default"},
                    "data": {"expiries": n.to_string()},
                });
                if let Err(error) = emu.apply_object(tick).await {
                    tracing::warn!("chaos: cannot advance the resourceVersion: {error}");
                }
                emu.faults().expire_history();
            }
        }
    }
}

/// A running chaos driver; stops on [`Chaos::stop`] or when dropped.
#[derive(Debug)]
pub struct Chaos {
    stop: CancellationToken,
    tally: Arc<Tally>,
}

impl Chaos {
    /// Starts the actions of `plan` against `emulator` on the current Tokio runtime.
    pub fn start(emulator: &EmulatorHandle, plan: ChaosPlan) -> Self {
        let stop = CancellationToken::new();
        let tally = Arc::new(Tally::default());
        let actions = [
            (plan.close_watches_every, Action::CloseWatches),
            (plan.expire_history_every, Action::ExpireHistory),
        ];
        for (every, action) in actions {
            let Some(every) = every.filter(|d| !d.is_zero()) else {
                continue;
            };
            let (emu, tally, stop) = (emulator.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = ticks.tick() => action.run(&emu, &tally).await,
                    }
                }
            });
        }
        Self { stop, tally }
    }

    /// The actions done so far.
    pub fn counts(&self) -> ChaosCounts {
        ChaosCounts {
            watch_closes: self.tally.watch_closes.load(Ordering::Relaxed),
            history_expiries: self.tally.history_expiries.load(Ordering::Relaxed),
        }
    }

    /// Stops the driver and returns what it did.
    pub fn stop(self) -> ChaosCounts {
        self.stop.cancel();
        self.counts()
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
