//! The exporter's metric families, registered in one registry it owns.
//!
//! Every label value that is known in advance (statuses, endpoints, status
//! codes, reasons) is created at start, so each series exists at 0 and
//! `rate()` and alerts work before the first event. Label values that come
//! from the server (failure node and exception types) are capped, because an
//! unbounded label set would grow Prometheus's memory without limit.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::change::Change;
use crate::snapshot::Cause;
use crate::status::Status;

/// Label value for a failure cause field the server left out.
const UNKNOWN: &str = "unknown";

/// Label value for failure causes past the cap, and for unexpected statuses.
const OTHER: &str = "other";

/// Maximum length of a label value taken from the server, in bytes.
const MAX_LABEL_BYTES: usize = 128;

/// API endpoints, as the `endpoint` label names them.
pub const ENDPOINTS: [&str; 3] = ["list", "get", "subscribe"];

/// Status codes the API documents, plus `error` for requests with no response.
const KNOWN_CODES: [&str; 9] = [
    "200", "400", "401", "403", "404", "429", "500", "503", "error",
];

/// The reason a stream was opened again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectReason {
    /// The server closed the stream after its maximum number of events.
    UpdateLimit,
    /// The stream ended early without an error.
    Disconnected,
    /// The request or the stream failed.
    Error,
}

impl ReconnectReason {
    const ALL: [ReconnectReason; 3] = [
        ReconnectReason::UpdateLimit,
        ReconnectReason::Disconnected,
        ReconnectReason::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ReconnectReason::UpdateLimit => "update_limit",
            ReconnectReason::Disconnected => "disconnected",
            ReconnectReason::Error => "error",
        }
    }
}

/// Reasons of `comfycontrol_sse_invalid_events_total`.
pub const INVALID_EVENT_REASONS: [&str; 6] = [
    "invalid_json",
    "missing_field",
    "unknown_status",
    "line_too_long",
    "invalid_utf8",
    "truncated",
];

/// Settings of the metric families.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub queue_wait_buckets: Vec<f64>,
    pub run_duration_buckets: Vec<f64>,
    pub max_failure_causes: usize,
}

/// All metric families of the exporter.
pub struct Metrics {
    registry: Registry,
    transitions: IntCounterVec,
    finished: IntCounterVec,
    failures: IntCounterVec,
    failure_causes: Mutex<HashSet<(String, String)>>,
    max_failure_causes: usize,
    workflows: IntGaugeVec,
    queue_position: IntGaugeVec,
    queue_wait: Histogram,
    run_duration: HistogramVec,
    outputs: IntCounter,
    up: IntGauge,
    api_requests: IntCounterVec,
    api_cooldowns: IntCounter,
    reconnects: IntCounterVec,
    sse_events: IntCounter,
    invalid_events: IntCounterVec,
    tracked: IntGauge,
    waiting: IntGauge,
    oldest_age: GaugeVec,
    discovery_last_success: Gauge,
}

