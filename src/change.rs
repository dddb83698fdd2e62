//! The changes between two consecutive snapshots of one workflow.
//!
//! The stream repeats the full state every two seconds and again after every
//! reconnect, so the metrics must move on differences only. [`Tracked`] keeps
//! what the exporter last saw of one workflow; [`Tracked::observe`] compares
//! a new snapshot with it and returns the changes to apply. It is pure: time
//! is passed in, so the rules are tested as tables of snapshot sequences.

use std::time::Duration;

use tokio::time::Instant;

use crate::snapshot::{Cause, Snapshot};
use crate::status::Status;

/// The exporter's memory of one watched workflow.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub status: Status,
    /// When the exporter first saw the workflow in its current status.
    pub status_since: Instant,
    pub queue_position: Option<i64>,
    /// When the exporter first saw the workflow queued, if it has.
    first_queued_at: Option<Instant>,
    queue_wait_observed: bool,
}

/// One change for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The status differs from the previous snapshot's.
    Transition { from: Status, to: Status },
    /// The workflow entered or left the queue, or moved in it; `None` removes
    /// the workflow's queue-position series.
    QueuePosition(Option<i64>),
    /// Time from first seen queued to running, once per workflow.
    QueueWait(Duration),
    /// The workflow reached a terminal status after having been seen in a
    /// non-terminal one.
    Finished {
        status: Status,
        /// Server time from `started_at` to `completed_at`, when both are known.
        run_duration: Option<Duration>,
        cause: Option<Cause>,
        outputs: usize,
    },
}

impl Tracked {
    /// Starts tracking from a status alone, as the workflow list reports it.
    pub fn from_status(status: Status, now: Instant) -> Tracked {
        Tracked {
            status,
            status_since: now,
            queue_position: None,
            first_queued_at: (status == Status::Queued).then_some(now),
            queue_wait_observed: false,
        }
    }

    /// Starts tracking from the first snapshot of a stream. The first
    /// snapshot is not a change, so only its queue position is reported.
    pub fn from_first(snapshot: &Snapshot, now: Instant) -> (Tracked, Vec<Change>) {
        let mut tracked = Tracked::from_status(snapshot.status, now);
        let changes = tracked
            .update_queue_position(snapshot)
            .into_iter()
            .collect();
        (tracked, changes)
    }

    /// Compares a snapshot with the previous state and records it.
    pub fn observe(&mut self, snapshot: &Snapshot, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        let from = self.status;
        let to = snapshot.status;

        if from != to {
            changes.push(Change::Transition { from, to });
            self.status = to;
            self.status_since = now;
        }

        if to == Status::Queued && self.first_queued_at.is_none() {
            self.first_queued_at = Some(now);
        }
        if from != Status::Running && to == Status::Running {
            changes.extend(self.take_queue_wait(now));
        }
        changes.extend(self.update_queue_position(snapshot));

        if !from.is_terminal() && to.is_terminal() {
            changes.push(finished(snapshot));
        }
        changes
    }

    fn take_queue_wait(&mut self, now: Instant) -> Option<Change> {
        let queued_at = self.first_queued_at?;
        if self.queue_wait_observed {
            return None;
        }

        self.queue_wait_observed = true;
        Some(Change::QueueWait(now.saturating_duration_since(queued_at)))
    }

    fn update_queue_position(&mut self, snapshot: &Snapshot) -> Option<Change> {
        let position = match snapshot.status {
            Status::Queued => snapshot.queue_number,
            _ => None,
        };
        if position == self.queue_position {
            return None;
        }

        self.queue_position = position;
        Some(Change::QueuePosition(position))
    }
}

