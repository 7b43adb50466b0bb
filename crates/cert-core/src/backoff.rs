//! The one backoff schedule of the workspace: a pause that doubles from a first value up
//! to a cap, over a bounded number of attempts, with jitter so that many clients failing
//! together do not retry together. Backends retrying requests (S3, Azure), the ACME
//! issuer retrying a step and the engine spacing attempts for a name all use it.
//!
//! ```
//! use std::time::Duration;
//! use cert_core::backoff::Backoff;
//!
//! let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 4);
//! assert_eq!(backoff.pause(1), Duration::from_millis(100));
//! assert_eq!(backoff.pause(3), Duration::from_millis(400));
//! assert_eq!(backoff.pause(9), Duration::from_secs(2));
//!
//! let mut attempts = backoff.attempts();
//! let mut pauses = 0;
//! while let Some(pause) = attempts.next_pause() {
//!     assert!(pause <= backoff.pause(attempts.attempt() - 1));
//!     pauses += 1;
//! }
//! assert_eq!(pauses, 3, "4 attempts, 3 pauses between them");
//! ```

use std::time::Duration;

/// A doubling pause from `first` up to `max`, for at most `attempts` attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The pause after the first failure.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
}

impl Backoff {
    /// A schedule pausing `first` after the first failure, doubling up to `max`, for
    /// `attempts` attempts in all (at least one).
    pub fn new(first: Duration, max: Duration, attempts: u32) -> Self {
        Backoff {
            first,
            max: max.max(first),
            attempts: attempts.max(1),
        }
    }

    /// The pause after `failures` consecutive failures (1 or more), without jitter:
    /// `first`, doubling, at most `max`.
    pub fn pause(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The longest time the pauses of one run of attempts add up to.
    pub fn total_pause(&self) -> Duration {
        (1..self.attempts)
            .map(|failures| self.pause(failures))
            .sum()
    }

    /// A run of attempts, the first one under way.
    pub fn attempts(&self) -> Attempts {
        Attempts {
            backoff: *self,
            attempt: 1,
        }
    }
}

/// One run of attempts of a [`Backoff`].
#[derive(Debug, Clone)]
pub struct Attempts {
    backoff: Backoff,
    attempt: u32,
}

impl Attempts {
    /// The attempt under way, counting from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// After a failed attempt: the pause before the next one, or `None` when the attempts
    /// are used up. The pause is jittered between half and all of the schedule's.
    pub fn next_pause(&mut self) -> Option<Duration> {
        if self.attempt >= self.backoff.attempts {
            return None;
        }
        let pause = self
            .backoff
            .pause(self.attempt)
            .mul_f64(0.5 + fastrand::f64() * 0.5);
        self.attempt += 1;
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_attempts_are_bounded() {
        let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5), 6);
        let schedule: Vec<_> = (1..=7).map(|n| backoff.pause(n).as_millis()).collect();
        assert_eq!(schedule, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(backoff.total_pause(), Duration::from_millis(7750));
        let mut attempts = backoff.attempts();
        let mut seen = Vec::new();
        while let Some(pause) = attempts.next_pause() {
            seen.push(pause);
        }
        assert_eq!(seen.len(), 5);
        for (n, pause) in seen.iter().enumerate() {
            let full = backoff.pause(n as u32 + 1);
            assert!(
                *pause >= full / 2 && *pause <= full,
                "{pause:?} for {full:?}"
            );
        }
        assert_eq!(attempts.attempt(), 6);
    }

    #[test]
    fn at_least_one_attempt_and_no_overflow() {
        let once = Backoff::new(Duration::from_secs(1), Duration::ZERO, 0);
        assert_eq!(once.attempts, 1);
        assert_eq!(once.max, Duration::from_secs(1));
        assert!(once.attempts().next_pause().is_none());
        let long = Backoff::new(Duration::from_secs(60), Duration::from_secs(6 * 3600), 3);
        assert_eq!(long.pause(u32::MAX), Duration::from_secs(6 * 3600));
    }
}
