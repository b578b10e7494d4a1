//! A thread pool for short synchronous calls that wakes threads sparingly.
//!
//! Tokio's blocking pool wakes (or starts) one thread per `spawn_blocking`. Timers tick
//! in bursts (many objects share a wake-up instant), so a burst of N ticks woke N threads
//! and grew the pool to about a hundred threads, and the kernel's scheduling then cost
//! more than the handlers. This pool keeps at most one thread *searching* for work:
//! a submission wakes a parked thread only when nobody is searching, a thread that takes
//! a job hands the search over to another only when more jobs wait, and a thread that
//! runs out of work parks at once (spinning for the next job cost more CPU, in the
//! reactor benchmark, than the wake-ups it saved). A burst then costs one or two
//! wake-ups, and a slow job still never blocks the jobs queued behind it while there are
//! threads to spare.
//!
//! A call the host abandoned after its timeout keeps its thread until the handler returns
//! (a thread cannot be stopped from outside). So that abandoned calls cannot pile up until
//! the pool is full, [`Serial`] never starts a handler for an object while its previous
//! call for that object still runs: the next call waits for it (the newest one only), and
//! a waiting call whose caller gave up is never started. A full pool is reported
//! ([`Pool::stats`], and a warning once per episode).

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long a parked thread lives without work (tokio's blocking pool uses the same).
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// The most threads at once; beyond, jobs wait in the queue (tokio's default).
const MAX_THREADS: usize = 512;

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Threads alive.
    threads: usize,
    /// Threads parked on the condition variable, not yet woken.
    parked: usize,
    /// Threads awake and without a job: they will take the next one.
    searching: usize,
    /// Wake-ups sent and not yet taken (tells a woken thread from a spurious wake-up).
    wakeups: usize,
    /// Every thread is busy and jobs wait for one (since the last time a thread idled).
    saturated: bool,
    /// How often the pool became saturated.
    saturations: u64,
}

/// What the pool is doing, for metrics and tests (the `pool` control method).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PoolStats {
    /// Threads alive.
    pub(crate) threads: usize,
    /// Threads running a job (abandoned calls included).
    pub(crate) busy: usize,
    /// Jobs waiting for a thread.
    pub(crate) queued: usize,
    /// The most threads at once.
    pub(crate) max_threads: usize,
    /// How often every thread was busy with jobs waiting.
    pub(crate) saturations: u64,
    /// Handler calls about objects that run (abandoned ones included; see [`Serial`]).
    pub(crate) object_calls: usize,
}

/// A pool of threads for synchronous jobs. See the module docs.
pub(crate) struct Pool {
    state: Mutex<State>,
    work: Condvar,
    name: &'static str,
    max_threads: usize,
}

/// The plugin's pool for synchronous handlers other than daemons.
pub(crate) fn sync_pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new("kopf-sync", MAX_THREADS))
}

