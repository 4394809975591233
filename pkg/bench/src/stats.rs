//! Latency summaries: nearest-rank percentiles over recorded durations.

use std::time::Duration;

use serde::Serialize;

/// p50/p99/max/mean of a set of latency samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// How many samples the figures are taken over.
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Nearest-rank percentile (`p` in 0..=100) of already sorted samples; `None` when empty.
///
/// The rank is `ceil(p/100 * n)`, clamped to `1..=n`, so p100 is the maximum and p0 the
/// minimum, and p99 of fewer than 100 samples is the maximum.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl LatencySummary {
    /// Summarises samples (order does not matter); `None` when there are none.
    pub fn from_samples(samples: &[Duration]) -> Option<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        Some(Self {
            count: sorted.len(),
            p50_ms: ms(percentile(&sorted, 50.0)?),
            p99_ms: ms(percentile(&sorted, 99.0)?),
            max_ms: ms(*sorted.last()?),
            mean_ms: ms(total) / sorted.len() as f64,
        })
    }
}

/// Objects per second for `n` operations that took `elapsed`.
pub fn rate(n: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        n as f64 / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn percentile_empty_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn percentile_hundred_samples_picks_nearest_rank() {
        let sorted = ms_list(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&sorted, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&sorted, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&sorted, 0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn percentile_few_samples_p99_is_max() {
        let sorted = ms_list(&[3, 5, 9]);
        assert_eq!(percentile(&sorted, 99.0), Some(Duration::from_millis(9)));
        assert_eq!(percentile(&sorted, 50.0), Some(Duration::from_millis(5)));
    }

    #[test]
    fn percentile_single_sample_is_that_sample() {
        let sorted = ms_list(&[7]);
        assert_eq!(percentile(&sorted, 50.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&sorted, 99.0), Some(Duration::from_millis(7)));
    }

    #[test]
    fn summary_unsorted_input_sorts_before_ranking() {
        let s = LatencySummary::from_samples(&ms_list(&[40, 10, 30, 20])).unwrap();
        assert_eq!(s.count, 4);
        assert_eq!(s.p50_ms, 20.0);
        assert_eq!(s.p99_ms, 40.0);
        assert_eq!(s.max_ms, 40.0);
        assert_eq!(s.mean_ms, 25.0);
    }

    #[test]
    fn summary_empty_is_none() {
        assert!(LatencySummary::from_samples(&[]).is_none());
    }

    #[test]
    fn rate_zero_elapsed_is_zero() {
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(rate(10, Duration::from_millis(500)), 20.0);
    }
}
