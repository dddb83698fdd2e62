//! Decoding of one stream event into a workflow snapshot.
//!
//! Every event is a complete snapshot of the workflow, never a delta. Only
//! `status` is required. The other fields are read leniently, so a value of
//! the wrong type counts as absent, because a surprising `prompt` or
//! timestamp must not cost the status change it arrives with.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::status::Status;

/// The parts of a snapshot that the metrics use.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub status: Status,
    /// The status text when it is not a documented value.
    pub unknown_status: Option<String>,
    pub queue_number: Option<i64>,
    pub outputs: usize,
    /// Read only from terminal snapshots, the only ones whose cause counts.
    pub cause: Option<Cause>,
    /// Read only from terminal snapshots, for the run duration.
    pub started_at: Option<DateTime<Utc>>,
    /// Read only from terminal snapshots, for the run duration.
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

/// The top-level fields, each kept as unparsed JSON text, so a snapshot
/// costs one scan and the fields are decoded only when they are used.
#[derive(Deserialize)]
struct RawSnapshot<'a> {
    #[serde(borrow, default)]
    status: Option<&'a RawValue>,
    #[serde(borrow, default)]
    queue_number: Option<&'a RawValue>,
    #[serde(borrow, default)]
    outputs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cause: Option<&'a RawValue>,
    #[serde(borrow, default)]
    started_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    completed_at: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawCause<'a> {
    #[serde(borrow, default)]
    node_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    exception_type: Option<&'a RawValue>,
}

impl Snapshot {
    /// Decodes the `data` of one event.
    pub fn decode(data: &str) -> Result<Snapshot, DecodeError> {
        // Derived struct decoding also accepts a JSON array of the fields.
        if !data.trim_start().starts_with('{') {
            return Err(DecodeError::InvalidJson("not an object".to_owned()));
        }
        let raw: RawSnapshot<'_> = serde_json::from_str(data)
            .map_err(|error| DecodeError::InvalidJson(error.to_string()))?;
        let raw_status = raw
            .status
            .and_then(|value| text(Some(value)))
            .ok_or(DecodeError::MissingStatus)?;

        let status = Status::parse(&raw_status).unwrap_or(Status::Other);
        let unknown_status = (status == Status::Other).then(|| raw_status.into_owned());
        let terminal = status.is_terminal();

        Ok(Snapshot {
            status,
            unknown_status,
            queue_number: parse::<i64>(raw.queue_number),
            outputs: parse::<Vec<IgnoredAny>>(raw.outputs).map_or(0, |outputs| outputs.len()),
            cause: if terminal {
                decode_cause(raw.cause)
            } else {
                None
            },
            started_at: if terminal {
                timestamp(raw.started_at)
            } else {
                None
            },
            completed_at: if terminal {
                timestamp(raw.completed_at)
            } else {
                None
            },
        })
    }
}

/// Parses a field as `T`; a value of another type counts as absent.
fn parse<'a, T: Deserialize<'a>>(value: Option<&'a RawValue>) -> Option<T> {
    serde_json::from_str(value?.get()).ok()
}

fn text(value: Option<&RawValue>) -> Option<Cow<'_, str>> {
    parse::<Cow<'_, str>>(value)
}

fn decode_cause(value: Option<&RawValue>) -> Option<Cause> {
    let cause: RawCause<'_> = parse(value)?;
    let field = |value| {
        text(value)
            .filter(|text| !text.is_empty())
            .map(Cow::into_owned)
    };

    Some(Cause {
        node_type: field(cause.node_type),
        exception_type: field(cause.exception_type),
    })
}

fn timestamp(value: Option<&RawValue>) -> Option<DateTime<Utc>> {
    let text = text(value)?;
    DateTime::parse_from_rfc3339(&text)
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