impl Pool {
    fn new(name: &'static str, max_threads: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            name,
            max_threads: max_threads.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock, so a poisoned lock only means a panic in this
        // module's bookkeeping, whose state is still consistent between statements.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job. Fails only if a needed thread could not be started and no other
    /// thread exists to run the job (the job is then dropped, unrun).
    pub(crate) fn execute(&'static self, job: Job) -> Result<(), std::io::Error> {
        let (submitted, saturated) = {
            let mut state = self.lock();
            let was = state.saturated;
            let submitted = self.submit(&mut state, job);
            (submitted, !was && state.saturated)
        };
        if saturated {
            // Logged outside the lock (the host's log callback may take its time).
            crate::host::log(
                kopf_abi::LogLevel::WARN,
                "kopf.plugin",
                "",
                &format!(
                    "All {} threads for synchronous handlers are busy (calls abandoned after their timeout keep theirs until they return); further calls wait for a free thread.",
                    self.max_threads
                ),
            );
        }
        submitted
    }

    /// What the pool is doing now.
    pub(crate) fn stats(&self) -> PoolStats {
        let state = self.lock();
        PoolStats {
            threads: state.threads,
            busy: state.threads - state.parked - state.searching,
            queued: state.queue.len(),
            max_threads: self.max_threads,
            saturations: state.saturations,
            object_calls: serial().running(),
        }
    }

    /// [`Pool::execute`] with the lock held by the caller.
    fn submit(&'static self, state: &mut State, job: Job) -> Result<(), std::io::Error> {
        state.queue.push_back(job);
        if state.searching > 0 {
            return Ok(());
        }
        match self.wake_one(state) {
            Err(e) if state.threads == 0 => {
                state.queue.pop_back();
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// Makes one more thread search: a parked one if any, else a new one (within the
    /// limit). The caller holds the lock.
    fn wake_one(&'static self, state: &mut State) -> Result<(), std::io::Error> {
        if state.parked > 0 {
            state.parked -= 1;
            state.searching += 1;
            state.wakeups += 1;
            self.work.notify_one();
            return Ok(());
        }
        if state.threads >= self.max_threads {
            // Every thread is busy; the job waits for one.
            if !state.saturated {
                state.saturated = true;
                state.saturations += 1;
            }
            return Ok(());
        }
        std::thread::Builder::new()
            .name(self.name.to_owned())
            .spawn(move || self.run())?;
        state.threads += 1;
        state.searching += 1;
        Ok(())
    }

    /// A thread's life: it starts searching (as counted by whoever started it).
    fn run(&'static self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                state.searching -= 1;
                if !state.queue.is_empty() && state.searching == 0 {
                    // Not fatal when it fails: this thread comes back for the rest.
                    let _ = self.wake_one(&mut state);
                }
                drop(state);
                // Jobs catch their own panics; this keeps the thread's count right
                // should one not.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                state = self.lock();
                state.searching += 1;
                continue;
            }
            state.searching -= 1;
            state.parked += 1;
            state.saturated = false;
            let parked_at = Instant::now();
            loop {
                let left = KEEP_ALIVE.saturating_sub(parked_at.elapsed());
                let (next, _) = self
                    .work
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner());
                state = next;
                if state.wakeups > 0 {
                    // Whoever woke us moved us from parked to searching.
                    state.wakeups -= 1;
                    break;
                }
                if parked_at.elapsed() >= KEEP_ALIVE {
                    state.parked -= 1;
                    state.threads -= 1;
                    return;
                }
            }
        }
    }

    /// Threads alive (for tests).
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.lock().threads
    }
}

/// Whether [`Serial::run`] ran the job or left it waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Started {
    /// Ran (and finished) on the caller's thread, with the calls that waited behind it.
    Ran,
    /// An earlier job of the same key still runs: this one runs after it, on its thread.
    Waits,
    /// Like `Waits`, and it replaced an older waiting job (which was dropped, unrun).
    Replaced,
}

/// Runs jobs of the same key one after the other, never two at once (see the module
/// docs); at most one job waits per key.
#[derive(Default)]
pub(crate) struct Serial {
    /// Keys whose job runs, with the job waiting behind it, if any.
    running: Mutex<HashMap<String, Option<Job>>>,
}

/// The plugin's serialiser of handler calls per handler and object.
pub(crate) fn serial() -> &'static Serial {
    static SERIAL: OnceLock<Serial> = OnceLock::new();
    SERIAL.get_or_init(Serial::default)
}

impl Serial {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Option<Job>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `job` now on this thread, unless a job of `key` runs: then `job` waits for it
    /// (replacing an older waiting job, which is dropped: its caller gets "cancelled").
    pub(crate) fn run(&self, key: String, job: Job) -> Started {
        let replaced = {
            let mut running = self.lock();
            match running.get_mut(&key) {
                Some(waiting) => waiting.replace(job),
                None => {
                    running.insert(key.clone(), None);
                    drop(running);
                    self.run_chain(&key, job);
                    return Started::Ran;
                }
            }
        };
        // Dropped outside the lock: a dropped job completes its call (a host callback).
        match replaced {
            Some(older) => {
                drop(older);
                Started::Replaced
            }
            None => Started::Waits,
        }
    }

