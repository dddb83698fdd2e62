//! One task per watched workflow: read its stream, reconnect, count changes.
//!
//! A stream that ends without a terminal snapshot (the server's limit of
//! events per connection, a proxy, a reset) is opened again at once if it
//! was healthy. A healthy stream reached the update limit, delivered several
//! events or stayed open for a while. After an error or a short stream, the watcher
//! backs off, and the backoff resets only after a healthy stream. So neither
//! a server that accepts and closes at once nor one that cuts every stream
//! after an event takes the whole request budget. Because each event is a
//! full snapshot and [`Tracked`] outlives connections, the repeated first
//! event of a new connection changes nothing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::board::Board;
use crate::change::{Change, Tracked};
use crate::client::{ApiClient, ApiError};
use crate::loglimit::LogLimiter;
use crate::metrics::{Metrics, ReconnectReason};
use crate::snapshot::Snapshot;
use crate::sse::{self, EventError};
use crate::status::Status;

/// Warnings about retries and bad events written per [`WARNING_PERIOD`],
/// across all watchers; the rest are counted in the next one written.
const WARNINGS_PER_PERIOD: u32 = 20;
const WARNING_PERIOD: Duration = Duration::from_secs(10);

/// A stream that delivered this many events, or stayed open this long, was
/// healthy: when it ends, the backoff starts again from its minimum.
const HEALTHY_EVENTS: u32 = 10;
const HEALTHY_DURATION: Duration = Duration::from_secs(10);

/// Distinct unknown status values logged; later ones are only counted.
const MAX_LOGGED_UNKNOWN_STATUSES: usize = 100;

/// Settings of the stream readers.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Events after which the server closes a stream.
    pub max_updates: u32,
    pub max_line_bytes: usize,
    pub idle_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// The end of watching one workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A terminal snapshot arrived.
    Finished(Status),
    /// The API does not know the workflow.
    NotFound,
    /// The watcher panicked; the panic message went to standard error.
    Failed,
}

/// The state every watcher shares.
pub struct Watcher {
    client: Arc<ApiClient>,
    metrics: Arc<Metrics>,
    board: Arc<Board>,
    config: WatchConfig,
    logged_unknown_statuses: Mutex<HashSet<String>>,
    warnings: LogLimiter,
}

/// The end of one connection.
enum StreamEnd {
    Terminal(Status),
    Closed {
        events: u32,
    },
    Failed {
        events: u32,
        error: String,
    },
    /// The rate limiter or the token gate decides when to try again.
    Held,
}

/// An error of the byte stream under the event parser.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("no data for {0:?}")]
    Idle(Duration),

    #[error("reading the stream failed: {}", crate::client::error_chain(.0))]
    Transport(#[source] reqwest::Error),
}

impl Watcher {
    pub fn new(
        client: Arc<ApiClient>,
        metrics: Arc<Metrics>,
        board: Arc<Board>,
        config: WatchConfig,
    ) -> Watcher {
        Watcher {
            client,
            metrics,
            board,
            config,
            logged_unknown_statuses: Mutex::new(HashSet::new()),
            warnings: LogLimiter::new(WARNINGS_PER_PERIOD, WARNING_PERIOD),
        }
    }

    /// Watches one workflow until it ends or the API does not know it.
    /// `seed` is the status the workflow list reported, if it was discovered.
    pub async fn watch(&self, workflow_id: &str, seed: Option<Status>) -> Outcome {
        let mut tracked = seed.map(|status| Tracked::from_status(status, Instant::now()));
        if let Some(state) = &tracked {
            self.board
                .set(workflow_id, state.status, state.status_since);
        }
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);

