//! The exporter under API errors and bad streams: rate limits, rejected
//! tokens, unknown workflows, server errors and malformed events.

mod common;

use std::time::Duration;

use comfycontrol_exporter::simulator::{
    End, Endpoint, Phase, ScriptedWorkflow, Status, StreamFault,
};
use common::{simulator_config, start_exporter, start_simulator, Scrape, TOKEN};

const FINISHED: &str = "comfycontrol_workflows_finished_total";
const REQUESTS: &str = "comfycontrol_api_requests_total";
const INVALID: &str = "comfycontrol_sse_invalid_events_total";

/// Workflows queued for `queued` and then running for 600 ms. Tests that
/// delay the first request of some watchers queue them long enough for
/// every watcher to see them before they end.
fn workflows(count: usize, queued: Duration) -> Vec<ScriptedWorkflow> {
    (0..count)
        .map(|index| {
            ScriptedWorkflow::new(
                format!("workflow {index}"),
                vec![
                    Phase::queued(queued, 2),
                    Phase::new(Status::Running, Duration::from_millis(600)),
                ],
                End::Completed { outputs: 1 },
            )
        })
        .collect()
}

fn workflow_flags(workflows: &[ScriptedWorkflow]) -> Vec<String> {
    workflows
        .iter()
        .flat_map(|workflow| ["--workflow".to_owned(), workflow.id.to_string()])
        .collect()
}

fn with_flags<'a>(ids: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags: Vec<&str> = ids.iter().map(String::as_str).collect();
    flags.extend_from_slice(extra);
    flags
}

