//! The Server-Sent Events body of `GET /v1/workflow/{id}/subscribe`.
//!
//! The first event goes out at once and the next ones every snapshot
//! interval, measured from the connection's start so that slow writes do not
//! add drift. Each event is `data: {json}\n\n` with a complete snapshot. The
//! stream ends after a terminal snapshot or after the maximum number of
//! events, and injected faults can break it earlier.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use hyper::body::Frame;

use super::faults::ConnectionFaults;
use super::json;
use super::lock;
use super::stats::SimulatorStats;
use super::store::WorkflowRecord;

/// The error that makes hyper close a connection without ending the chunked
/// body, which the client sees as an abrupt disconnect.
#[derive(Debug, thiserror::Error)]
#[error("subscribe stream aborted by an injected fault")]
pub struct StreamAborted;

/// The settings and counters that one stream needs.
pub struct StreamSettings {
    pub interval: Duration,
    pub max_updates: u32,
    pub stats: Arc<Mutex<SimulatorStats>>,
}

enum Pending {
    Data(Bytes),
    /// Returns `Pending` once, so hyper flushes what it has buffered.
    Flush,
    Abort,
}

struct EventStream {
    record: Arc<WorkflowRecord>,
    settings: StreamSettings,
    faults: ConnectionFaults,
    opened: Instant,
    sent: u32,
    terminal_sent: bool,
    queue: VecDeque<Pending>,
    done: bool,
}

/// Creates the event stream of one subscribe connection to `record`.
pub fn event_stream(
    record: Arc<WorkflowRecord>,
    settings: StreamSettings,
    faults: ConnectionFaults,
) -> impl Stream<Item = Result<Frame<Bytes>, StreamAborted>> + Send + 'static {
    let stream = EventStream {
        record,
        settings,
        faults,
        opened: Instant::now(),
        sent: 0,
        terminal_sent: false,
        queue: VecDeque::new(),
        done: false,
    };

    futures_util::stream::unfold(stream, EventStream::next_frame)
}

impl EventStream {
    async fn next_frame(mut self) -> Option<(Result<Frame<Bytes>, StreamAborted>, Self)> {
        loop {
            match self.queue.pop_front() {
                Some(Pending::Data(bytes)) => return Some((Ok(Frame::data(bytes)), self)),
                Some(Pending::Flush) => tokio::task::yield_now().await,
                Some(Pending::Abort) => {
                    self.queue.clear();
                    self.done = true;
                    return Some((Err(StreamAborted), self));
                }
                None if self.done => return None,
                None => self.advance().await,
            }
        }
    }

    /// Queues what follows the events sent so far: raw lines, then a fault,
    /// the end of the stream, or the next event once it is due.
    async fn advance(&mut self) {
        let raw_lines: Vec<Bytes> = self
            .faults
            .raw_lines_after(self.sent)
            .map(Bytes::copy_from_slice)
            .collect();
        self.queue.extend(raw_lines.into_iter().map(Pending::Data));

        if self.faults.drop_after == Some(self.sent) {
            tracing::debug!(workflow_id = %self.record.workflow.id, events = self.sent, "injected drop of subscribe stream");
            self.queue.extend([Pending::Flush, Pending::Abort]);
            return;
        }

        if self.terminal_sent || self.sent >= self.settings.max_updates {
            self.done = true;
            return;
        }

        self.wait_until_due().await;
        self.queue_event();
    }

    async fn wait_until_due(&self) {
        let offset = self.settings.interval.saturating_mul(self.sent);
        if let Some(due) = self.opened.checked_add(offset) {
            tokio::time::sleep_until(due.into()).await;
        }
    }

    fn queue_event(&mut self) {
        let state = self.record.state(Instant::now(), self.settings.interval);
        let snapshot = json::snapshot(&self.record, &state);
        let event = match serde_json::to_string(&snapshot) {
            Ok(data) => Bytes::from(format!("data: {data}\n\n")),
            Err(error) => {
                tracing::error!(%error, workflow_id = %self.record.workflow.id, "failed to encode snapshot");
                self.queue.push_back(Pending::Abort);
                return;
            }
        };

        if self.faults.drop_mid_event == Some(self.sent) {
            tracing::debug!(workflow_id = %self.record.workflow.id, events = self.sent, "injected drop in the middle of an event");
            let half = event.slice(..event.len() / 2);
            self.queue
                .extend([Pending::Data(half), Pending::Flush, Pending::Abort]);
            return;
        }

        self.queue.push_back(Pending::Data(event));
        self.sent += 1;
        self.terminal_sent = state.status.is_terminal();
        lock(&self.settings.stats).events_sent += 1;
    }
}
