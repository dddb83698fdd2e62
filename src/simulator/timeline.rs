//! Workflow timelines: the status of a workflow as a pure function of the
//! time elapsed since it started.
//!
//! Every request and every subscribe connection computes the state afresh
//! from the same timeline, so all clients see one consistent history, and a
//! reconnecting client gets the current state in its first event.

use std::fmt;
use std::time::Duration;

/// A workflow status as the ComfyControl API spells it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Accepted,
    Uploaded,
    Queued,
    Running,
    Completed,
    Cancelled,
    Invalid,
    Failed,
    /// A status string outside the documented eight, sent verbatim so that
    /// clients can be tested against statuses added to the API later.
    Unknown(String),
}

impl Status {
    /// Returns the lowercase name that the API sends.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Accepted => "accepted",
            Status::Uploaded => "uploaded",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::Invalid => "invalid",
            Status::Failed => "failed",
            Status::Unknown(name) => name,
        }
    }

    /// Returns whether the workflow never changes again. The simulator
    /// closes a subscribe stream after a snapshot with such a status.
    ///
    /// The API documentation names completed, failed and cancelled as the
    /// statuses that close the stream and leaves `invalid` open. The
    /// simulator treats `invalid` as terminal too, because an invalid
    /// workflow never changes again.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Cancelled | Status::Invalid | Status::Failed
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One stretch of a workflow's timeline with a fixed status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    pub status: Status,
    pub duration: Duration,
    /// Queue position at the start of a `queued` phase. It falls by one per
    /// snapshot interval until it reaches 1. Ignored for other statuses,
    /// which always report no queue position.
    pub queue_number: Option<u32>,
}

impl Phase {
    /// Creates a phase without a queue position.
    pub fn new(status: Status, duration: Duration) -> Self {
        Phase {
            status,
            duration,
            queue_number: None,
        }
    }

    /// Creates a `queued` phase that starts at queue position `start`.
    pub fn queued(duration: Duration, start: u32) -> Self {
        Phase {
            status: Status::Queued,
            duration,
            queue_number: Some(start),
        }
    }
}

/// The outcome that follows a workflow's last phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Completed with this many outputs.
    Completed {
        outputs: u32,
    },
    /// Failed with a `cause` object whose fields are these values.
    Failed {
        node_type: Option<String>,
        exception_type: Option<String>,
        message: String,
    },
    /// Failed with `cause: null`.
    FailedWithoutCause,
    Cancelled,
    Invalid,
    /// The workflow stays in its last phase forever.
    Never,
}

impl End {
    /// Returns the terminal status of this outcome, or `None` for `Never`.
    pub fn status(&self) -> Option<Status> {
        match self {
            End::Completed { .. } => Some(Status::Completed),
            End::Failed { .. } | End::FailedWithoutCause => Some(Status::Failed),
            End::Cancelled => Some(Status::Cancelled),
            End::Invalid => Some(Status::Invalid),
            End::Never => None,
        }
    }
}

/// The state of a workflow at one moment, with times as offsets from the
/// workflow's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineState {
    pub status: Status,
    /// Queue position, present only while the status is `queued`.
    ///
    /// NOTE: The API documentation describes `queue_number` as null when not
    /// queued, but its example shows a running snapshot with
    /// `queue_number: 1`. The simulator follows the description.
    pub queue_number: Option<u32>,
    /// Start of the first `running` phase reached so far.
    pub started: Option<Duration>,
    /// Moment the workflow became terminal.
    pub completed: Option<Duration>,
    /// Start of the current status, which the API reports as `updated_at`.
    pub updated: Duration,
    /// Whether the workflow has passed all its phases and reached its `End`.
    /// Outputs and causes are reported only then.
    pub ended: bool,
}

/// Computes the state of a workflow with these phases and outcome, `elapsed`
/// after its start. `interval` is the snapshot interval that paces the queue
/// position countdown.
///
/// A terminal status inside `phases` is reported like any other phase, with
/// `completed` set but without outputs or cause, which only `end` supplies.
pub fn state_at(
    phases: &[Phase],
    end: &End,
    elapsed: Duration,
    interval: Duration,
) -> TimelineState {
    let mut phase_start = Duration::ZERO;
    let mut started = None;

    for phase in phases {
        if phase.status == Status::Running && started.is_none() {
            started = Some(phase_start);
        }

        let phase_end = phase_start.saturating_add(phase.duration);
        if elapsed < phase_end {
            return phase_state(phase, phase_start, started, elapsed, interval);
        }

        phase_start = phase_end;
    }

    end_state(phases, end, phase_start, started, elapsed, interval)
}

fn phase_state(
    phase: &Phase,
    phase_start: Duration,
    started: Option<Duration>,
    elapsed: Duration,
    interval: Duration,
) -> TimelineState {
    let queue_number = match (&phase.status, phase.queue_number) {
        (Status::Queued, Some(start)) => {
            Some(queue_position(start, elapsed - phase_start, interval))
        }
        _ => None,
    };

    TimelineState {
        status: phase.status.clone(),
        queue_number,
        started,
        completed: phase.status.is_terminal().then_some(phase_start),
        updated: phase_start,
        ended: false,
    }
}

fn end_state(
    phases: &[Phase],
    end: &End,
    end_start: Duration,
    started: Option<Duration>,
    elapsed: Duration,
    interval: Duration,
) -> TimelineState {
    match (end.status(), phases.last()) {
        (Some(status), _) => TimelineState {
            status,
            queue_number: None,
            started,
            completed: Some(end_start),
            updated: end_start,
            ended: true,
        },

        // `End::Never` keeps the last phase, which started its length before the end.
        (None, Some(last)) => {
            let last_start = end_start - last.duration;
            phase_state(last, last_start, started, elapsed, interval)
        }

        (None, None) => TimelineState {
            status: Status::Accepted,
            queue_number: None,
            started: None,
            completed: None,
            updated: Duration::ZERO,
            ended: false,
        },
    }
}

