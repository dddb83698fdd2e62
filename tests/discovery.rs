//! Discovery against the simulator: which workflows it watches and how many
//! list pages one poll costs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use comfycontrol_exporter::board::Board;
use comfycontrol_exporter::client::{ApiClient, ClientConfig};
use comfycontrol_exporter::discovery::{poll_once, PollSummary};
use comfycontrol_exporter::metrics::{Metrics, MetricsConfig};
use comfycontrol_exporter::simulator::{End, Phase, ScriptedWorkflow, Status};
use comfycontrol_exporter::token::{Token, TokenSource};
use comfycontrol_exporter::watcher::{WatchConfig, Watcher};
use comfycontrol_exporter::watchlist::Watchlist;
use common::{simulator_config, start_simulator, TOKEN};
use tokio_util::sync::CancellationToken;

fn client(base_url: &str, metrics: Arc<Metrics>) -> Arc<ApiClient> {
    let config = ClientConfig {
        base_url: base_url.parse().expect("simulator URL"),
        token: TokenSource::Fixed(Token::new(TOKEN)),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        rate_limit: 1000,
        rate_window: Duration::from_secs(10),
        cooldown: Duration::from_secs(1),
        unauthorized_retry: Duration::from_secs(1),
    };
    Arc::new(ApiClient::new(config, metrics).expect("client"))
}

fn watchlist(
    client: Arc<ApiClient>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Arc<Watchlist> {
    let board = Arc::new(Board::default());
    let watch = WatchConfig {
        max_updates: 120,
        max_line_bytes: 1 << 20,
        idle_timeout: Duration::from_secs(30),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
    };
    let watcher = Arc::new(Watcher::new(
        client,
        Arc::clone(&metrics),
        Arc::clone(&board),
        watch,
    ));
    Watchlist::new(watcher, metrics, board, 100, stop)
}

fn metrics() -> Arc<Metrics> {
    let config = MetricsConfig {
        queue_wait_buckets: vec![1.0],
        run_duration_buckets: vec![1.0],
        max_failure_causes: 10,
    };
    Arc::new(Metrics::new(&config).expect("metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_polls_stop_at_the_first_known_page() {
    let finished: Vec<_> = (0..20)
        .map(|index| {
            ScriptedWorkflow::new(
                format!("old {index}"),
                vec![],
                End::Completed { outputs: 1 },
            )
        })
        .collect();
    let simulator = start_simulator(simulator_config(finished)).await;
    let metrics = metrics();
    let client = client(&simulator.base_url(), Arc::clone(&metrics));
    let stop = CancellationToken::new();
    let list = watchlist(Arc::clone(&client), metrics, stop.clone());

    let first = poll_once(&client, &list, 5).await.expect("first poll");
    let second = poll_once(&client, &list, 5).await.expect("second poll");

    let expected_first = PollSummary {
        pages: 4,
        already_finished: 20,
        ..PollSummary::default()
    };
    assert_eq!(first, expected_first);
    assert_eq!(
        second,
        PollSummary {
            pages: 1,
            ..PollSummary::default()
        }
    );
    assert_eq!(simulator.stats().by_endpoint.list, 5);
    assert_eq!(
        simulator.stats().by_endpoint.subscribe,
        0,
        "finished workflows are never watched"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_workflows_are_watched_once() {
    let running: Vec<_> = (0..3)
        .map(|index| {
            ScriptedWorkflow::new(
                format!("running {index}"),
                vec![Phase::new(Status::Running, Duration::from_secs(60))],
                End::Never,
            )
        })
        .collect();
    let simulator = start_simulator(simulator_config(running)).await;
    let metrics = metrics();
    let client = client(&simulator.base_url(), Arc::clone(&metrics));
    let stop = CancellationToken::new();
    let list = watchlist(Arc::clone(&client), metrics, stop.clone());

    let first = poll_once(&client, &list, 2).await.expect("first poll");
    let second = poll_once(&client, &list, 2).await.expect("second poll");

    assert_eq!(first.started, 3);
    assert_eq!(first.pages, 2);
    // Known but unfinished workflows keep the walk going to the end.
    assert_eq!(second.started, 0);
    assert_eq!(second.pages, 2);
    common::eventually("three streams", || async {
        simulator.stats().subscribe_connections == 3
    })
    .await;
    stop.cancel();
    list.wait_for_watchers().await;
}
