//! Latency statistics for the benchmark driver.

use std::time::Duration;

/// Summary of a set of latencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples` (any order); `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Some(Summary {
            count: sorted.len(),
            p50: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            max: *sorted.last().expect("non-empty"),
        })
    }
}

/// Nearest-rank percentile of an ascending, non-empty slice: the smallest
/// sample such that at least `p`% of samples are ≤ it. No interpolation, so
/// every reported figure is a latency that was actually observed.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty(), "percentile of no samples");
    assert!((0.0..=100.0).contains(&p), "percentile {p} out of range");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with microsecond resolution, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles_of_one_to_hundred() {
        let sorted = millis(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&sorted, 0.0), Duration::from_millis(1));
    }

    #[test]
    fn p99_of_few_samples_is_the_largest() {
        let sorted = millis(&[1, 2, 3]);
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(3));
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(2));
    }

    #[test]
    fn summary_sorts_its_input() {
        let s = Summary::of(&millis(&[9, 1, 5, 3, 7])).unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, Duration::from_millis(5));
        assert_eq!(s.max, Duration::from_millis(9));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ms_keeps_microseconds() {
        assert_eq!(ms(Duration::from_micros(1234)), 1.234);
    }
}
