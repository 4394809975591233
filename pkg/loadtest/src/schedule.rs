//! The open model's timetable: when request `i` is meant to be sent, with a linear ramp-up to
//! the full rate. Latency is measured from this intended instant, not from when a connection
//! got free, so a stalled target shows in the latencies (no coordinated omission).

use std::time::Duration;

/// A constant rate reached by a linear ramp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Requests per second after the ramp.
    pub rate: f64,
    pub ramp_up: Duration,
    pub duration: Duration,
}

impl Schedule {
    /// Requests sent in `[0, t)` seconds.
    pub fn count_until(&self, t: f64) -> f64 {
        let ramp = self.ramp_up.as_secs_f64();
        let t = t.clamp(0.0, self.duration.as_secs_f64());
        if ramp > 0.0 && t < ramp {
            self.rate * t * t / (2.0 * ramp)
        } else {
            self.rate * ramp / 2.0 + self.rate * (t - ramp)
        }
    }

    /// All requests of the run.
    pub fn total(&self) -> u64 {
        self.count_until(self.duration.as_secs_f64()).ceil() as u64
    }

    /// The intended send time of request `i` (0-based) after the start; `None` past the end.
    pub fn send_time(&self, i: u64) -> Option<Duration> {
        let ramp = self.ramp_up.as_secs_f64();
        let i = i as f64;
        let in_ramp = self.rate * ramp / 2.0;
        let t = if ramp > 0.0 && i < in_ramp {
            (2.0 * i * ramp / self.rate).sqrt()
        } else {
            ramp + (i - in_ramp) / self.rate
        };
        (t < self.duration.as_secs_f64()).then(|| Duration::from_secs_f64(t))
    }

    /// The steady-state rate the run was asked for, over its whole length (what `achieved`
    /// is compared to): total requests over the duration.
    pub fn mean_rate(&self) -> f64 {
        self.count_until(self.duration.as_secs_f64()) / self.duration.as_secs_f64()
    }
}

/// When closed-model user `u` of `users` starts: spread evenly over the ramp-up.
pub fn user_start(u: u32, users: u32, ramp_up: Duration) -> Duration {
    if users == 0 {
        return Duration::ZERO;
    }
    ramp_up.mul_f64(f64::from(u) / f64::from(users))
}

/// Connections an open-model generator opens for `rate` requests per second, when not given:
/// enough for ~50 ms of latency at full rate, at least 8, at most 1024.
pub fn default_connections(rate: f64) -> u32 {
    ((rate * 0.05).ceil() as u32).clamp(8, 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rate: f64, ramp: u64, dur: u64) -> Schedule {
        Schedule {
            rate,
            ramp_up: Duration::from_secs(ramp),
            duration: Duration::from_secs(dur),
        }
    }

    #[test]
    fn schedule_without_ramp_is_evenly_spaced() {
        let sch = s(1000.0, 0, 10);
        assert_eq!(sch.send_time(0), Some(Duration::ZERO));
        assert_eq!(sch.send_time(500), Some(Duration::from_millis(500)));
        assert_eq!(sch.total(), 10_000);
        assert_eq!(sch.send_time(10_000), None);
        assert!((sch.mean_rate() - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn schedule_ramp_sends_half_the_rate_during_the_ramp() {
        let sch = s(100.0, 10, 20);
        // during a 10 s linear ramp to 100/s: 500 requests; then 100/s
        assert!((sch.count_until(10.0) - 500.0).abs() < 1e-9);
        assert_eq!(sch.total(), 1500);
        let t = sch.send_time(500).unwrap().as_secs_f64();
        assert!((t - 10.0).abs() < 1e-9, "{t}");
        // send times are increasing and consistent with count_until
        let mut last = -1.0;
        for i in 0..1500 {
            let t = sch.send_time(i).unwrap().as_secs_f64();
            assert!(t > last);
            assert!((sch.count_until(t) - i as f64).abs() < 1e-6, "{i} {t}");
            last = t;
        }
        assert_eq!(sch.send_time(1500), None);
    }

    #[test]
    fn user_start_spreads_over_the_ramp() {
        let r = Duration::from_secs(10);
        assert_eq!(user_start(0, 5, r), Duration::ZERO);
        assert_eq!(user_start(4, 5, r), Duration::from_secs(8));
        assert_eq!(user_start(3, 5, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn default_connections_scale_with_rate() {
        assert_eq!(default_connections(10.0), 8);
        assert_eq!(default_connections(2000.0), 100);
        assert_eq!(default_connections(1e9), 1024);
    }
}
