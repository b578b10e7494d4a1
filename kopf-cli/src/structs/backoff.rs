//! One retry policy for every loop that waits after a failure: the watcher's reconnects
//! and relists, re-logins, the per-object throttle, the Lease elector.
//!
//! Modelled on kube-runtime's `Backoff` (`next_backoff`/`reset`); the delays are either a
//! list (Kopf's `error_delays`, the last one repeating) or a doubling sequence with a cap,
//! optionally with jitter (client-go's relist backoff), so that many objects or replicas
//! failing at once do not retry in lockstep.

use std::time::Duration;

/// How the delays grow.
#[derive(Debug, Clone, PartialEq)]
pub enum Delays {
    /// These delays in turn; the last one repeats (Kopf's `queueing.error_delays`).
    Steps(Vec<Duration>),
    /// `initial`, then doubling up to `max`.
    Exponential {
        /// The first delay.
        initial: Duration,
        /// The bound of every delay (before jitter).
        max: Duration,
    },
}

/// Consecutive failures and the delay before the next attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    delays: Delays,
    /// Fraction of each delay added at random (0 = none, 0.2 = up to +20 %).
    jitter: f64,
    failures: u32,
}

impl Backoff {
    /// A backoff over these delays, no jitter.
    pub fn new(delays: Delays) -> Self {
        Backoff {
            delays,
            jitter: 0.0,
            failures: 0,
        }
    }

    /// A backoff over Kopf-style delays in seconds (the last one repeats); an empty list
    /// means one second each time.
    pub fn from_seconds(seconds: &[f64]) -> Self {
        Backoff::new(Delays::from_seconds(seconds))
    }

    /// Doubling from `initial` up to `max`.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff::new(Delays::Exponential { initial, max })
    }

    /// Adds up to `fraction` of each delay at random (clamped to 0..=1).
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// The delay before the next attempt; counts one more failure.
    pub fn next_backoff(&mut self) -> Duration {
        let base = self.delay_for(self.failures);
        self.failures = self.failures.saturating_add(1);
        jittered(base, self.jitter)
    }

    /// Forgets the failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn delay_for(&self, failures: u32) -> Duration {
        self.delays.after(failures)
    }
}

impl Delays {
    /// The delay after `failures` consecutive failures, without jitter: for counters kept
    /// elsewhere (per-object memory holds a counter, not a [`Backoff`]).
    pub fn after(&self, failures: u32) -> Duration {
        match self {
            Delays::Steps(steps) => steps
                .get(failures as usize)
                .or(steps.last())
                .copied()
                .unwrap_or(Duration::from_secs(1)),
            Delays::Exponential { initial, max } => {
                let factor = 1u32 << failures.min(20);
                initial.saturating_mul(factor).min(*max)
            }
        }
    }

    /// Kopf-style delays in seconds (the last one repeats).
    pub fn from_seconds(seconds: &[f64]) -> Self {
        Delays::Steps(
            seconds
                .iter()
                .map(|s| Duration::from_secs_f64(s.max(0.0)))
                .collect(),
        )
    }
}

/// `base` plus up to `fraction` of it at random (clamped to 0..=1): never shorter than
/// `base` (a server's Retry-After stays honoured), never longer than `base * (1 + fraction)`.
pub fn jittered(base: Duration, fraction: f64) -> Duration {
    let fraction = fraction.clamp(0.0, 1.0);
    if fraction > 0.0 && !base.is_zero() {
        base + base.mul_f64(fraction * rand::random::<f64>())
    } else {
        base
    }
}

/// Sleeps until `at`, or for ever when there is nothing to wait for: the arm of a
/// `select!` that wakes at an optional deadline.
///
/// # Cancel safety
/// Cancel safe: dropping it loses nothing.
pub async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_repeat_the_last_delay_and_reset() {
        let mut backoff = Backoff::from_seconds(&[1.0, 2.0, 5.0]);
        let seen: Vec<u64> = (0..5).map(|_| backoff.next_backoff().as_secs()).collect();
        assert_eq!(seen, [1, 2, 5, 5, 5]);
        assert_eq!(backoff.failures(), 5);
        backoff.reset();
        assert_eq!(backoff.next_backoff(), Duration::from_secs(1));
    }

    #[test]
    fn empty_steps_mean_one_second() {
        assert_eq!(Backoff::from_seconds(&[]).next_backoff(), Duration::from_secs(1));
    }

    #[test]
    fn exponential_doubles_up_to_the_bound() {
        let mut backoff = Backoff::exponential(Duration::from_millis(800), Duration::from_secs(30));
        let seen: Vec<u128> = (0..8).map(|_| backoff.next_backoff().as_millis()).collect();
        assert_eq!(seen, [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
    }

    #[test]
    fn jittered_delays_stay_in_bounds_and_spread() {
        let base = Duration::from_secs(2);
        let seen: Vec<Duration> = (0..200).map(|_| jittered(base, 0.2)).collect();
        assert!(
            seen.iter()
                .all(|d| *d >= base && *d <= Duration::from_millis(2400)),
            "{seen:?}"
        );
        // Not in lockstep: 200 draws from a continuous range are never all equal.
        assert!(seen.iter().any(|d| *d != seen[0]), "{seen:?}");
        assert_eq!(jittered(base, 0.0), base);
        assert_eq!(jittered(Duration::ZERO, 0.5), Duration::ZERO);
        assert!(jittered(base, 7.0) <= base * 2, "the fraction is clamped");
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let mut backoff =
            Backoff::exponential(Duration::from_secs(1), Duration::from_secs(1)).with_jitter(0.5);
        for _ in 0..100 {
            let delay = backoff.next_backoff();
            assert!(
                delay >= Duration::from_secs(1) && delay <= Duration::from_millis(1500),
                "{delay:?}"
            );
        }
    }
}
