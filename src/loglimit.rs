//! A limit on repeated warnings shared by many tasks.
//!
//! During an API outage every watcher retries, and a thousand watchers would
//! write a thousand lines a minute. The limiter lets a few lines through per
//! period and counts the rest, so the next line written gives the number
//! left out.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Lines allowed per period, shared by every caller.
#[derive(Debug)]
pub struct LogLimiter {
    burst: u32,
    period: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    period_start: Instant,
    written: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(burst: u32, period: Duration) -> LogLimiter {
        LogLimiter {
            burst,
            period,
            state: Mutex::new(State {
                period_start: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// Returns `Some(left out)` when a line may be written, with the number
    /// of lines left out since the last one written, or `None` to skip it.
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());

        if now.saturating_duration_since(state.period_start) >= self.period {
            state.period_start = now;
            state.written = 0;
        }
        if state.written >= self.burst {
            state.suppressed += 1;
            return None;
        }

        state.written += 1;
        Some(std::mem::take(&mut state.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn admits_burst_then_reports_what_it_left_out() {
        let limiter = LogLimiter::new(2, Duration::from_secs(10));

        assert_eq!(limiter.admit(), Some(0));
        assert_eq!(limiter.admit(), Some(0));
        assert_eq!(limiter.admit(), None);
        assert_eq!(limiter.admit(), None);

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(limiter.admit(), Some(2));
        assert_eq!(limiter.admit(), Some(0));
    }
}
