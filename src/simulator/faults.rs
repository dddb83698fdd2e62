//! Injected faults: broken subscribe streams and error responses, so that
//! clients can be tested against the failures a real network and API show.

use std::collections::HashMap;

use super::Endpoint;

/// A fault injected into one subscribe connection of a scripted workflow.
///
/// `connection` counts the subscribe requests to that workflow that passed
/// rate limiting, authentication and injected errors, starting at 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamFault {
    /// Closes the TCP connection abruptly after `events` events, without
    /// the final chunk of the chunked response body.
    DropAfter { connection: u32, events: u32 },
    /// Like `DropAfter`, but first writes the first half of the next
    /// event's bytes.
    DropMidEvent { connection: u32, events: u32 },
    /// Writes `bytes` verbatim after `after_events` events. The bytes must
    /// contain their own line endings. They do not count as an event.
    RawLine {
        connection: u32,
        after_events: u32,
        bytes: Vec<u8>,
    },
    /// Responds to the connection with this HTTP status and a JSON error
    /// body instead of a stream.
    Status { connection: u32, code: u16 },
}

impl StreamFault {
    fn connection(&self) -> u32 {
        match self {
            StreamFault::DropAfter { connection, .. }
            | StreamFault::DropMidEvent { connection, .. }
            | StreamFault::RawLine { connection, .. }
            | StreamFault::Status { connection, .. } => *connection,
        }
    }
}

/// The faults that apply to one subscribe connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionFaults {
    /// HTTP status that replaces the stream.
    pub status: Option<u16>,
    /// Number of events after which the connection is dropped.
    pub drop_after: Option<u32>,
    /// Number of events after which half an event is written and the
    /// connection is dropped.
    pub drop_mid_event: Option<u32>,
    /// Raw bytes to write, each after the given number of events.
    pub raw_lines: Vec<(u32, Vec<u8>)>,
}

impl ConnectionFaults {
    /// Collects the faults of `faults` that target connection number
    /// `connection`. When several faults of one kind match, the first wins,
    /// except raw lines, which are all written in order.
    pub fn select(faults: &[StreamFault], connection: u32) -> Self {
        let mut selected = ConnectionFaults::default();

        for fault in faults
            .iter()
            .filter(|fault| fault.connection() == connection)
        {
            match fault {
                StreamFault::DropAfter { events, .. } => {
                    selected.drop_after.get_or_insert(*events);
                }
                StreamFault::DropMidEvent { events, .. } => {
                    selected.drop_mid_event.get_or_insert(*events);
                }
                StreamFault::RawLine {
                    after_events,
                    bytes,
                    ..
                } => selected.raw_lines.push((*after_events, bytes.clone())),
                StreamFault::Status { code, .. } => {
                    selected.status.get_or_insert(*code);
                }
            }
        }

        selected
    }

    /// Returns the raw byte strings to write once `events` events were sent.
    pub fn raw_lines_after(&self, events: u32) -> impl Iterator<Item = &[u8]> {
        self.raw_lines
            .iter()
            .filter(move |(after, _)| *after == events)
            .map(|(_, bytes)| bytes.as_slice())
    }
}

/// Error statuses queued per endpoint by `SimulatorHandle::fail_next`.
#[derive(Debug, Default)]
pub struct FailNext {
    pending: HashMap<Endpoint, (u32, u16)>,
}

impl FailNext {
    /// Makes the next `count` requests to `endpoint` fail with `status`,
    /// replacing any earlier setting for that endpoint.
    pub fn set(&mut self, endpoint: Endpoint, count: u32, status: u16) {
        if count == 0 {
            self.pending.remove(&endpoint);
        } else {
            self.pending.insert(endpoint, (count, status));
        }
    }

    /// Consumes one queued failure for `endpoint` and returns its status.
    pub fn take(&mut self, endpoint: Endpoint) -> Option<u16> {
        let (remaining, status) = self.pending.get_mut(&endpoint)?;
        let status = *status;

        *remaining -= 1;
        if *remaining == 0 {
            self.pending.remove(&endpoint);
        }

        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_filters_by_connection() {
        let faults = vec![
            StreamFault::DropAfter {
                connection: 1,
                events: 3,
            },
            StreamFault::Status {
                connection: 2,
                code: 503,
            },
        ];

        let first = ConnectionFaults::select(&faults, 1);
        let second = ConnectionFaults::select(&faults, 2);
        let third = ConnectionFaults::select(&faults, 3);

        assert_eq!(first.drop_after, Some(3));
        assert_eq!(first.status, None);
        assert_eq!(second.status, Some(503));
        assert_eq!(second.drop_after, None);
        assert_eq!(third, ConnectionFaults::default());
    }

    #[test]
    fn raw_lines_kept_in_order() {
        let faults = vec![
            StreamFault::RawLine {
                connection: 1,
                after_events: 2,
                bytes: b": ping\n".to_vec(),
            },
            StreamFault::RawLine {
                connection: 1,
                after_events: 2,
                bytes: b"retry: 10\n".to_vec(),
            },
        ];

        let selected = ConnectionFaults::select(&faults, 1);
        let lines: Vec<&[u8]> = selected.raw_lines_after(2).collect();

        assert_eq!(lines, vec![&b": ping\n"[..], &b"retry: 10\n"[..]]);
        assert_eq!(selected.raw_lines_after(1).count(), 0);
    }

    #[test]
    fn fail_next_counts_down() {
        let mut fail_next = FailNext::default();
        fail_next.set(Endpoint::Get, 2, 503);

        assert_eq!(fail_next.take(Endpoint::List), None);
        assert_eq!(fail_next.take(Endpoint::Get), Some(503));
        assert_eq!(fail_next.take(Endpoint::Get), Some(503));
        assert_eq!(fail_next.take(Endpoint::Get), None);
    }

    #[test]
    fn fail_next_zero_clears() {
        let mut fail_next = FailNext::default();
        fail_next.set(Endpoint::List, 5, 500);
        fail_next.set(Endpoint::List, 0, 500);

        assert_eq!(fail_next.take(Endpoint::List), None);
    }
}
