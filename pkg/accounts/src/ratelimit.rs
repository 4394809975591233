//! Failed-login rate limiting: at most N failures per key (an account name, a client address)
//! within a sliding window; further attempts are refused until the oldest failure ages out.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures per key within `window`; `check` says how long a limited key must wait.
#[derive(Debug)]
pub struct RateLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(max_failures: usize, window: Duration) -> Self {
        RateLimiter {
            max_failures: max_failures.max(1),
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(wait)` when `key` already had the allowed number of failures in the window.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut map = self.lock();
        let Some(times) = map.get_mut(key) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.is_empty() {
            map.remove(key);
            return Ok(());
        }
        if times.len() >= self.max_failures {
            let oldest = times[0];
            let wait = self
                .window
                .saturating_sub(now.saturating_duration_since(oldest));
            return Err(wait.max(Duration::from_secs(1)));
        }
        Ok(())
    }

    /// Counts one failure of `key`; also forgets keys whose failures all aged out.
    pub fn record_failure(&self, key: &str, now: Instant) {
        let mut map = self.lock();
        if map.len() > 10_000 {
            let window = self.window;
            map.retain(|_, t| {
                t.back()
                    .is_some_and(|last| now.saturating_duration_since(*last) < window)
            });
        }
        let times = map.entry(key.to_string()).or_default();
        times.push_back(now);
        while times.len() > self.max_failures {
            times.pop_front();
        }
    }

    /// Forgets `key`'s failures (after a successful login).
    pub fn reset(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_after_max_failures_is_limited_until_window_passes() {
        let limiter = RateLimiter::new(5, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(limiter.check("alice", t0).is_ok(), "attempt {i}");
            limiter.record_failure("alice", t0);
        }
        let wait = limiter.check("alice", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
        assert!(limiter.check("bob", t0).is_ok());
        assert!(limiter.check("alice", t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn reset_forgets_failures() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        limiter.record_failure("k", t0);
        limiter.record_failure("k", t0);
        assert!(limiter.check("k", t0).is_err());
        limiter.reset("k");
        assert!(limiter.check("k", t0).is_ok());
    }

    #[test]
    fn check_sliding_window_waits_for_oldest_failure() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        limiter.record_failure("k", t0);
        limiter.record_failure("k", t0 + Duration::from_secs(30));
        let wait = limiter
            .check("k", t0 + Duration::from_secs(40))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(20));
    }
}