impl Metrics {
    /// Creates and registers every family, with known label values at 0.
    pub fn new(config: &MetricsConfig) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let metrics = Metrics {
            transitions: counter_vec(
                &registry,
                "comfycontrol_workflow_status_transitions_total",
                "Status changes between consecutive snapshots of one workflow.",
                &["from", "to"],
            )?,
            finished: counter_vec(
                &registry,
                "comfycontrol_workflows_finished_total",
                "Workflows seen to reach a terminal status, once per workflow.",
                &["status"],
            )?,
            failures: counter_vec(
                &registry,
                "comfycontrol_workflow_failures_total",
                "Failed workflows by the ComfyUI node type and exception type of the cause.",
                &["node_type", "exception_type"],
            )?,
            failure_causes: Mutex::new(HashSet::new()),
            max_failure_causes: config.max_failure_causes,
            workflows: gauge_vec(
                &registry,
                "comfycontrol_workflows",
                "Watched workflows now in each non-terminal status.",
                &["status"],
            )?,
            queue_position: gauge_vec(
                &registry,
                "comfycontrol_workflow_queue_position",
                "Queue number of each queued workflow.",
                &["workflow_id"],
            )?,
            queue_wait: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "comfycontrol_workflow_queue_wait_seconds",
                        "Time from first seeing a workflow queued to seeing it running.",
                    )
                    .buckets(config.queue_wait_buckets.clone()),
                )?,
            )?,
            run_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "comfycontrol_workflow_run_duration_seconds",
                        "Server time from started_at to completed_at of finished workflows.",
                    )
                    .buckets(config.run_duration_buckets.clone()),
                    &["status"],
                )?,
            )?,
            outputs: register(
                &registry,
                IntCounter::new(
                    "comfycontrol_workflow_outputs_total",
                    "Outputs of completed workflows.",
                )?,
            )?,
            up: register(
                &registry,
                IntGauge::new(
                    "comfycontrol_up",
                    "1 while the API answers with an accepted token, 0 after a 401, 403, 5xx or network error.",
                )?,
            )?,
            api_requests: counter_vec(
                &registry,
                "comfycontrol_api_requests_total",
                "API requests by endpoint and HTTP status code, or error when no response came.",
                &["endpoint", "code"],
            )?,
            api_cooldowns: register(
                &registry,
                IntCounter::new(
                    "comfycontrol_api_cooldowns_total",
                    "Pauses of all API requests after a 429 response.",
                )?,
            )?,
            reconnects: counter_vec(
                &registry,
                "comfycontrol_sse_reconnects_total",
                "Streams opened again, by why the previous one ended.",
                &["reason"],
            )?,
            sse_events: register(
                &registry,
                IntCounter::new(
                    "comfycontrol_sse_events_total",
                    "Valid snapshots received on workflow streams.",
                )?,
            )?,
            invalid_events: counter_vec(
                &registry,
                "comfycontrol_sse_invalid_events_total",
                "Stream events or lines that could not be used, by reason.",
                &["reason"],
            )?,
            tracked: register(
                &registry,
                IntGauge::new(
                    "comfycontrol_tracked_workflows",
                    "Workflows watched now.",
                )?,
            )?,
            waiting: register(
                &registry,
                IntGauge::new(
                    "comfycontrol_waiting_workflows",
                    "Workflows waiting for a free slot under --max-tracked.",
                )?,
            )?,
            oldest_age: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "comfycontrol_oldest_workflow_age_seconds",
                        "Time the longest-waiting watched workflow has been in each status, 0 when none is.",
                    ),
                    &["status"],
                )?,
            )?,
            discovery_last_success: register(
                &registry,
                Gauge::new(
                    "comfycontrol_discovery_last_success_timestamp_seconds",
                    "Unix time of the last discovery poll that completed without error.",
                )?,
            )?,
            registry,
        };

        metrics.register_process_and_build_info()?;
        metrics.create_known_series();
        Ok(metrics)
    }

    fn register_process_and_build_info(&self) -> prometheus::Result<()> {
        let build_info = gauge_vec(
            &self.registry,
            "comfycontrol_exporter_build_info",
            "Always 1, labelled with the exporter's version.",
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        #[cfg(target_os = "linux")]
        self.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(())
    }

    fn create_known_series(&self) {
        for from in Status::ACTIVE.into_iter().chain([Status::Other]) {
            for to in Status::ALL.into_iter().filter(|to| *to != from) {
                self.transitions
                    .with_label_values(&[from.as_str(), to.as_str()]);
            }
        }
        for status in Status::TERMINAL {
            self.finished.with_label_values(&[status.as_str()]);
            self.run_duration.with_label_values(&[status.as_str()]);
        }
        for status in Status::ACTIVE {
            self.workflows.with_label_values(&[status.as_str()]);
            self.oldest_age.with_label_values(&[status.as_str()]);
        }
        self.workflows.with_label_values(&[OTHER]);
        for endpoint in ENDPOINTS {
            for code in KNOWN_CODES {
                self.api_requests.with_label_values(&[endpoint, code]);
            }
        }
        for reason in ReconnectReason::ALL {
            self.reconnects.with_label_values(&[reason.as_str()]);
        }
        for reason in INVALID_EVENT_REASONS {
            self.invalid_events.with_label_values(&[reason]);
        }
    }

    /// Applies the changes of one snapshot of the workflow `workflow_id`.
    pub fn apply(&self, workflow_id: &str, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Transition { from, to } => self
                    .transitions
                    .with_label_values(&[from.as_str(), to.as_str()])
                    .inc(),
                Change::QueuePosition(Some(position)) => self
                    .queue_position
                    .with_label_values(&[workflow_id])
                    .set(*position),
                Change::QueuePosition(None) => self.forget_queue_position(workflow_id),
                Change::QueueWait(wait) => self.queue_wait.observe(wait.as_secs_f64()),
                Change::Finished {
                    status,
                    run_duration,
                    cause,
                    outputs,
                } => self.record_finished(*status, *run_duration, cause.as_ref(), *outputs),
            }
        }
    }

    fn record_finished(
        &self,
        status: Status,
        run_duration: Option<Duration>,
        cause: Option<&Cause>,
        outputs: usize,
    ) {
        self.finished.with_label_values(&[status.as_str()]).inc();
        if let Some(duration) = run_duration {
            self.run_duration
                .with_label_values(&[status.as_str()])
                .observe(duration.as_secs_f64());
        }

        match status {
            Status::Completed => self.outputs.inc_by(outputs as u64),
            Status::Failed => {
                let (node_type, exception_type) = self.failure_labels(cause);
                self.failures
                    .with_label_values(&[&node_type, &exception_type])
                    .inc();
            }
            _ => {}
        }
    }

    /// Chooses the label pair of a failure, admitting new pairs up to the cap.
    fn failure_labels(&self, cause: Option<&Cause>) -> (String, String) {
        let field = |value: Option<&String>| match value {
            Some(text) => truncate(text),
            None => UNKNOWN.to_owned(),
        };
        let pair = (
            field(cause.and_then(|cause| cause.node_type.as_ref())),
            field(cause.and_then(|cause| cause.exception_type.as_ref())),
        );

        let mut admitted = self
            .failure_causes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if admitted.contains(&pair) || admitted.len() < self.max_failure_causes {
            admitted.insert(pair.clone());
            pair
        } else {
            (OTHER.to_owned(), OTHER.to_owned())
        }
    }

    /// Removes the queue-position series of a workflow that left the queue
    /// or is no longer watched.
    pub fn forget_queue_position(&self, workflow_id: &str) {
        // An absent series is the expected case for workflows never queued.
        let _ = self.queue_position.remove_label_values(&[workflow_id]);
    }

    /// Counts one API request and its outcome.
    pub fn count_request(&self, endpoint: &str, code: &str) {
        self.api_requests.with_label_values(&[endpoint, code]).inc();
    }

    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    pub fn count_cooldown(&self) {
        self.api_cooldowns.inc();
    }

    pub fn count_reconnect(&self, reason: ReconnectReason) {
        self.reconnects.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn count_event(&self) {
        self.sse_events.inc();
    }

    /// Counts a bad event; `reason` is one of [`INVALID_EVENT_REASONS`].
    pub fn count_invalid_event(&self, reason: &str) {
        self.invalid_events.with_label_values(&[reason]).inc();
    }

    pub fn set_tracked(&self, tracked: usize, waiting: usize) {
        self.tracked.set(tracked as i64);
        self.waiting.set(waiting as i64);
    }

    pub fn set_discovery_success(&self, unix_seconds: f64) {
        self.discovery_last_success.set(unix_seconds);
    }

    /// Sets the per-status gauges from a count and the longest time in
    /// status of the watched workflows.
    pub fn set_status_summary(&self, summary: &StatusSummary) {
        for (index, status) in Status::ACTIVE.into_iter().enumerate() {
            let label = [status.as_str()];
            self.workflows
                .with_label_values(&label)
                .set(summary.counts[index] as i64);
            self.oldest_age
                .with_label_values(&label)
                .set(summary.oldest[index].as_secs_f64());
        }
        self.workflows
            .with_label_values(&[OTHER])
            .set(summary.other as i64);
    }

    /// Encodes every family in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
            tracing::error!(%error, "failed to encode metrics");
        }
        buffer
    }
}

