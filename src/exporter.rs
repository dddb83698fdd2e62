//! Assembly of the exporter: client, watchers, discovery and HTTP server.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::board::Board;
use crate::client::{ApiClient, ApiError};
use crate::discovery;
use crate::metrics::Metrics;
use crate::server::{self, Site};
use crate::settings::Settings;
use crate::watcher::Watcher;
use crate::watchlist::Watchlist;

/// Time the watcher tasks get to end after shutdown begins.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A failure to start the exporter.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("failed to register metrics: {0}")]
    Metrics(#[from] prometheus::Error),

    #[error(transparent)]
    Client(#[from] ApiError),
}

/// Runs the exporter on an already bound listener until `shutdown`
/// completes.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new(&settings.metrics)?);
    let client = Arc::new(ApiClient::new(
        settings.client.clone(),
        Arc::clone(&metrics),
    )?);
    let board = Arc::new(Board::default());
    let stop = CancellationToken::new();

    let watcher = Arc::new(Watcher::new(
        Arc::clone(&client),
        Arc::clone(&metrics),
        Arc::clone(&board),
        settings.watch.clone(),
    ));
    let watchlist = Watchlist::new(
        watcher,
        Arc::clone(&metrics),
        Arc::clone(&board),
        settings.max_tracked,
        stop.clone(),
    );

    let site = Arc::new(Site {
        telemetry_path: settings.telemetry_path.clone(),
        ready: Default::default(),
        render: {
            let metrics = Arc::clone(&metrics);
            let board = Arc::clone(&board);
            Box::new(move || {
                metrics.set_status_summary(&board.summary(Instant::now()));
                metrics.render()
            })
        },
    });
    let server = tokio::spawn(server::serve(
        listener,
        Arc::clone(&site),
        stop.clone().cancelled_owned(),
    ));

    for id in &settings.workflows {
        watchlist.offer(id.clone(), None);
    }
    let discovery = settings.discovery.clone().map(|config| {
        tokio::spawn(discovery::run(
            Arc::clone(&client),
            Arc::clone(&watchlist),
            Arc::clone(&metrics),
            config,
            stop.clone(),
        ))
    });
    site.ready.store(true, Ordering::Release);

    shutdown.await;
    stop.cancel();

    if tokio::time::timeout(STOP_TIMEOUT, watchlist.wait_for_watchers())
        .await
        .is_err()
    {
        tracing::warn!("watchers did not stop within {STOP_TIMEOUT:?}");
    }
    if let Some(task) = discovery {
        let _ = task.await;
    }
    let _ = server.await;
    Ok(())
}