/// Returns the queue position `in_queue` after entering the queue at
/// position `start`. It falls by one per full interval and stops at 1.
fn queue_position(start: u32, in_queue: Duration, interval: Duration) -> u32 {
    if interval.is_zero() {
        return 1;
    }

    let steps = in_queue.as_nanos() / interval.as_nanos();
    let steps = u32::try_from(steps).unwrap_or(u32::MAX);
    start.saturating_sub(steps).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(2);

    fn secs(value: u64) -> Duration {
        Duration::from_secs(value)
    }

    fn lifecycle() -> Vec<Phase> {
        vec![
            Phase::new(Status::Accepted, secs(2)),
            Phase::new(Status::Uploaded, secs(2)),
            Phase::queued(secs(10), 4),
            Phase::new(Status::Running, secs(20)),
        ]
    }

    fn completed() -> End {
        End::Completed { outputs: 2 }
    }

    #[test]
    fn status_follows_phases_in_order() {
        let phases = lifecycle();
        let cases = [
            (0, Status::Accepted),
            (1, Status::Accepted),
            (2, Status::Uploaded),
            (4, Status::Queued),
            (13, Status::Queued),
            (14, Status::Running),
            (33, Status::Running),
            (34, Status::Completed),
            (1000, Status::Completed),
        ];

        for (offset, expected) in cases {
            let state = state_at(&phases, &completed(), secs(offset), INTERVAL);
            assert_eq!(state.status, expected, "status at {offset} s");
        }
    }

    #[test]
    fn queue_number_counts_down_to_one() {
        let phases = lifecycle();
        let cases = [(4, 4), (5, 4), (6, 3), (8, 2), (10, 1), (13, 1)];

        for (offset, expected) in cases {
            let state = state_at(&phases, &completed(), secs(offset), INTERVAL);
            assert_eq!(state.queue_number, Some(expected), "queue at {offset} s");
        }
    }

    #[test]
    fn queue_number_absent_outside_queue() {
        let phases = lifecycle();

        for offset in [0, 2, 14, 40] {
            let state = state_at(&phases, &completed(), secs(offset), INTERVAL);
            assert_eq!(state.queue_number, None, "queue at {offset} s");
        }
    }

    #[test]
    fn started_set_once_running() {
        let phases = lifecycle();

        let queued = state_at(&phases, &completed(), secs(13), INTERVAL);
        let running = state_at(&phases, &completed(), secs(14), INTERVAL);
        let done = state_at(&phases, &completed(), secs(40), INTERVAL);

        assert_eq!(queued.started, None);
        assert_eq!(running.started, Some(secs(14)));
        assert_eq!(done.started, Some(secs(14)));
    }

    #[test]
    fn completed_set_once_terminal() {
        let phases = lifecycle();

        let running = state_at(&phases, &completed(), secs(33), INTERVAL);
        let done = state_at(&phases, &completed(), secs(40), INTERVAL);

        assert_eq!(running.completed, None);
        assert!(!running.ended);
        assert_eq!(done.completed, Some(secs(34)));
        assert_eq!(done.updated, secs(34));
        assert!(done.ended);
    }

    #[test]
    fn updated_is_current_phase_start() {
        let phases = lifecycle();

        let state = state_at(&phases, &completed(), secs(7), INTERVAL);

        assert_eq!(state.updated, secs(4));
    }

    #[test]
    fn never_end_holds_last_phase() {
        let phases = lifecycle();

        let state = state_at(&phases, &End::Never, secs(500), INTERVAL);

        assert_eq!(state.status, Status::Running);
        assert_eq!(state.updated, secs(14));
        assert_eq!(state.completed, None);
        assert!(!state.ended);
    }

    #[test]
    fn never_end_keeps_queue_countdown() {
        let phases = vec![Phase::queued(secs(4), 5)];

        let state = state_at(&phases, &End::Never, secs(7), INTERVAL);

        assert_eq!(state.status, Status::Queued);
        assert_eq!(state.queue_number, Some(2));
    }

    #[test]
    fn invalid_right_after_accepted() {
        let phases = vec![Phase::new(Status::Accepted, secs(2))];

        let state = state_at(&phases, &End::Invalid, secs(2), INTERVAL);

        assert_eq!(state.status, Status::Invalid);
        assert_eq!(state.started, None);
        assert_eq!(state.completed, Some(secs(2)));
    }

    #[test]
    fn status_may_go_back() {
        let phases = vec![
            Phase::new(Status::Running, secs(4)),
            Phase::queued(secs(4), 2),
            Phase::new(Status::Running, secs(4)),
        ];

        let requeued = state_at(&phases, &End::Cancelled, secs(5), INTERVAL);
        let rerun = state_at(&phases, &End::Cancelled, secs(9), INTERVAL);

        assert_eq!(requeued.status, Status::Queued);
        assert_eq!(requeued.started, Some(Duration::ZERO));
        assert_eq!(rerun.status, Status::Running);
        assert_eq!(rerun.started, Some(Duration::ZERO));
    }

    #[test]
    fn empty_phases_end_at_once() {
        let state = state_at(&[], &End::Cancelled, Duration::ZERO, INTERVAL);

        assert_eq!(state.status, Status::Cancelled);
        assert_eq!(state.completed, Some(Duration::ZERO));
    }

    #[test]
    fn unknown_status_not_terminal() {
        let status = Status::Unknown("paused".to_owned());

        assert_eq!(status.as_str(), "paused");
        assert_eq!(status.to_string(), "paused");
        assert!(!status.is_terminal());
    }
}
