//! One request budget for the whole process.
//!
//! The API allows 40 requests per 10 s per client IP address and, past that,
//! rejects everything for a 10 s cooldown. A token bucket would not keep to
//! that rule: a full bucket can be spent at the end of one window and refilled
//! within the next 10 s. This limiter admits a request only while fewer than
//! `limit` requests are in flight or finished within the trailing window.
//!
//! A request counts from when it is admitted until one window after its
//! response arrived. The server receives the request somewhere between those two
//! moments, so however long connecting or sending takes, no window the server
//! measures can hold more than `limit` of this process's requests. A 429
//! pauses every request for the cooldown.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

/// Pause used when a requested one does not fit the clock.
const MAX_PAUSE: Duration = Duration::from_secs(24 * 60 * 60);

/// A sliding-window limiter with a shared pause.
#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    state: Mutex<State>,
    released: Notify,
}

#[derive(Debug, Default)]
struct State {
    slots: Vec<Slot>,
    next_id: u64,
    paused_until: Option<Instant>,
}

/// One admitted request: in flight while `finished_at` is `None`.
#[derive(Debug)]
struct Slot {
    id: u64,
    finished_at: Option<Instant>,
}

/// When an admission may succeed next.
#[derive(Debug, PartialEq, Eq)]
enum Wait {
    Until(Instant),
    /// Every slot is in flight: wait for a response.
    ForRelease,
}

/// An admitted request; dropping it records that its response arrived.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a RateLimiter,
    id: u64,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.finish(self.id, Instant::now());
    }
}

