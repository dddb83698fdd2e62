//! The current status of every watched workflow, for the gauges that
//! summarise them.
//!
//! Counts per status and the longest time in each status are computed when
//! Prometheus scrapes, from this table, so they can never drift from the set
//! of workflows actually watched.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::metrics::StatusSummary;
use crate::status::Status;

/// Status and time of entering it, per watched workflow id.
#[derive(Debug, Default)]
pub struct Board {
    entries: Mutex<HashMap<String, (Status, Instant)>>,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Status, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `workflow_id` has been in `status` since `since`.
    pub fn set(&self, workflow_id: &str, status: Status, since: Instant) {
        let mut entries = self.lock();
        match entries.get_mut(workflow_id) {
            Some(entry) => *entry = (status, since),
            None => {
                entries.insert(workflow_id.to_owned(), (status, since));
            }
        }
    }

    pub fn remove(&self, workflow_id: &str) {
        self.lock().remove(workflow_id);
    }

    /// Counts the workflows per status and finds the longest time in each.
    pub fn summary(&self, now: Instant) -> StatusSummary {
        let mut summary = StatusSummary::default();
        for (status, since) in self.lock().values() {
            summary.add(*status, now.saturating_duration_since(*since));
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn summary_counts_and_finds_the_oldest() {
        let board = Board::default();
        let start = Instant::now();
        board.set("a", Status::Queued, start);
        board.set("b", Status::Queued, start + Duration::from_secs(5));
        board.set("c", Status::Running, start + Duration::from_secs(8));
        board.set("d", Status::Other, start);

        let summary = board.summary(start + Duration::from_secs(10));

        assert_eq!(summary.counts, [0, 0, 2, 1]);
        assert_eq!(summary.oldest[2], Duration::from_secs(10));
        assert_eq!(summary.oldest[3], Duration::from_secs(2));
        assert_eq!(summary.other, 1);
    }

    #[test]
    fn removed_workflows_leave_the_summary() {
        let board = Board::default();
        let start = Instant::now();
        board.set("a", Status::Running, start);

        board.remove("a");

        assert_eq!(board.summary(start), StatusSummary::default());
    }
}
