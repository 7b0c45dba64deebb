//! A circuit breaker per engine: after a run of consecutive failures the
//! engine is left out of recalls for a cool-down, then one trial recall is
//! let through (half-open); its success closes the breaker, its failure
//! opens it again.
//!
//! Why: an engine that fails every time (a damaged index, a bug a query
//! pattern keeps hitting, a search that always runs past its deadline)
//! would otherwise cost every recall its deadline or its error path. With
//! the breaker open, recalls skip it at no cost and answer `Degraded`,
//! naming it.
//!
//! Lock-free: the state is three atomics, read on every recall. Times are
//! CLOCK_MONOTONIC milliseconds given by the caller, so tests drive time.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (DESIGN: 5).
    pub failures_to_open: u32,
    /// How long an open breaker keeps the engine out before a trial (DESIGN: 30 s).
    pub cool_down_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            cool_down_ms: 30_000,
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// The engine runs.
    Closed,
    /// The engine is left out until the cool-down ends.
    Open,
    /// One trial recall is running the engine.
    HalfOpen,
}

impl BreakerState {
    /// For Stats: 0 closed, 1 open, 2 half-open.
    pub fn code(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// One engine's breaker.
#[derive(Debug, Default)]
pub struct Breaker {
    consecutive_failures: AtomicU32,
    /// When it opened (ms, monotonic + 1 so 0 means "closed").
    opened_at_ms: AtomicU64,
    /// A trial is running (half-open).
    trial: AtomicU32,
    /// Times it opened, for Stats.
    opened: AtomicU64,
}

impl Breaker {
    /// May a recall at `now_ms` run the engine? `true` also when this call
    /// takes the half-open trial (the caller must then `record` its outcome).
    pub fn allow(&self, config: &BreakerConfig, now_ms: u64) -> bool {
        let opened = self.opened_at_ms.load(Ordering::Acquire);
        if opened == 0 {
            return true;
        }
        let cooled = now_ms.saturating_add(1) >= opened.saturating_add(config.cool_down_ms);
        // Only one recall takes the trial.
        cooled
            && self
                .trial
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// The outcome of a run that `allow` let through.
    pub fn record(&self, config: &BreakerConfig, ok: bool, now_ms: u64) {
        if ok {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.opened_at_ms.store(0, Ordering::Release);
            self.trial.store(0, Ordering::Release);
            return;
        }
        let failures = self
            .consecutive_failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let half_open = self.trial.load(Ordering::Acquire) == 1;
        if half_open || failures >= config.failures_to_open {
            if self.opened_at_ms.swap(now_ms.saturating_add(1), Ordering::AcqRel) == 0 || half_open {
                self.opened.fetch_add(1, Ordering::Relaxed);
            }
            self.trial.store(0, Ordering::Release);
        }
    }

    /// Where it stands at `now_ms`.
    pub fn state(&self, config: &BreakerConfig, now_ms: u64) -> BreakerState {
        let opened = self.opened_at_ms.load(Ordering::Acquire);
        if opened == 0 {
            BreakerState::Closed
        } else if self.trial.load(Ordering::Acquire) == 1
            || now_ms.saturating_add(1) >= opened.saturating_add(config.cool_down_ms)
        {
            BreakerState::HalfOpen
        } else {
            BreakerState::Open
        }
    }

    /// How many times it has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BreakerConfig = BreakerConfig {
        failures_to_open: 5,
        cool_down_ms: 30_000,
    };

    #[test]
    fn five_consecutive_failures_open_it_and_a_success_in_between_resets_the_count() {
        let breaker = Breaker::default();
        for _ in 0..4 {
            assert!(breaker.allow(&CONFIG, 10));
            breaker.record(&CONFIG, false, 10);
        }
        breaker.record(&CONFIG, true, 10);
        for _ in 0..4 {
            breaker.record(&CONFIG, false, 10);
        }
        assert_eq!(breaker.state(&CONFIG, 10), BreakerState::Closed);
        breaker.record(&CONFIG, false, 10);
        assert_eq!(breaker.state(&CONFIG, 10), BreakerState::Open);
        assert!(!breaker.allow(&CONFIG, 10_000));
        assert_eq!(breaker.times_opened(), 1);
    }

    #[test]
    fn after_the_cool_down_one_trial_runs_and_its_outcome_decides() {
        let breaker = Breaker::default();
        for _ in 0..5 {
            breaker.record(&CONFIG, false, 1000);
        }
        assert!(!breaker.allow(&CONFIG, 30_999 - 1));
        assert!(breaker.allow(&CONFIG, 31_000), "the trial after 30 s");
        assert!(!breaker.allow(&CONFIG, 31_000), "only one trial at a time");
        assert_eq!(breaker.state(&CONFIG, 31_000), BreakerState::HalfOpen);
        // The trial fails: open again, for another cool-down.
        breaker.record(&CONFIG, false, 31_000);
        assert_eq!(breaker.state(&CONFIG, 31_001), BreakerState::Open);
        assert!(!breaker.allow(&CONFIG, 40_000));
        assert!(breaker.allow(&CONFIG, 61_000));
        breaker.record(&CONFIG, true, 61_000);
        assert_eq!(breaker.state(&CONFIG, 61_000), BreakerState::Closed);
        assert!(breaker.allow(&CONFIG, 61_000) && breaker.allow(&CONFIG, 61_000));
        assert_eq!(breaker.times_opened(), 2);
    }
}