impl RateLimiter {
    /// Allows `limit` requests in any `window`; a `limit` of 0 counts as 1.
    pub fn new(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            limit: limit.max(1) as usize,
            window,
            state: Mutex::new(State::default()),
            released: Notify::new(),
        }
    }

    /// Counts `reserved` requests as sent just now. A process that replaces
    /// another starts with this, because the server still counts the
    /// requests the old process sent in its last window.
    pub fn with_startup_reserve(self, reserved: usize) -> RateLimiter {
        let now = Instant::now();
        {
            let mut state = self.lock();
            for _ in 0..reserved.min(self.limit.saturating_sub(1)) {
                let id = state.next_id;
                state.next_id += 1;
                state.slots.push(Slot {
                    id,
                    finished_at: Some(now),
                });
            }
        }
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until a request may be sent. Keep the permit until the
    /// response (or the error) arrives.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let released = self.released.notified();
            match self.try_acquire(Instant::now()) {
                Ok(id) => return Permit { limiter: self, id },
                Err(Wait::Until(ready_at)) => sleep_until(ready_at).await,
                Err(Wait::ForRelease) => released.await,
            }
        }
    }

    /// Admits a request at `now`, or returns how long to wait.
    fn try_acquire(&self, now: Instant) -> Result<u64, Wait> {
        let mut state = self.lock();

        if let Some(until) = state.paused_until {
            if until > now {
                return Err(Wait::Until(until));
            }
            state.paused_until = None;
        }

        let window = self.window;
        state.slots.retain(|slot| match slot.finished_at {
            Some(finished) => now.saturating_duration_since(finished) < window,
            None => true,
        });

        if state.slots.len() < self.limit {
            let id = state.next_id;
            state.next_id += 1;
            state.slots.push(Slot {
                id,
                finished_at: None,
            });
            return Ok(id);
        }

        let earliest = state.slots.iter().filter_map(|slot| slot.finished_at).min();
        match earliest {
            Some(finished) => Err(Wait::Until(finished + window)),
            None => Err(Wait::ForRelease),
        }
    }

    fn finish(&self, id: u64, now: Instant) {
        let mut state = self.lock();
        if let Some(slot) = state.slots.iter_mut().find(|slot| slot.id == id) {
            slot.finished_at = Some(now);
        }
        drop(state);
        self.released.notify_waiters();
    }

    /// Holds every request back for `duration` from now; a longer pause
    /// already in force is kept. Returns whether no pause was in force.
    pub fn pause(&self, duration: Duration) -> bool {
        let now = Instant::now();
        let until = now.checked_add(duration).unwrap_or(now + MAX_PAUSE);
        let mut state = self.lock();

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

    const WINDOW: Duration = Duration::from_secs(10);

    fn seconds(start: Instant, offset: u64) -> Instant {
        start + Duration::from_secs(offset)
    }

    #[test]
    fn full_window_waits_for_oldest_slot() {
        let limiter = RateLimiter::new(3, WINDOW);
        let start = Instant::now();

        for offset in 0..3 {
            let id = limiter
                .try_acquire(seconds(start, offset))
                .expect("admitted");
            limiter.finish(id, seconds(start, offset));
        }

        let fourth = limiter.try_acquire(seconds(start, 5));
        assert_eq!(fourth, Err(Wait::Until(seconds(start, 10))));
        assert!(limiter.try_acquire(seconds(start, 10)).is_ok());
    }

    #[test]
    fn window_counts_from_the_response() {
        let limiter = RateLimiter::new(1, WINDOW);
        let start = Instant::now();

        let id = limiter.try_acquire(start).expect("admitted");
        assert_eq!(
            limiter.try_acquire(seconds(start, 20)),
            Err(Wait::ForRelease)
        );

        limiter.finish(id, seconds(start, 30));
        assert_eq!(
            limiter.try_acquire(seconds(start, 35)),
            Err(Wait::Until(seconds(start, 40)))
        );
        assert!(limiter.try_acquire(seconds(start, 40)).is_ok());
    }

    #[test]
    fn no_window_ever_holds_more_than_the_limit() {
        let limiter = RateLimiter::new(4, WINDOW);
        let start = Instant::now();
        let mut sent = Vec::new();

        // Try every 100 ms for a minute; each response takes 300 ms.
        for step in 0..600 {
            let now = start + Duration::from_millis(step * 100);
            if let Ok(id) = limiter.try_acquire(now) {
                limiter.finish(id, now + Duration::from_millis(300));
                sent.push(now);
            }
        }

        for (index, first) in sent.iter().enumerate() {
            let in_window = sent[index..]
                .iter()
                .take_while(|time| time.duration_since(*first) < WINDOW)
                .count();
            assert!(in_window <= 4, "{in_window} requests in one window");
        }
        assert!(sent.len() >= 20, "only {} requests admitted", sent.len());
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_permit_wakes_a_waiter() {
        let limiter = RateLimiter::new(1, Duration::from_secs(1));
        let start = Instant::now();

        let permit = limiter.acquire().await;
        let waiter = async {
            limiter.acquire().await;
            Instant::now()
        };
        let release = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(permit);
        };
        let (admitted_at, ()) = tokio::join!(waiter, release);

        assert!(admitted_at >= start + Duration::from_secs(3));
    }

    #[test]
    fn startup_reserve_limits_first_window() {
        let start = Instant::now();
        let limiter = RateLimiter::new(3, WINDOW).with_startup_reserve(2);

        assert!(limiter.try_acquire(start).is_ok());
        assert!(matches!(limiter.try_acquire(start), Err(Wait::Until(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_back_every_request() {
        let limiter = RateLimiter::new(100, WINDOW);
        let start = Instant::now();

        limiter.pause(Duration::from_secs(10));
        let _permit = limiter.acquire().await;

        assert!(Instant::now() >= start + Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn shorter_pause_does_not_cut_a_longer_one() {
        let limiter = RateLimiter::new(100, WINDOW);
        let start = Instant::now();

        assert!(limiter.pause(Duration::from_secs(20)));
        assert!(!limiter.pause(Duration::from_secs(5)));
        let _permit = limiter.acquire().await;

        assert!(Instant::now() >= start + Duration::from_secs(20));
    }
}