fn finished(snapshot: &Snapshot) -> Change {
    let run_duration = match (snapshot.started_at, snapshot.completed_at) {
        (Some(started), Some(completed)) => (completed - started).to_std().ok(),
        _ => None,
    };

    Change::Finished {
        status: snapshot.status,
        run_duration,
        cause: snapshot.cause.clone(),
        outputs: snapshot.outputs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn snap(status: Status) -> Snapshot {
        Snapshot {
            status,
            unknown_status: None,
            queue_number: None,
            outputs: 0,
            cause: None,
            started_at: None,
            completed_at: None,
        }
    }

    fn queued(position: i64) -> Snapshot {
        Snapshot {
            queue_number: Some(position),
            ..snap(Status::Queued)
        }
    }

    /// Feeds snapshots one second apart and collects every change.
    fn run(sequence: &[Snapshot]) -> Vec<Change> {
        let start = Instant::now();
        let (mut tracked, mut changes) = Tracked::from_first(&sequence[0], start);

        for (step, snapshot) in sequence.iter().enumerate().skip(1) {
            let now = start + Duration::from_secs(step as u64);
            changes.extend(tracked.observe(snapshot, now));
        }
        changes
    }

    fn transition(from: Status, to: Status) -> Change {
        Change::Transition { from, to }
    }

    fn finished_plain(status: Status) -> Change {
        Change::Finished {
            status,
            run_duration: None,
            cause: None,
            outputs: 0,
        }
    }

    #[test]
    fn repeated_snapshots_change_nothing() {
        let sequence = vec![snap(Status::Running); 5];

        assert_eq!(run(&sequence), vec![]);
    }

    #[test]
    fn first_terminal_snapshot_is_not_counted() {
        assert_eq!(run(&[snap(Status::Completed)]), vec![]);
    }

    #[test]
    fn changes_table() {
        use Status::*;
        let cases: Vec<(&str, Vec<Snapshot>, Vec<Change>)> = vec![
            (
                "forward path",
                vec![
                    snap(Accepted),
                    snap(Uploaded),
                    queued(2),
                    snap(Running),
                    snap(Completed),
                ],
                vec![
                    transition(Accepted, Uploaded),
                    transition(Uploaded, Queued),
                    Change::QueuePosition(Some(2)),
                    transition(Queued, Running),
                    Change::QueueWait(Duration::from_secs(1)),
                    Change::QueuePosition(None),
                    transition(Running, Completed),
                    finished_plain(Completed),
                ],
            ),
            (
                "queue moves without a transition",
                vec![queued(3), queued(3), queued(2), queued(1)],
                vec![
                    Change::QueuePosition(Some(3)),
                    Change::QueuePosition(Some(2)),
                    Change::QueuePosition(Some(1)),
                ],
            ),
            (
                "queue wait counts from first sighting, once",
                vec![
                    queued(2),
                    queued(1),
                    snap(Running),
                    queued(1),
                    snap(Running),
                ],
                vec![
                    Change::QueuePosition(Some(2)),
                    Change::QueuePosition(Some(1)),
                    transition(Queued, Running),
                    Change::QueueWait(Duration::from_secs(2)),
                    Change::QueuePosition(None),
                    transition(Running, Queued),
                    Change::QueuePosition(Some(1)),
                    transition(Queued, Running),
                    Change::QueuePosition(None),
                ],
            ),
            (
                "running first has no queue wait",
                vec![snap(Running), snap(Failed)],
                vec![transition(Running, Failed), finished_plain(Failed)],
            ),
            (
                "unknown status is a transition through other",
                vec![snap(Running), snap(Other), snap(Running)],
                vec![transition(Running, Other), transition(Other, Running)],
            ),
            (
                "invalid straight after accepted",
                vec![snap(Accepted), snap(Invalid)],
                vec![transition(Accepted, Invalid), finished_plain(Invalid)],
            ),
            (
                "skipped states give one transition",
                vec![queued(1), snap(Cancelled)],
                vec![
                    Change::QueuePosition(Some(1)),
                    transition(Queued, Cancelled),
                    Change::QueuePosition(None),
                    finished_plain(Cancelled),
                ],
            ),
        ];

        for (name, sequence, expected) in cases {
            assert_eq!(run(&sequence), expected, "case: {name}");
        }
    }

    #[test]
    fn finished_carries_duration_cause_and_outputs() {
        let started = Utc.with_ymd_and_hms(2024, 1, 15, 14, 30, 5).unwrap();
        let completed = Utc.with_ymd_and_hms(2024, 1, 15, 14, 31, 40).unwrap();
        let cause = Cause {
            node_type: Some("KSampler".into()),
            exception_type: None,
        };
        let failed = Snapshot {
            started_at: Some(started),
            completed_at: Some(completed),
            cause: Some(cause.clone()),
            outputs: 2,
            ..snap(Status::Failed)
        };

        let changes = run(&[snap(Status::Running), failed]);

        assert_eq!(
            changes[1],
            Change::Finished {
                status: Status::Failed,
                run_duration: Some(Duration::from_secs(95)),
                cause: Some(cause),
                outputs: 2,
            }
        );
    }

    #[test]
    fn negative_run_duration_is_dropped() {
        let later = Utc.with_ymd_and_hms(2024, 1, 15, 14, 30, 5).unwrap();
        let earlier = Utc.with_ymd_and_hms(2024, 1, 15, 14, 0, 0).unwrap();
        let completed = Snapshot {
            started_at: Some(later),
            completed_at: Some(earlier),
            ..snap(Status::Completed)
        };

        let changes = run(&[snap(Status::Running), completed]);

        assert_eq!(changes[1], finished_plain(Status::Completed));
    }

    #[test]
    fn status_from_list_seeds_queue_wait() {
        let start = Instant::now();
        let mut tracked = Tracked::from_status(Status::Queued, start);

        let changes = tracked.observe(&snap(Status::Running), start + Duration::from_secs(7));

        assert_eq!(changes[0], transition(Status::Queued, Status::Running));
        assert_eq!(changes[1], Change::QueueWait(Duration::from_secs(7)));
    }
}