/// Counts and longest times in status of the watched workflows, indexed
/// like [`Status::ACTIVE`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StatusSummary {
    pub counts: [usize; 4],
    pub oldest: [Duration; 4],
    pub other: usize,
}

impl StatusSummary {
    /// Adds one workflow that has been in `status` for `age`.
    pub fn add(&mut self, status: Status, age: Duration) {
        match Status::ACTIVE.iter().position(|active| *active == status) {
            Some(index) => {
                self.counts[index] += 1;
                self.oldest[index] = self.oldest[index].max(age);
            }
            None => self.other += 1,
        }
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_LABEL_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_LABEL_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(max_failure_causes: usize) -> Metrics {
        Metrics::new(&MetricsConfig {
            queue_wait_buckets: vec![1.0, 10.0],
            run_duration_buckets: vec![1.0, 10.0],
            max_failure_causes,
        })
        .expect("metrics register")
    }

    fn rendered(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render()).expect("utf-8 exposition")
    }

    fn failed(node_type: &str, exception_type: &str) -> Change {
        Change::Finished {
            status: Status::Failed,
            run_duration: None,
            cause: Some(Cause {
                node_type: Some(node_type.to_owned()),
                exception_type: Some(exception_type.to_owned()),
            }),
            outputs: 0,
        }
    }

