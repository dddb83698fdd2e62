//! Exponential backoff with jitter for retries after errors.
//!
//! Each delay is drawn between half and all of the current step, and the step
//! doubles up to the maximum, so that many watchers failing together do not
//! retry in lockstep.

use std::time::Duration;

use rand::Rng;

/// Delays between retries of one workflow's stream or of discovery.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            step: min,
        }
    }

    /// Returns the next delay and doubles the step.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);

        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Starts again from the minimum, after a success.
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_up_to_max() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let steps = [1, 2, 4, 8, 16, 32, 60, 60];

        for step in steps {
            let delay = backoff.next_delay();
            let step = Duration::from_secs(step);
            assert!(delay >= step / 2, "{delay:?} below half of {step:?}");
            assert!(delay <= step, "{delay:?} above {step:?}");
        }
    }

    #[test]
    fn reset_returns_to_min() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..5 {
            backoff.next_delay();
        }

        backoff.reset();

        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }
}