    /// Runs `job`, then whatever waits behind it, until nothing does.
    fn run_chain(&self, key: &str, mut job: Job) {
        loop {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let mut running = self.lock();
            match running.get_mut(key).and_then(Option::take) {
                Some(next) => job = next,
                None => {
                    running.remove(key);
                    return;
                }
            }
        }
    }

    /// Keys whose job runs.
    fn running(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn leaked(max_threads: usize) -> &'static Pool {
        Box::leak(Box::new(Pool::new("test-pool", max_threads)))
    }

    /// Waits (with a deadline) until every thread of the pool is parked.
    fn all_parked(pool: &Pool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let state = pool.lock();
            if state.parked == state.threads && state.queue.is_empty() {
                return true;
            }
            drop(state);
            std::thread::yield_now();
        }
        false
    }

    #[test]
    fn a_burst_wakes_one_thread_not_one_per_job() {
        let pool = leaked(64);
        let (tx, rx) = mpsc::channel();
        let burst = |tx: &mpsc::Sender<usize>| {
            // Submitted under one lock: no thread can take a job meanwhile, so the
            // count shows the submissions' own decisions (Tokio's pool: one per job).
            let mut state = pool.lock();
            for i in 0..50 {
                let tx = tx.clone();
                pool.submit(
                    &mut state,
                    Box::new(move || {
                        let _ = tx.send(i);
                    }),
                )
                .expect("queued");
            }
            (state.threads, state.searching)
        };
        assert_eq!(burst(&tx), (1, 1), "the first burst starts one thread");
        for _ in 0..50 {
            rx.recv_timeout(Duration::from_secs(10)).expect("every job runs");
        }
        assert!(all_parked(pool), "idle threads park");
        let threads = pool.threads();
        assert_eq!(
            burst(&tx),
            (threads, 1),
            "the next burst wakes one parked thread and starts none"
        );
        for _ in 0..50 {
            rx.recv_timeout(Duration::from_secs(10)).expect("every job runs");
        }
    }

    #[test]
    fn a_blocked_job_does_not_hold_up_the_jobs_behind_it() {
        let pool = leaked(8);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        pool.execute(Box::new(move || {
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
        }))
        .expect("queued");
        for i in 0..10 {
            let done_tx = done_tx.clone();
            pool.execute(Box::new(move || {
                let _ = done_tx.send(i);
            }))
            .expect("queued");
        }
        for _ in 0..10 {
            done_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("runs beside the blocked job");
        }
        release_tx.send(()).expect("the blocked job waits");
    }

    #[test]
    fn at_the_limit_jobs_wait_for_a_free_thread() {
        let pool = leaked(1);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        pool.execute(Box::new(move || {
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
        }))
        .expect("queued");
        pool.execute(Box::new(move || {
            let _ = done_tx.send(());
        }))
        .expect("queued");
        assert!(done_rx.recv_timeout(Duration::from_millis(200)).is_err());
        release_tx.send(()).expect("the blocked job waits");
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("runs once the thread is free");
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn a_panicking_job_keeps_the_pool_working() {
        let pool = leaked(2);
        pool.execute(Box::new(|| panic!("on purpose"))).expect("queued");
        let (tx, rx) = mpsc::channel();
        pool.execute(Box::new(move || {
            let _ = tx.send(());
        }))
        .expect("queued");
        rx.recv_timeout(Duration::from_secs(10)).expect("still runs jobs");
    }

    /// Sets `flag` when dropped: tells a job that was dropped unrun.
    struct DropFlag(mpsc::Sender<&'static str>, &'static str);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            let _ = self.0.send(self.1);
        }
    }

    #[test]
    fn a_key_never_runs_two_jobs_at_once_and_keeps_one_waiting() {
        let serial: &'static Serial = Box::leak(Box::default());
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel();
        let (ran_tx, ran_rx) = mpsc::channel();
        let first = {
            let started_tx = started_tx.clone();
            let ran_tx = ran_tx.clone();
            std::thread::spawn(move || {
                serial.run(
                    "fn\\nobj".into(),
                    Box::new(move || {
                        let _ = started_tx.send(());
                        // An abandoned call: it returns only when released.
                        let _ = release_rx.recv_timeout(Duration::from_secs(30));
                        let _ = ran_tx.send("first");
                    }),
                )
            })
        };
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the first runs");
        let job = |name: &'static str| -> Job {
            let ran_tx = ran_tx.clone();
            let (dropped_tx, _) = mpsc::channel();
            let flag = DropFlag(dropped_tx, name);
            Box::new(move || {
                let _ = ran_tx.send(name);
                drop(flag);
            })
        };
        assert_eq!(serial.run("fn\\nobj".into(), job("second")), Started::Waits);
        assert_eq!(serial.run("fn\\nobj".into(), job("third")), Started::Replaced);
        // Another object (or handler) is not held up.
        assert_eq!(serial.run("fn\\nother".into(), job("other")), Started::Ran);
        assert_eq!(ran_rx.recv_timeout(Duration::from_secs(10)), Ok("other"));
        assert!(
            ran_rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "nothing of the busy key ran beside the first"
        );
        release_tx.send(()).expect("the first waits");
        assert_eq!(first.join().expect("no panic"), Started::Ran);
        let ran: Vec<_> = ran_rx.try_iter().collect();
        assert_eq!(
            ran,
            ["first", "third"],
            "the newest waiting job ran after the first, the older never"
        );
        assert_eq!(serial.running(), 0, "keys are forgotten when idle");
    }

    #[test]
    fn abandoned_calls_of_one_handler_and_object_hold_one_thread_not_the_pool() {
        let pool = leaked(4);
        let serial: &'static Serial = Box::leak(Box::default());
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Arc::new(Mutex::new(release_rx));
        // A handler that hangs on one object, called again and again (a timer's ticks,
        // each abandoned by the host after its timeout).
        for _ in 0..20 {
            let release_rx = release_rx.clone();
            pool.execute(Box::new(move || {
                serial.run(
                    "hang\\nobj".into(),
                    Box::new(move || {
                        let rx = release_rx.lock().unwrap_or_else(|e| e.into_inner());
                        let _ = rx.recv_timeout(Duration::from_secs(30));
                    }),
                );
            }))
            .expect("queued");
        }
        let (done_tx, done_rx) = mpsc::channel();
        pool.execute(Box::new(move || {
            let _ = done_tx.send(());
        }))
        .expect("queued");
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("other calls still get a thread");
        // The others finish queueing their call behind the hanging one at once.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.stats().busy > 1 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let stats = pool.stats();
        assert_eq!(
            (stats.busy, stats.queued),
            (1, 0),
            "one thread held by the hanging handler: {stats:?}"
        );
        release_tx.send(()).expect("the hanging call waits");
        release_tx.send(()).expect("the one waiting call runs next");
        assert!(all_parked(pool), "every thread is free again");
    }

    #[test]
    fn a_full_pool_counts_its_saturation_once_per_episode() {
        let pool = leaked(1);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel();
        pool.execute(Box::new(move || {
            let _ = started_tx.send(());
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
        }))
        .expect("queued");
        started_rx.recv_timeout(Duration::from_secs(10)).expect("runs");
        assert_eq!(pool.stats().saturations, 0);
        for _ in 0..3 {
            pool.execute(Box::new(|| {})).expect("queued");
        }
        let stats = pool.stats();
        assert_eq!(
            (stats.busy, stats.queued, stats.saturations),
            (1, 3, 1),
            "one episode however many jobs wait"
        );
        release_tx.send(()).expect("the blocked job waits");
        assert!(all_parked(pool));
        assert_eq!(pool.stats().saturations, 1);
    }
}
