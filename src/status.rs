//! Workflow statuses as the API names them.
//!
//! The API documents eight statuses. Anything else a stream sends is kept as
//! [`Status::Other`], so an unknown value is counted under the label `other`
//! instead of stopping the workflow's stream.

use std::fmt;

/// A workflow's status in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Accepted,
    Uploaded,
    Queued,
    Running,
    Completed,
    Cancelled,
    Invalid,
    Failed,
    /// A value the API documentation does not list.
    Other,
}

impl Status {
    /// Every status, in the order a workflow normally passes through them.
    pub const ALL: [Status; 9] = [
        Status::Accepted,
        Status::Uploaded,
        Status::Queued,
        Status::Running,
        Status::Completed,
        Status::Cancelled,
        Status::Invalid,
        Status::Failed,
        Status::Other,
    ];

    /// The documented statuses that end a workflow.
    pub const TERMINAL: [Status; 4] = [
        Status::Completed,
        Status::Cancelled,
        Status::Invalid,
        Status::Failed,
    ];

    /// The documented statuses of a workflow that has not ended.
    pub const ACTIVE: [Status; 4] = [
        Status::Accepted,
        Status::Uploaded,
        Status::Queued,
        Status::Running,
    ];

    /// Parses an API status value; `None` for a value the API does not document.
    pub fn parse(value: &str) -> Option<Status> {
        let status = match value {
            "accepted" => Status::Accepted,
            "uploaded" => Status::Uploaded,
            "queued" => Status::Queued,
            "running" => Status::Running,
            "completed" => Status::Completed,
            "cancelled" => Status::Cancelled,
            "invalid" => Status::Invalid,
            "failed" => Status::Failed,
            _ => return None,
        };
        Some(status)
    }

    /// Returns the status as the API spells it and the metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Uploaded => "uploaded",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::Invalid => "invalid",
            Status::Failed => "failed",
            Status::Other => "other",
        }
    }

    /// Checks whether the workflow has ended, so its stream sends nothing new.
    pub fn is_terminal(self) -> bool {
        Status::TERMINAL.contains(&self)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_documented_statuses() {
        for status in Status::ALL.into_iter().filter(|s| *s != Status::Other) {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn parse_rejects_unknown_and_other() {
        assert_eq!(Status::parse("paused"), None);
        assert_eq!(Status::parse("other"), None);
        assert_eq!(Status::parse("Completed"), None);
    }

    #[test]
    fn terminal_statuses_are_the_four_endings() {
        let terminal: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();

        assert_eq!(terminal, Status::TERMINAL);
        assert!(!Status::Other.is_terminal());
    }
}
