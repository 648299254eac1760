//! Exponential backoff: `initial`, doubling (by `factor`) up to `max`.
//! The work queue retries failed keys with it; the agent's container restarts
//! (10 s doubling to 5 min) use the same type.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
}

impl Backoff {
    /// client-go's per-item rate limiter starts at 5 ms; we cap at 30 s
    /// rather than its 1000 s so a control loop that failed on a transient
    /// API error recovers within a user's patience.
    pub const WORK_QUEUE: Backoff = Backoff { initial: Duration::from_millis(5), max: Duration::from_secs(30), factor: 2.0 };

    /// The delay before retry number `failures` (1 = the first retry).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = self.factor.powi(failures.saturating_sub(1).min(64) as i32);
        let secs = self.initial.as_secs_f64() * exp;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() { self.max } else { Duration::from_secs_f64(secs) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_initial_and_stops_at_max() {
        let b = Backoff { initial: Duration::from_secs(10), max: Duration::from_secs(300), factor: 2.0 };
        let delays: Vec<u64> = (0..8).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, vec![0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
    }
}
