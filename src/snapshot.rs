//! Decoding of one stream event into a workflow snapshot.
//!
//! Every event is a complete snapshot of the workflow, never a delta. Only
//! `status` is required: the other fields are read leniently (a value of the
//! wrong type counts as absent) because a surprising `prompt` or timestamp
//! must not cost the status change it arrives with.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::status::Status;

/// The parts of a snapshot that the metrics use.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub status: Status,
    /// The status text when it is not a documented value.
    pub unknown_status: Option<String>,
    pub queue_number: Option<i64>,
    pub outputs: usize,
    pub cause: Option<Cause>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The failure cause of a failed workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub node_type: Option<String>,
    pub exception_type: Option<String>,
}

/// A reason an event could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event data is not a JSON object: {0}")]
    InvalidJson(String),

    #[error("event has no string field \"status\"")]
    MissingStatus,
}

impl DecodeError {
    /// Returns the `reason` label of `comfycontrol_sse_invalid_events_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::MissingStatus => "missing_field",
        }
    }
}

impl Snapshot {
    /// Decodes the `data` of one event.
    pub fn decode(data: &str) -> Result<Snapshot, DecodeError> {
        let value: Value = serde_json::from_str(data)
            .map_err(|error| DecodeError::InvalidJson(error.to_string()))?;
        let Value::Object(object) = value else {
            return Err(DecodeError::InvalidJson("not an object".to_owned()));
        };
        let raw_status = object
            .get("status")
            .and_then(Value::as_str)
            .ok_or(DecodeError::MissingStatus)?;

        let status = Status::parse(raw_status).unwrap_or(Status::Other);
        let unknown_status = (status == Status::Other).then(|| raw_status.to_owned());

        Ok(Snapshot {
            status,
            unknown_status,
            queue_number: object.get("queue_number").and_then(Value::as_i64),
            outputs: object
                .get("outputs")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            cause: object.get("cause").and_then(decode_cause),
            started_at: object.get("started_at").and_then(decode_timestamp),
            completed_at: object.get("completed_at").and_then(decode_timestamp),
        })
    }
}

fn decode_cause(value: &Value) -> Option<Cause> {
    let object = value.as_object()?;
    let text = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };

    Some(Cause {
        node_type: text("node_type"),
        exception_type: text("exception_type"),
    })
}

fn decode_timestamp(value: &Value) -> Option<DateTime<Utc>> {
    let text = value.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_the_documented_failed_example() {
        let data = r#"{"status":"failed","prompt":{"prompt_id":"abc123"},"queue_number":null,"outputs":[],"cause":{"node_type":"KSampler","exception_type":"torch.cuda.OutOfMemoryError","exception_message":"CUDA out of memory"},"started_at":"2024-01-15T14:30:05Z","completed_at":"2024-01-15T14:31:40Z"}"#;

        let snapshot = Snapshot::decode(data).expect("valid snapshot");

        assert_eq!(snapshot.status, Status::Failed);
        assert_eq!(snapshot.queue_number, None);
        let cause = snapshot.cause.expect("cause present");
        assert_eq!(cause.node_type.as_deref(), Some("KSampler"));
        assert_eq!(
            cause.exception_type.as_deref(),
            Some("torch.cuda.OutOfMemoryError")
        );
        let started = snapshot.started_at.expect("started_at");
        let completed = snapshot.completed_at.expect("completed_at");
        assert_eq!((completed - started).num_seconds(), 95);
    }

    #[test]
    fn decode_reads_queue_number_and_outputs() {
        let data = r#"{"status":"completed","queue_number":3,"outputs":[{"id":"a"},{"id":"b"}],"cause":null,"started_at":"2024-01-15T14:30:05.250Z","completed_at":null}"#;

        let snapshot = Snapshot::decode(data).expect("valid snapshot");

        assert_eq!(snapshot.queue_number, Some(3));
        assert_eq!(snapshot.outputs, 2);
        assert_eq!(snapshot.cause, None);
        assert!(snapshot.started_at.is_some());
        assert_eq!(snapshot.completed_at, None);
    }

    #[test]
    fn decode_keeps_unknown_status_as_other() {
        let snapshot = Snapshot::decode(r#"{"status":"paused"}"#).expect("valid snapshot");

        assert_eq!(snapshot.status, Status::Other);
        assert_eq!(snapshot.unknown_status.as_deref(), Some("paused"));
    }

    #[test]
    fn decode_ignores_fields_of_the_wrong_type() {
        let data =
            r#"{"status":"queued","queue_number":"3","outputs":{},"cause":"oops","started_at":17}"#;

        let snapshot = Snapshot::decode(data).expect("status alone is enough");

        assert_eq!(snapshot.status, Status::Queued);
        assert_eq!(snapshot.queue_number, None);
        assert_eq!(snapshot.outputs, 0);
        assert_eq!(snapshot.cause, None);
        assert_eq!(snapshot.started_at, None);
    }

    #[test]
    fn decode_rejects_bad_json_and_missing_status() {
        let cases = [
            ("{not json", "invalid_json"),
            ("[1,2]", "invalid_json"),
            ("", "invalid_json"),
            (r#"{"queue_number":1}"#, "missing_field"),
            (r#"{"status":null}"#, "missing_field"),
            (r#"{"status":3}"#, "missing_field"),
        ];

        for (data, reason) in cases {
            let error = Snapshot::decode(data).expect_err(data);
            assert_eq!(error.reason(), reason, "data {data:?}");
        }
    }
}
