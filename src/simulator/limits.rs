//! Per-client rate limit with a cooldown, modelled on the documented
//! ComfyControl limit of 40 requests in any 10 second window per client IP
//! address, counting all endpoints together. A client that exceeds it gets a
//! 10 second cooldown, during which every request is rejected unprocessed.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The outcome of counting one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request is within the limit.
    Allow,
    /// The request exceeds the limit and starts a cooldown.
    OverLimit,
    /// The request arrived during a cooldown, this long after it started.
    DuringCooldown { since_start: Duration },
}

/// A sliding-window rate limiter keyed by client IP address.
///
/// The window counts requests that were allowed. Rejected requests count
/// neither toward the window nor toward extending a cooldown. When a
/// cooldown starts, the client's window is cleared, so the client has its
/// full budget again once the cooldown ends.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    cooldown: Duration,
    clients: HashMap<IpAddr, ClientWindow>,
}

#[derive(Debug, Default)]
struct ClientWindow {
    allowed: VecDeque<Instant>,
    cooldown_start: Option<Instant>,
}

/// Number of tracked clients above which idle clients are forgotten.
const PRUNE_ABOVE: usize = 1024;

impl RateLimiter {
    /// Creates a limiter that allows `limit` requests per `window` and then
    /// rejects for `cooldown`. A `limit` of 0 disables the limiter.
    pub fn new(limit: u32, window: Duration, cooldown: Duration) -> Self {
        RateLimiter {
            limit,
            window,
            cooldown,
            clients: HashMap::new(),
        }
    }

    /// Counts a request from `client` received at `now` and decides on it.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> Decision {
        if self.limit == 0 {
            return Decision::Allow;
        }

        if self.clients.len() > PRUNE_ABOVE {
            self.prune(now);
        }

        let limit = self.limit as usize;
        let window = self.window;
        let cooldown = self.cooldown;
        let state = self.clients.entry(client).or_default();

        if let Some(start) = state.cooldown_start {
            let since_start = now.saturating_duration_since(start);
            if since_start < cooldown {
                return Decision::DuringCooldown { since_start };
            }
            state.cooldown_start = None;
        }

        while let Some(&oldest) = state.allowed.front() {
            if now.saturating_duration_since(oldest) < window {
                break;
            }
            state.allowed.pop_front();
        }

        if state.allowed.len() >= limit {
            state.allowed.clear();
            state.cooldown_start = Some(now);
            return Decision::OverLimit;
        }

        state.allowed.push_back(now);
        Decision::Allow
    }

    /// Forgets clients with no request in the window and no cooldown.
    fn prune(&mut self, now: Instant) {
        let window = self.window;
        let cooldown = self.cooldown;

        self.clients.retain(|_, state| {
            let cooling = state
                .cooldown_start
                .is_some_and(|start| now.saturating_duration_since(start) < cooldown);
            let recent = state
                .allowed
                .back()
                .is_some_and(|last| now.saturating_duration_since(*last) < window);
            cooling || recent
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn millis(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    fn limiter() -> RateLimiter {
        RateLimiter::new(3, millis(1000), millis(500))
    }

    #[test]
    fn allows_up_to_limit() {
        let mut limiter = limiter();
        let start = Instant::now();

        for offset in [0, 10, 20] {
            let decision = limiter.check(CLIENT, start + millis(offset));
            assert_eq!(decision, Decision::Allow, "request at {offset} ms");
        }
    }

    #[test]
    fn request_past_limit_starts_cooldown() {
        let mut limiter = limiter();
        let start = Instant::now();
        for offset in [0, 10, 20] {
            limiter.check(CLIENT, start + millis(offset));
        }

        let over = limiter.check(CLIENT, start + millis(30));
        let during = limiter.check(CLIENT, start + millis(130));

        assert_eq!(over, Decision::OverLimit);
        assert_eq!(
            during,
            Decision::DuringCooldown {
                since_start: millis(100)
            }
        );
    }

    #[test]
    fn cooldown_ends_with_full_budget() {
        let mut limiter = limiter();
        let start = Instant::now();
        for offset in [0, 10, 20, 30] {
            limiter.check(CLIENT, start + millis(offset));
        }

        let after = start + millis(530);
        for step in 0..3 {
            let decision = limiter.check(CLIENT, after + millis(step));
            assert_eq!(decision, Decision::Allow, "request {step} after cooldown");
        }
        assert_eq!(
            limiter.check(CLIENT, after + millis(3)),
            Decision::OverLimit
        );
    }

    #[test]
    fn window_slides() {
        let mut limiter = limiter();
        let start = Instant::now();
        for offset in [0, 400, 800] {
            limiter.check(CLIENT, start + millis(offset));
        }

        let expired_first = limiter.check(CLIENT, start + millis(1000));
        let still_full = limiter.check(CLIENT, start + millis(1100));

        assert_eq!(expired_first, Decision::Allow);
        assert_eq!(still_full, Decision::OverLimit);
    }

    #[test]
    fn clients_counted_separately() {
        let mut limiter = limiter();
        let start = Instant::now();
        for offset in [0, 10, 20, 30] {
            limiter.check(CLIENT, start + millis(offset));
        }

        assert_eq!(limiter.check(OTHER, start + millis(40)), Decision::Allow);
    }

    #[test]
    fn zero_limit_disables() {
        let mut limiter = RateLimiter::new(0, millis(1000), millis(500));
        let start = Instant::now();

        for step in 0..100 {
            assert_eq!(limiter.check(CLIENT, start + millis(step)), Decision::Allow);
        }
    }
}