    #[test]
    fn known_series_start_at_zero() {
        let text = rendered(&metrics(10));

        for line in [
            "comfycontrol_workflows_finished_total{status=\"invalid\"} 0",
            "comfycontrol_workflows{status=\"queued\"} 0",
            "comfycontrol_workflow_status_transitions_total{from=\"queued\",to=\"running\"} 0",
            "comfycontrol_api_requests_total{code=\"429\",endpoint=\"subscribe\"} 0",
            "comfycontrol_sse_reconnects_total{reason=\"update_limit\"} 0",
            "comfycontrol_sse_invalid_events_total{reason=\"line_too_long\"} 0",
            "comfycontrol_oldest_workflow_age_seconds{status=\"running\"} 0",
            "comfycontrol_workflow_run_duration_seconds_count{status=\"failed\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?}");
        }
    }

    #[test]
    fn failure_causes_are_capped() {
        let metrics = metrics(2);

        metrics.apply("a", &[failed("KSampler", "OOM")]);
        metrics.apply("b", &[failed("VAEDecode", "RuntimeError")]);
        metrics.apply("c", &[failed("LoadImage", "FileNotFoundError")]);
        metrics.apply("d", &[failed("KSampler", "OOM")]);

        let text = rendered(&metrics);
        assert!(text.contains(
            "comfycontrol_workflow_failures_total{exception_type=\"OOM\",node_type=\"KSampler\"} 2"
        ));
        assert!(text.contains(
            "comfycontrol_workflow_failures_total{exception_type=\"other\",node_type=\"other\"} 1"
        ));
        assert!(!text.contains("LoadImage"));
    }

    #[test]
    fn missing_cause_is_unknown() {
        let metrics = metrics(10);

        metrics.apply(
            "a",
            &[Change::Finished {
                status: Status::Failed,
                run_duration: None,
                cause: None,
                outputs: 0,
            }],
        );

        assert!(rendered(&metrics).contains(
            "comfycontrol_workflow_failures_total{exception_type=\"unknown\",node_type=\"unknown\"} 1"
        ));
    }

    #[test]
    fn queue_position_series_leaves_with_the_queue() {
        let metrics = metrics(10);

        metrics.apply("w1", &[Change::QueuePosition(Some(4))]);
        assert!(rendered(&metrics)
            .contains("comfycontrol_workflow_queue_position{workflow_id=\"w1\"} 4"));

        metrics.apply("w1", &[Change::QueuePosition(None)]);
        assert!(!rendered(&metrics).contains("workflow_id=\"w1\""));
    }

    #[test]
    fn truncate_keeps_char_boundary() {
        let long = "é".repeat(100);

        let cut = truncate(&long);

        assert!(cut.len() <= MAX_LABEL_BYTES);
        assert!(long.starts_with(&cut));
    }
}
