//! Exact counts for whole workflows, read from `/metrics` of an exporter
//! watching the simulator over loopback.

mod common;

use std::time::Duration;

use comfycontrol_exporter::simulator::{End, Phase, ScriptedWorkflow, Status, StreamFault};
use common::{simulator_config, start_exporter, start_simulator, Scrape, INTERVAL, TOKEN};

const PHASE: Duration = Duration::from_millis(400);

const TRANSITIONS: &str = "comfycontrol_workflow_status_transitions_total";
const FINISHED: &str = "comfycontrol_workflows_finished_total";

fn phase(status: Status) -> Phase {
    Phase::new(status, PHASE)
}

fn transitions(scrape: &Scrape, from: &str, to: &str) -> f64 {
    scrape.get(TRANSITIONS, &[("from", from), ("to", to)])
}

fn finished(scrape: &Scrape, status: &str) -> f64 {
    scrape.get(FINISHED, &[("status", status)])
}

/// Waits for the finished count and for every watcher to have ended, which
/// happens just after its workflow is counted.
fn all_finished(expected: f64) -> impl Fn(&Scrape) -> bool {
    move |scrape| {
        scrape.sum(FINISHED, &[]) >= expected
            && scrape.value("comfycontrol_tracked_workflows", &[]) == Some(0.0)
    }
}

/// Five workflows covering every ending, watched by id.
fn normal_mix() -> Vec<ScriptedWorkflow> {
    vec![
        ScriptedWorkflow::new(
            "completes",
            vec![
                phase(Status::Accepted),
                phase(Status::Uploaded),
                Phase::queued(PHASE, 3),
                phase(Status::Running),
            ],
            End::Completed { outputs: 2 },
        ),
        ScriptedWorkflow::new(
            "fails in KSampler",
            vec![Phase::queued(PHASE, 2), phase(Status::Running)],
            End::Failed {
                node_type: Some("KSampler".into()),
                exception_type: Some("torch.cuda.OutOfMemoryError".into()),
                message: "CUDA out of memory".into(),
            },
        ),
        ScriptedWorkflow::new("invalid", vec![phase(Status::Accepted)], End::Invalid),
        ScriptedWorkflow::new("cancelled", vec![Phase::queued(PHASE, 1)], End::Cancelled),
        ScriptedWorkflow::new(
            "fails without cause",
            vec![phase(Status::Running)],
            End::FailedWithoutCause,
        ),
    ]
}

fn ids(workflows: &[ScriptedWorkflow]) -> Vec<String> {
    workflows
        .iter()
        .map(|workflow| workflow.id.to_string())
        .collect()
}

fn workflow_flags(ids: &[String]) -> Vec<&str> {
    ids.iter()
        .flat_map(|id| ["--workflow", id.as_str()])
        .collect()
}

