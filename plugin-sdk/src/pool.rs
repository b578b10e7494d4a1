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

use std::collections::VecDeque;
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
        self.submit(&mut self.lock(), job)
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
            return Ok(()); // Every thread is busy; the job waits for one.
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
}
