//! One request budget for the whole process.
//!
//! The API allows 40 requests per 10 s per client IP address and, past that,
//! rejects everything for a 10 s cooldown. A token bucket would not keep to
//! that rule: a full bucket can be spent at the end of one window and refilled
//! within the next 10 s, so this limiter keeps the send times of the last
//! `limit` requests and admits a request only when fewer than `limit` were
//! sent in the trailing window. A 429 pauses every request for the cooldown.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

/// A sliding-window limiter with a shared pause.
#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl RateLimiter {
    /// Allows `limit` requests in any `window`; `limit` must be at least 1.
    pub fn new(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            limit: limit.max(1) as usize,
            window,
            state: Mutex::new(State::default()),
        }
    }

    /// Waits until a request may be sent and records it as sent.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire(Instant::now()) {
                Ok(()) => return,
                Err(ready_at) => sleep_until(ready_at).await,
            }
        }
    }

    /// Records a request sent at `now`, or returns when to try again.
    fn try_acquire(&self, now: Instant) -> Result<(), Instant> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());

        if let Some(until) = state.paused_until {
            if until > now {
                return Err(until);
            }
            state.paused_until = None;
        }

        while let Some(oldest) = state.sent.front() {
            if now.saturating_duration_since(*oldest) < self.window {
                break;
            }
            state.sent.pop_front();
        }

        if state.sent.len() < self.limit {
            state.sent.push_back(now);
            return Ok(());
        }
        // The front entry is the oldest still inside the window.
        Err(state.sent[0] + self.window)
    }

    /// Holds every request back for `duration` from now; a longer pause
    /// already in force is kept. Returns whether no pause was in force.
    pub fn pause(&self, duration: Duration) -> bool {
        let now = Instant::now();
        let until = now + duration;
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());

        let was_paused = state.paused_until.is_some_and(|current| current > now);
        state.paused_until = Some(
            state
                .paused_until
                .map_or(until, |current| current.max(until)),
        );
        !was_paused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_limit_then_waits_for_the_oldest_to_leave() {
        let limiter = RateLimiter::new(3, Duration::from_secs(10));
        let start = Instant::now();

        for offset in 0..3 {
            let at = start + Duration::from_secs(offset);
            assert_eq!(limiter.try_acquire(at), Ok(()), "request {offset}");
        }

        let fourth = start + Duration::from_secs(5);
        assert_eq!(
            limiter.try_acquire(fourth),
            Err(start + Duration::from_secs(10))
        );
        assert_eq!(limiter.try_acquire(start + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn no_window_ever_holds_more_than_the_limit() {
        let limiter = RateLimiter::new(4, Duration::from_secs(10));
        let start = Instant::now();
        let mut sent = Vec::new();

        // Try every 100 ms for a minute and check every trailing window.
        for step in 0..600 {
            let now = start + Duration::from_millis(step * 100);
            if limiter.try_acquire(now).is_ok() {
                sent.push(now);
            }
        }

        for (index, first) in sent.iter().enumerate() {
            let in_window = sent[index..]
                .iter()
                .take_while(|time| time.duration_since(*first) < Duration::from_secs(10))
                .count();
            assert!(in_window <= 4, "{in_window} requests in one window");
        }
        assert_eq!(sent.len(), 24);
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_back_every_request() {
        let limiter = RateLimiter::new(100, Duration::from_secs(10));
        let start = Instant::now();

        limiter.pause(Duration::from_secs(10));
        limiter.acquire().await;

        assert!(Instant::now() >= start + Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn shorter_pause_does_not_cut_a_longer_one() {
        let limiter = RateLimiter::new(100, Duration::from_secs(10));
        let start = Instant::now();

        assert!(limiter.pause(Duration::from_secs(20)));
        assert!(!limiter.pause(Duration::from_secs(5)));
        limiter.acquire().await;

        assert!(Instant::now() >= start + Duration::from_secs(20));
    }
}