fn assert_normal_mix_counts(scrape: &Scrape) {
    assert_eq!(transitions(scrape, "accepted", "uploaded"), 1.0);
    assert_eq!(transitions(scrape, "uploaded", "queued"), 1.0);
    assert_eq!(transitions(scrape, "queued", "running"), 2.0);
    assert_eq!(transitions(scrape, "running", "completed"), 1.0);
    assert_eq!(transitions(scrape, "running", "failed"), 2.0);
    assert_eq!(transitions(scrape, "accepted", "invalid"), 1.0);
    assert_eq!(transitions(scrape, "queued", "cancelled"), 1.0);
    assert_eq!(scrape.sum(TRANSITIONS, &[]), 9.0, "no other transitions");

    assert_eq!(finished(scrape, "completed"), 1.0);
    assert_eq!(finished(scrape, "failed"), 2.0);
    assert_eq!(finished(scrape, "invalid"), 1.0);
    assert_eq!(finished(scrape, "cancelled"), 1.0);

    let ksampler = [
        ("node_type", "KSampler"),
        ("exception_type", "torch.cuda.OutOfMemoryError"),
    ];
    assert_eq!(
        scrape.get("comfycontrol_workflow_failures_total", &ksampler),
        1.0
    );
    let unknown = [("node_type", "unknown"), ("exception_type", "unknown")];
    assert_eq!(
        scrape.get("comfycontrol_workflow_failures_total", &unknown),
        1.0
    );

    assert_eq!(scrape.get("comfycontrol_workflow_outputs_total", &[]), 2.0);
    assert_eq!(
        scrape.get("comfycontrol_workflow_queue_wait_seconds_count", &[]),
        2.0
    );
    let completed = [("status", "completed")];
    assert_eq!(
        scrape.get(
            "comfycontrol_workflow_run_duration_seconds_count",
            &completed
        ),
        1.0
    );
    let failed = [("status", "failed")];
    assert_eq!(
        scrape.get("comfycontrol_workflow_run_duration_seconds_count", &failed),
        2.0
    );

    assert_eq!(scrape.get("comfycontrol_tracked_workflows", &[]), 0.0);
    assert_eq!(scrape.sum("comfycontrol_workflows", &[]), 0.0);
    assert!(!scrape.has("comfycontrol_workflow_queue_position", &[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_mix_counts_exactly() {
    let workflows = normal_mix();
    let ids = ids(&workflows);
    let simulator = start_simulator(simulator_config(workflows)).await;
    let exporter = start_exporter(&simulator.base_url(), TOKEN, &workflow_flags(&ids)).await;

    let scrape = exporter
        .wait_until("five finished workflows", all_finished(5.0))
        .await;

    assert_normal_mix_counts(&scrape);
    assert_eq!(scrape.get("comfycontrol_up", &[]), 1.0);
    assert_eq!(
        scrape.get(
            "comfycontrol_api_requests_total",
            &[("endpoint", "subscribe"), ("code", "200")]
        ),
        5.0
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_gauges_follow_a_queued_workflow() {
    let queued = ScriptedWorkflow::new(
        "waits",
        vec![Phase::queued(Duration::from_secs(60), 7)],
        End::Never,
    );
    let id = queued.id.to_string();
    let simulator = start_simulator(simulator_config(vec![queued])).await;
    let exporter = start_exporter(&simulator.base_url(), TOKEN, &["--workflow", &id]).await;

    let scrape = exporter
        .wait_until("the queue position", |scrape| {
            scrape.has(
                "comfycontrol_workflow_queue_position",
                &[("workflow_id", &id)],
            )
        })
        .await;

    assert_eq!(
        scrape.get("comfycontrol_workflows", &[("status", "queued")]),
        1.0
    );
    assert_eq!(scrape.get("comfycontrol_tracked_workflows", &[]), 1.0);
    let position = scrape.get(
        "comfycontrol_workflow_queue_position",
        &[("workflow_id", &id)],
    );
    assert!((1.0..=7.0).contains(&position), "position {position}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = exporter.scrape().await;
    assert!(
        later.get(
            "comfycontrol_oldest_workflow_age_seconds",
            &[("status", "queued")]
        ) >= 0.3
    );
    assert_eq!(
        later.get(
            "comfycontrol_oldest_workflow_age_seconds",
            &[("status", "running")]
        ),
        0.0
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_counts_unfinished_and_skips_finished() {
    let mut workflows = normal_mix();
    // Finished before the exporter starts: remembered, never counted.
    workflows.push(ScriptedWorkflow::new(
        "done before",
        vec![],
        End::Completed { outputs: 5 },
    ));
    workflows.push(ScriptedWorkflow::new(
        "failed before",
        vec![],
        End::FailedWithoutCause,
    ));
    let simulator = start_simulator(simulator_config(workflows)).await;
    let exporter = start_exporter(
        &simulator.base_url(),
        TOKEN,
        &["--discovery.interval", "100ms", "--discovery.per-page", "2"],
    )
    .await;

    let scrape = exporter
        .wait_until("five finished workflows", all_finished(5.0))
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let settled = exporter.scrape().await;

    assert_normal_mix_counts(&settled);
    assert_eq!(settled.sum(FINISHED, &[]), scrape.sum(FINISHED, &[]));
    assert!(settled.get("comfycontrol_discovery_last_success_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(
        settled.get(
            "comfycontrol_api_requests_total",
            &[("endpoint", "subscribe"), ("code", "200")]
        ),
        5.0
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_limit_reconnects_count_nothing_twice() {
    let long_queue = ScriptedWorkflow::new(
        "queued across reconnects",
        vec![
            Phase::queued(Duration::from_millis(1500), 40),
            phase(Status::Running),
        ],
        End::Completed { outputs: 1 },
    );
    let id = long_queue.id.to_string();
    let mut config = simulator_config(vec![long_queue]);
    config.max_updates = 5;
    let simulator = start_simulator(config).await;
    let exporter = start_exporter(
        &simulator.base_url(),
        TOKEN,
        &["--workflow", &id, "--sse.max-updates", "5"],
    )
    .await;

    let scrape = exporter
        .wait_until("the workflow to finish", all_finished(1.0))
        .await;

    assert_eq!(transitions(&scrape, "queued", "running"), 1.0);
    assert_eq!(transitions(&scrape, "running", "completed"), 1.0);
    assert_eq!(scrape.sum(TRANSITIONS, &[]), 2.0);
    assert_eq!(finished(&scrape, "completed"), 1.0);
    assert_eq!(
        scrape.get("comfycontrol_workflow_queue_wait_seconds_count", &[]),
        1.0
    );
    assert_eq!(scrape.get("comfycontrol_workflow_outputs_total", &[]), 1.0);

    let reconnects = scrape.get(
        "comfycontrol_sse_reconnects_total",
        &[("reason", "update_limit")],
    );
    let minimum = (1900 / INTERVAL.as_millis() / 5 / 2) as f64;
    assert!(
        reconnects >= minimum,
        "{reconnects} update_limit reconnects, expected at least {minimum}"
    );
    assert_eq!(
        scrape.get("comfycontrol_sse_reconnects_total", &[("reason", "error")]),
        0.0
    );
    let connections = simulator.stats().subscribe_connections as f64;
    assert_eq!(
        connections,
        reconnects + 1.0,
        "every reconnect is one new connection"
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_lose_and_repeat_nothing() {
    let dropped = ScriptedWorkflow::new(
        "dropped mid-stream",
        vec![
            phase(Status::Accepted),
            Phase::queued(PHASE, 2),
            phase(Status::Running),
        ],
        End::Completed { outputs: 3 },
    )
    .with_fault(StreamFault::DropAfter {
        connection: 1,
        events: 3,
    })
    .with_fault(StreamFault::DropMidEvent {
        connection: 2,
        events: 2,
    })
    .with_fault(StreamFault::DropAfter {
        connection: 3,
        events: 0,
    });
    let id = dropped.id.to_string();
    let simulator = start_simulator(simulator_config(vec![dropped])).await;
    let exporter = start_exporter(&simulator.base_url(), TOKEN, &["--workflow", &id]).await;

    let scrape = exporter
        .wait_until("the workflow to finish", all_finished(1.0))
        .await;

    assert_eq!(transitions(&scrape, "accepted", "queued"), 1.0);
    assert_eq!(transitions(&scrape, "queued", "running"), 1.0);
    assert_eq!(transitions(&scrape, "running", "completed"), 1.0);
    assert_eq!(scrape.sum(TRANSITIONS, &[]), 3.0);
    assert_eq!(finished(&scrape, "completed"), 1.0);
    assert_eq!(scrape.get("comfycontrol_workflow_outputs_total", &[]), 3.0);

    let reconnects = scrape.sum("comfycontrol_sse_reconnects_total", &[]);
    assert!(
        reconnects >= 3.0,
        "{reconnects} reconnects after three drops"
    );
    assert_eq!(
        simulator.stats().subscribe_connections as f64,
        reconnects + 1.0
    );
    exporter.stop().await;
}