        loop {
            let opened = Instant::now();
            let end = match self.client.subscribe(workflow_id).await {
                Ok(response) => {
                    let body = with_idle_timeout(response.bytes_stream(), self.config.idle_timeout);
                    self.read(workflow_id, body, &mut tracked).await
                }
                Err(ApiError::NotFound) => {
                    tracing::warn!(
                        workflow_id,
                        "workflow not found (HTTP 404), no longer watching it"
                    );
                    return Outcome::NotFound;
                }
                Err(ApiError::Unauthorized | ApiError::RateLimited(_)) => StreamEnd::Held,
                Err(error) => StreamEnd::Failed {
                    events: 0,
                    error: error.to_string(),
                },
            };

            let (reason, delay) = match end {
                StreamEnd::Terminal(status) => return Outcome::Finished(status),
                StreamEnd::Held => (ReconnectReason::Error, Duration::ZERO),
                StreamEnd::Closed { events } => {
                    self.after_close(workflow_id, events, opened.elapsed(), &mut backoff)
                }
                StreamEnd::Failed { events, error } => {
                    if healthy(events, opened.elapsed()) {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    if let Some(left_out) = self.warnings.admit() {
                        tracing::warn!(
                            workflow_id,
                            %error,
                            retry_in_seconds = delay.as_secs_f64(),
                            left_out,
                            "workflow stream failed, retrying"
                        );
                    }
                    (ReconnectReason::Error, delay)
                }
            };

            self.metrics.count_reconnect(reason);
            tokio::time::sleep(delay).await;
        }
    }

    /// Chooses the reconnect reason and delay after a stream closed cleanly.
    /// A stream that reached the update limit or was healthy is reopened at
    /// once. A short one backs off, so a proxy cutting every stream after an
    /// event cannot take the whole request budget.
    fn after_close(
        &self,
        workflow_id: &str,
        events: u32,
        lived: Duration,
        backoff: &mut Backoff,
    ) -> (ReconnectReason, Duration) {
        if events >= self.config.max_updates {
            backoff.reset();
            tracing::debug!(
                workflow_id,
                events,
                "workflow stream reached the update limit, reconnecting"
            );
            return (ReconnectReason::UpdateLimit, Duration::ZERO);
        }

        let delay = if healthy(events, lived) {
            backoff.reset();
            Duration::ZERO
        } else {
            backoff.next_delay()
        };
        if let Some(left_out) = self.warnings.admit() {
            tracing::warn!(
                workflow_id,
                events,
                retry_in_seconds = delay.as_secs_f64(),
                left_out,
                "workflow stream closed before the update limit, reconnecting"
            );
        }
        (ReconnectReason::Disconnected, delay)
    }

    /// Reads one connection's events until it ends.
    async fn read<S>(&self, workflow_id: &str, body: S, tracked: &mut Option<Tracked>) -> StreamEnd
    where
        S: Stream<Item = Result<Bytes, BodyError>>,
    {
        let events = sse::events(body, self.config.max_line_bytes);
        futures_util::pin_mut!(events);
        let mut delivered = 0;

        while let Some(item) = events.next().await {
            let event = match item {
                Ok(event) => event,
                Err(error) => match self.stream_error(workflow_id, error, delivered) {
                    Some(end) => return end,
                    None => {
                        delivered += 1;
                        continue;
                    }
                },
            };
            delivered += 1;

            match Snapshot::decode(&event.data) {
                Ok(snapshot) => {
                    if let Some(status) = self.apply(workflow_id, tracked, &snapshot) {
                        return StreamEnd::Terminal(status);
                    }
                }
                Err(error) => {
                    self.metrics.count_invalid_event(error.reason());
                    if let Some(left_out) = self.warnings.admit() {
                        tracing::warn!(workflow_id, %error, left_out, "ignoring invalid event");
                    }
                }
            }
        }
        StreamEnd::Closed { events: delivered }
    }