fn requests(scrape: &Scrape, endpoint: &str, code: &str) -> f64 {
    scrape
        .value(REQUESTS, &[("endpoint", endpoint), ("code", code)])
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_below_the_limit_sends_nothing_beyond_it() {
    let workflows = workflows(24, Duration::from_secs(5));
    let flags = workflow_flags(&workflows);
    let mut config = simulator_config(workflows);
    config.rate_limit = 10;
    config.rate_window = Duration::from_secs(1);
    config.cooldown = Duration::from_secs(1);
    let simulator = start_simulator(config).await;
    let exporter = start_exporter(
        &simulator.base_url(),
        TOKEN,
        &with_flags(
            &flags,
            &["--api.rate-limit", "8", "--api.rate-limit-window", "1s"],
        ),
    )
    .await;

    let scrape = exporter
        .wait_until("24 finished workflows", |scrape| {
            scrape.sum(FINISHED, &[]) >= 24.0
        })
        .await;

    let stats = simulator.stats();
    assert_eq!(stats.over_limit, 0, "requests beyond the simulator's limit");
    assert!(
        stats.during_cooldown.is_empty(),
        "requests during a cooldown: {:?}",
        stats.during_cooldown
    );
    assert_eq!(requests(&scrape, "subscribe", "429"), 0.0);
    assert_eq!(scrape.get(FINISHED, &[("status", "completed")]), 24.0);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_storm_pauses_every_request() {
    let workflows = workflows(30, Duration::from_secs(7));
    let flags = workflow_flags(&workflows);
    let mut config = simulator_config(workflows);
    config.rate_limit = 10;
    config.rate_window = Duration::from_secs(1);
    config.cooldown = Duration::from_secs(2);
    config.max_updates = 10_000;
    let simulator = start_simulator(config).await;
    // The exporter's budget is above the simulator's limit, so its bursts
    // run into 429s; after each, every request must pause.
    let exporter = start_exporter(
        &simulator.base_url(),
        TOKEN,
        &with_flags(
            &flags,
            &[
                "--api.cooldown",
                "2s",
                "--api.rate-limit",
                "15",
                "--api.rate-limit-window",
                "1s",
            ],
        ),
    )
    .await;

    let scrape = exporter
        .wait_until("30 finished workflows", |scrape| {
            scrape.sum(FINISHED, &[]) >= 30.0
        })
        .await;

    let stats = simulator.stats();
    assert!(
        stats.over_limit >= 1,
        "the burst should have exceeded the limit"
    );
    // Requests already on the wire when the first 429 came back may still
    // arrive just after the cooldown began; none may come later.
    let late: Vec<_> = stats
        .during_cooldown
        .iter()
        .filter(|offset| **offset > Duration::from_millis(500))
        .collect();
    assert!(late.is_empty(), "requests sent during a cooldown: {late:?}");
    let rejected = (stats.over_limit + stats.during_cooldown.len() as u64) as f64;
    assert_eq!(requests(&scrape, "subscribe", "429"), rejected);
    assert!(scrape.get("comfycontrol_api_cooldowns_total", &[]) >= 1.0);
    assert_eq!(scrape.get(FINISHED, &[("status", "completed")]), 30.0);
    // A pause can hide the short running phase, so a workflow may go from
    // queued straight to completed; either way it arrives there once.
    let into_completed = [("to", "completed")];
    assert_eq!(
        scrape.sum(
            "comfycontrol_workflow_status_transitions_total",
            &into_completed
        ),
        30.0
    );
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_token_file_recovers_from_401() {
    let workflows = vec![ScriptedWorkflow::new(
        "waits for the token",
        vec![Phase::new(Status::Running, Duration::from_millis(1500))],
        End::Completed { outputs: 1 },
    )];
    let flags = workflow_flags(&workflows);
    let mut config = simulator_config(workflows);
    config.token = "cfc_rotated".into();
    let simulator = start_simulator(config).await;
    let exporter = start_exporter(
        &simulator.base_url(),
        "cfc_expired",
        &with_flags(&flags, &["--api.unauthorized-retry", "200ms"]),
    )
    .await;

    let rejected = exporter
        .wait_until("a 401", |scrape| {
            requests(scrape, "subscribe", "401") >= 1.0
        })
        .await;
    assert_eq!(rejected.get("comfycontrol_up", &[]), 0.0);
    assert!(
        !rejected.0.contains("cfc_expired"),
        "the token leaked into /metrics"
    );

    exporter.write_token("cfc_rotated\n");
    let recovered = exporter
        .wait_until("the workflow to finish", |scrape| {
            scrape.sum(FINISHED, &[]) >= 1.0
        })
        .await;

    assert_eq!(recovered.get("comfycontrol_up", &[]), 1.0);
    assert_eq!(recovered.get(FINISHED, &[("status", "completed")]), 1.0);
    assert!(requests(&recovered, "subscribe", "200") >= 1.0);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_token_is_probed_once_per_interval() {
    let workflows = workflows(10, Duration::from_millis(600));
    let flags = workflow_flags(&workflows);
    let mut config = simulator_config(workflows);
    config.token = "cfc_other".into();
    let simulator = start_simulator(config).await;
    let exporter = start_exporter(
        &simulator.base_url(),
        "cfc_wrong",
        &with_flags(&flags, &["--api.unauthorized-retry", "300ms"]),
    )
    .await;

    exporter
        .wait_until("a 401", |scrape| {
            requests(scrape, "subscribe", "401") >= 1.0
        })
        .await;
    let first = exporter.scrape().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = exporter.scrape().await;

    // The first wave may hold one request per watcher; after it, one probe
    // per 300 ms gives at most four more in a second.
    let probes = requests(&second, "subscribe", "401") - requests(&first, "subscribe", "401");
    assert!(
        probes <= 5.0,
        "{probes} requests with a rejected token in one second"
    );
    assert!(probes >= 1.0, "the token was never probed again");
    assert_eq!(second.get("comfycontrol_up", &[]), 0.0);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_workflow_is_dropped_after_404() {
    let known = workflows(1, Duration::from_millis(600));
    let mut flags = workflow_flags(&known);
    flags.extend([
        "--workflow".to_owned(),
        "0b7d5a8e-2c41-4e0f-9a3b-7f6e5d4c3b2a".to_owned(),
    ]);
    let simulator = start_simulator(simulator_config(known)).await;
    let exporter = start_exporter(&simulator.base_url(), TOKEN, &with_flags(&flags, &[])).await;

    let scrape = exporter
        .wait_until("the known workflow to finish", |scrape| {
            scrape.sum(FINISHED, &[]) >= 1.0
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = exporter.scrape().await;

    assert_eq!(requests(&scrape, "subscribe", "404"), 1.0);
    assert_eq!(
        requests(&later, "subscribe", "404"),
        1.0,
        "a 404 is not retried"
    );
    assert_eq!(later.get("comfycontrol_tracked_workflows", &[]), 0.0);
    assert_eq!(later.get("comfycontrol_up", &[]), 1.0);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff() {
    let workflows = workflows(1, Duration::from_millis(600));
    let flags = workflow_flags(&workflows);
    let simulator = start_simulator(simulator_config(workflows)).await;
    simulator.fail_next(Endpoint::Subscribe, 3, 503);
    let exporter = start_exporter(&simulator.base_url(), TOKEN, &with_flags(&flags, &[])).await;

    let scrape = exporter
        .wait_until("the workflow to finish", |scrape| {
            scrape.sum(FINISHED, &[]) >= 1.0
        })
        .await;

    assert_eq!(requests(&scrape, "subscribe", "503"), 3.0);
    assert_eq!(
        scrape.get("comfycontrol_sse_reconnects_total", &[("reason", "error")]),
        3.0
    );
    assert_eq!(scrape.get(FINISHED, &[("status", "completed")]), 1.0);
    assert_eq!(scrape.get("comfycontrol_up", &[]), 1.0);
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_counted_and_skipped() {
    let raw = |after_events: u32, bytes: &[u8]| StreamFault::RawLine {
        connection: 1,
        after_events,
        bytes: bytes.to_vec(),
    };
    let mut huge = b"data: ".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 8192));
    huge.extend_from_slice(b"\n\n");

    let workflow = ScriptedWorkflow::new(
        "bad events",
        vec![
            Phase::queued(Duration::from_millis(800), 2),
            Phase::new(Status::Running, Duration::from_millis(800)),
        ],
        End::Completed { outputs: 1 },
    )
    .with_fault(raw(1, b"data: {not json\n\n"))
    .with_fault(raw(2, b"data: {\"queue_number\":1}\n\n"))
    .with_fault(raw(3, b"data: {\"status\":\"paused\"}\n\n"))
    .with_fault(raw(4, b"data: {\"status\":\"queued\",\"x\":\"\xff\"}\n\n"))
    .with_fault(raw(
        5,
        b": keep-alive\r\ndata: {\"status\":\r\ndata: \"queued\"}\r\n\r\n",
    ))
    .with_fault(raw(6, &huge));
    let flags = workflow_flags(std::slice::from_ref(&workflow));
    let simulator = start_simulator(simulator_config(vec![workflow])).await;
    let exporter = start_exporter(
        &simulator.base_url(),
        TOKEN,
        &with_flags(&flags, &["--sse.max-line-bytes", "4096"]),
    )
    .await;

    let scrape = exporter
        .wait_until("the workflow to finish", |scrape| {
            scrape.sum(FINISHED, &[]) >= 1.0
        })
        .await;

    assert_eq!(scrape.get(INVALID, &[("reason", "invalid_json")]), 1.0);
    assert_eq!(scrape.get(INVALID, &[("reason", "missing_field")]), 1.0);
    assert_eq!(scrape.get(INVALID, &[("reason", "unknown_status")]), 1.0);
    assert_eq!(scrape.get(INVALID, &[("reason", "invalid_utf8")]), 1.0);
    assert_eq!(scrape.get(INVALID, &[("reason", "line_too_long")]), 1.0);
    // The unknown status is a real change to "other" and back.
    let transitions = "comfycontrol_workflow_status_transitions_total";
    assert_eq!(
        scrape.get(transitions, &[("from", "queued"), ("to", "other")]),
        1.0
    );
    assert_eq!(
        scrape.get(transitions, &[("from", "other"), ("to", "queued")]),
        1.0
    );
    assert_eq!(
        scrape.get(transitions, &[("from", "queued"), ("to", "running")]),
        1.0
    );
    assert_eq!(
        scrape.get(transitions, &[("from", "running"), ("to", "completed")]),
        1.0
    );
    assert_eq!(scrape.sum(transitions, &[]), 4.0);
    assert_eq!(scrape.get(FINISHED, &[("status", "completed")]), 1.0);
    assert_eq!(
        scrape.get("comfycontrol_sse_reconnects_total", &[("reason", "error")]),
        1.0
    );
    exporter.stop().await;
}

/// Watches one never-ending running workflow for two seconds with short
/// backoffs (100 ms doubling to 1 s) and returns the subscribe connections
/// the simulator saw and a scrape.
async fn connections_in_two_seconds(workflow: ScriptedWorkflow, max_updates: u32) -> (u64, Scrape) {
    let flags = workflow_flags(std::slice::from_ref(&workflow));
    let mut config = simulator_config(vec![workflow]);
    config.max_updates = max_updates;
    let simulator = start_simulator(config).await;
    let exporter = start_exporter(
        &simulator.base_url(),
        TOKEN,
        &with_flags(
            &flags,
            &["--api.backoff-min", "100ms", "--api.backoff-max", "1s"],
        ),
    )
    .await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let scrape = exporter.scrape().await;
    let connections = simulator.stats().subscribe_connections;
    exporter.stop().await;
    (connections, scrape)
}

fn running_forever(name: &str) -> ScriptedWorkflow {
    ScriptedWorkflow::new(
        name,
        vec![Phase::new(Status::Running, Duration::from_secs(60))],
        End::Never,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cut_early_back_off() {
    // The server closes cleanly after two events, far below the limit the
    // exporter expects, as a proxy cutting streams would.
    let (connections, scrape) =
        connections_in_two_seconds(running_forever("cut after two events"), 2).await;

    // Reopening at once would take about 40 connections in two seconds.
    assert!(connections >= 3, "{connections} connections");
    assert!(
        connections <= 14,
        "{connections} connections in two seconds"
    );
    let disconnected = scrape.get(
        "comfycontrol_sse_reconnects_total",
        &[("reason", "disconnected")],
    );
    assert!(disconnected >= 2.0, "{disconnected} early closes counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_after_one_event_back_off() {
    let mut workflow = running_forever("reset after one event");
    for connection in 1..=60 {
        workflow = workflow.with_fault(StreamFault::DropAfter {
            connection,
            events: 1,
        });
    }

    let (connections, scrape) = connections_in_two_seconds(workflow, 120).await;

    // Growing delays of at least 50, 100, 200, 400 and 500 ms allow at most
    // 7 connections in two seconds. Resetting the backoff after each event
    // would reopen every 50 to 100 ms, 20 times or more.
    assert!(connections >= 3, "{connections} connections");
    assert!(connections <= 8, "{connections} connections in two seconds");
    let errors = scrape.get("comfycontrol_sse_reconnects_total", &[("reason", "error")]);
    assert!(errors >= 2.0, "{errors} failed streams counted");
}
