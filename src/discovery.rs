//! Discovery of unfinished workflows by polling the workflow list.
//!
//! The list is ordered newest first, so new and unfinished workflows sit on
//! the first pages. A poll walks pages until one contains nothing new and
//! nothing unfinished, which keeps the cost of a poll to a page or two on an
//! account with a long history. A workflow already terminal when first seen
//! is remembered and never counted: its status changes happened before the
//! exporter could see them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::client::{ApiClient, ApiError};
use crate::metrics::Metrics;
use crate::status::Status;
use crate::watchlist::Watchlist;

/// Pages walked at most in one poll, a guard against a list that never
/// ends: 100 pages of 100 are as many workflows as the default
/// `--max-tracked`.
const MAX_PAGES: u32 = 100;

/// Settings of discovery.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub interval: Duration,
    pub per_page: u32,
}

/// Counts of one poll.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollSummary {
    pub pages: u32,
    pub started: usize,
    pub already_finished: usize,
    /// Listed items without a string `id` that is a UUID and a string
    /// `status`, skipped.
    pub invalid: usize,
}

/// Polls the list every interval until shutdown.
pub async fn run(
    client: Arc<ApiClient>,
    watchlist: Arc<Watchlist>,
    metrics: Arc<Metrics>,
    config: DiscoveryConfig,
    shutdown: CancellationToken,
) {
    let mut ticker = interval(config.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }

        let poll = tokio::select! {
            result = poll_once(&client, &watchlist, config.per_page) => result,
            _ = shutdown.cancelled() => return,
        };
        match poll {
            Ok(summary) => {
                metrics.set_discovery_success(unix_now());
                if summary.invalid > 0 {
                    tracing::warn!(
                        skipped = summary.invalid,
                        "skipped listed workflows without a valid id or status"
                    );
                }
                tracing::debug!(?summary, "discovery poll finished");
            }
            Err(error) => {
                tracing::warn!(%error, "discovery poll failed, retrying at the next interval")
            }
        }
    }
}

/// Walks the list from the newest workflow and offers every unfinished one
/// to the watchlist.
pub async fn poll_once(
    client: &ApiClient,
    watchlist: &Arc<Watchlist>,
    per_page: u32,
) -> Result<PollSummary, ApiError> {
    let mut summary = PollSummary::default();
    let mut seen_this_poll = HashSet::new();

    for page in 1..=MAX_PAGES {
        let body = client.list(page, per_page).await?;
        summary.pages = page;

        let mut worth_next_page = false;
        let mut new_on_page = false;
        for item in &body.workflows {
            let id = item.get("id").and_then(serde_json::Value::as_str);
            let status = item.get("status").and_then(serde_json::Value::as_str);
            match (id, status) {
                (Some(id), Some(status)) => {
                    new_on_page |= seen_this_poll.insert(id.to_owned());
                    worth_next_page |= take_item(watchlist, id, status, &mut summary)
                }
                _ => summary.invalid += 1,
            }
        }
        // A page that repeats earlier pages means the server ignores `page`.
        if !new_on_page {
            return Ok(summary);
        }

        let seen = u64::from(page) * u64::from(per_page);
        if !worth_next_page || body.workflows.is_empty() || seen >= body.total {
            return Ok(summary);
        }
    }

    tracing::warn!(
        pages = MAX_PAGES,
        "discovery stopped after the maximum number of list pages"
    );
    Ok(summary)
}

/// Handles one listed workflow; returns whether it was new or unfinished.
fn take_item(
    watchlist: &Arc<Watchlist>,
    raw_id: &str,
    raw_status: &str,
    summary: &mut PollSummary,
) -> bool {
    let Ok(id) = uuid::Uuid::parse_str(raw_id) else {
        summary.invalid += 1;
        return false;
    };
    let id = id.to_string();
    let status = Status::parse(raw_status).unwrap_or(Status::Other);

    if status.is_terminal() {
        if watchlist.is_known(&id) {
            return false;
        }
        watchlist.remember_finished(&id);
        summary.already_finished += 1;
        return true;
    }

    if watchlist.offer(id, Some(status)) {
        summary.started += 1;
    }
    true
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}