    /// Counts a parser error; returns how the stream ended, or `None` when
    /// only one event was lost and reading goes on.
    fn stream_error(
        &self,
        workflow_id: &str,
        error: EventError<BodyError>,
        delivered: u32,
    ) -> Option<StreamEnd> {
        let failed = |error: String| StreamEnd::Failed {
            events: delivered,
            error,
        };

        match error {
            EventError::InvalidUtf8 => {
                self.metrics.count_invalid_event("invalid_utf8");
                if let Some(left_out) = self.warnings.admit() {
                    tracing::warn!(workflow_id, left_out, "ignoring event with invalid UTF-8");
                }
                None
            }
            EventError::LineTooLong { limit } => {
                self.metrics.count_invalid_event("line_too_long");
                Some(failed(format!(
                    "line longer than {limit} bytes, dropping the connection"
                )))
            }
            EventError::DataTooLong { limit } => {
                self.metrics.count_invalid_event("line_too_long");
                Some(failed(format!(
                    "event data longer than {limit} bytes, dropping the connection"
                )))
            }
            EventError::Truncated => {
                self.metrics.count_invalid_event("truncated");
                if let Some(left_out) = self.warnings.admit() {
                    tracing::warn!(workflow_id, left_out, "workflow stream ended inside a line");
                }
                Some(StreamEnd::Closed { events: delivered })
            }
            EventError::Transport(error) => Some(failed(error.to_string())),
        }
    }

    /// Applies one valid snapshot; returns its status when it is terminal.
    fn apply(
        &self,
        workflow_id: &str,
        tracked: &mut Option<Tracked>,
        snapshot: &Snapshot,
    ) -> Option<Status> {
        let now = Instant::now();
        self.metrics.count_event();
        if let Some(value) = &snapshot.unknown_status {
            self.note_unknown_status(workflow_id, value);
        }

        let first = tracked.is_none();
        let changes = match tracked {
            Some(state) => state.observe(snapshot, now),
            None => {
                let (state, changes) = Tracked::from_first(snapshot, now);
                *tracked = Some(state);
                changes
            }
        };
        let moved = log_changes(workflow_id, &changes);

        // The board changes before the counters, so a scrape that shows a
        // change counted also shows the workflow in its new status. Most
        // snapshots repeat the status and leave the board alone.
        let status = snapshot.status;
        if status.is_terminal() {
            self.board.remove(workflow_id);
        } else if let (true, Some(state)) = (first || moved, tracked) {
            self.board
                .set(workflow_id, state.status, state.status_since);
        }
        self.metrics.apply(workflow_id, &changes);

        status.is_terminal().then_some(status)
    }

    fn note_unknown_status(&self, workflow_id: &str, value: &str) {
        self.metrics.count_invalid_event("unknown_status");

        let mut logged = self
            .logged_unknown_statuses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if logged.len() < MAX_LOGGED_UNKNOWN_STATUSES && logged.insert(value.to_owned()) {
            tracing::warn!(
                workflow_id,
                status = value,
                "unknown workflow status, counted as \"other\""
            );
        }
    }
}

/// Checks whether a stream that ended early was still worth reopening at
/// once, because it delivered enough events or stayed open long enough.
fn healthy(events: u32, lived: Duration) -> bool {
    events > 0 && (events >= HEALTHY_EVENTS || lived >= HEALTHY_DURATION)
}

/// Logs the status changes; returns whether there was one.
fn log_changes(workflow_id: &str, changes: &[Change]) -> bool {
    let mut moved = false;
    for change in changes {
        if let Change::Transition { from, to } = change {
            tracing::debug!(workflow_id, %from, %to, "workflow status changed");
            moved = true;
        }
    }
    moved
}

/// Ends the body with [`BodyError::Idle`] when no chunk arrives for `idle`.
/// One timer is reset per chunk instead of a new timeout for each.
fn with_idle_timeout<S>(body: S, idle: Duration) -> impl Stream<Item = Result<Bytes, BodyError>>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
{
    let timer = Box::pin(tokio::time::sleep(idle));
    futures_util::stream::unfold(Some((body, timer)), move |state| async move {
        let (mut body, mut timer) = state?;
        timer.as_mut().reset(Instant::now() + idle);

        tokio::select! {
            chunk = body.next() => match chunk {
                None => None,
                Some(Ok(chunk)) => Some((Ok(chunk), Some((body, timer)))),
                Some(Err(error)) => Some((Err(BodyError::Transport(error.without_url())), None)),
            },
            _ = timer.as_mut() => Some((Err(BodyError::Idle(idle)), None)),
        }
    })
}
