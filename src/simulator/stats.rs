//! Counters of what the simulator received and sent, so that tests can check
//! how a client behaved: how often it called, reconnected and backed off.

use std::time::Duration;

use super::Endpoint;

/// Request counts per endpoint. Requests to unknown paths count in none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    pub list: u64,
    pub get: u64,
    pub subscribe: u64,
}

impl EndpointCounts {
    /// Returns the count of `endpoint`.
    pub fn count(&self, endpoint: Endpoint) -> u64 {
        match endpoint {
            Endpoint::List => self.list,
            Endpoint::Get => self.get,
            Endpoint::Subscribe => self.subscribe,
        }
    }

    fn increment(&mut self, endpoint: Endpoint) {
        let counter = match endpoint {
            Endpoint::List => &mut self.list,
            Endpoint::Get => &mut self.get,
            Endpoint::Subscribe => &mut self.subscribe,
        };
        *counter += 1;
    }
}

/// A copy of the simulator's counters, taken by `SimulatorHandle::stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimulatorStats {
    /// All requests received, including rejected ones.
    pub requests: u64,
    /// Requests per endpoint, including rejected ones, whatever their method.
    pub by_endpoint: EndpointCounts,
    /// Subscribe requests that received an event stream.
    pub subscribe_connections: u64,
    /// Requests that exceeded the rate limit and started a cooldown.
    pub over_limit: u64,
    /// For each request received during a cooldown, the time since that
    /// cooldown started, in arrival order. Only the first 100 000 are kept,
    /// which bounds memory when a client keeps retrying for hours.
    pub during_cooldown: Vec<Duration>,
    /// Events handed to subscribe connections. Raw lines and partial events
    /// written by faults do not count.
    pub events_sent: u64,
}

/// Maximum number of entries of `SimulatorStats::during_cooldown`.
const MAX_DURING_COOLDOWN: usize = 100_000;

impl SimulatorStats {
    /// Records a request received `since_start` after a cooldown started.
    pub(super) fn record_during_cooldown(&mut self, since_start: Duration) {
        if self.during_cooldown.len() < MAX_DURING_COOLDOWN {
            self.during_cooldown.push(since_start);
        }
    }

    /// Counts a received request, with its endpoint if the path names one.
    pub(super) fn record_request(&mut self, endpoint: Option<Endpoint>) {
        self.requests += 1;
        if let Some(endpoint) = endpoint {
            self.by_endpoint.increment(endpoint);
        }
    }
}
