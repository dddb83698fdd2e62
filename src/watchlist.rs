//! Which workflows are watched, which wait for a slot, which are done.
//!
//! Ids arrive from the command line and from discovery. Each is watched at
//! most once at a time and, once finished, not again while it is among the
//! last 100,000 finished ids. The done set keeps those ids, so a list page
//! that still shows a finished workflow as running cannot start a second
//! watcher and count its end twice. At most `max_tracked` workflows are
//! watched at once, and the rest wait in arrival order.

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::board::Board;
use crate::metrics::Metrics;
use crate::status::Status;
use crate::watcher::{Outcome, Watcher};

/// Finished ids remembered; the oldest are forgotten first. A forgotten id
/// seen again in a terminal status is remembered again, never counted.
const DONE_CAPACITY: usize = 100_000;

/// The set of watched workflows and the tasks that watch them.
pub struct Watchlist {
    watcher: Arc<Watcher>,
    metrics: Arc<Metrics>,
    board: Arc<Board>,
    max_tracked: usize,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tracked: HashSet<String>,
    waiting: VecDeque<(String, Option<Status>)>,
    waiting_ids: HashSet<String>,
    done: DoneSet,
}

impl Watchlist {
    pub fn new(
        watcher: Arc<Watcher>,
        metrics: Arc<Metrics>,
        board: Arc<Board>,
        max_tracked: usize,
        shutdown: CancellationToken,
    ) -> Arc<Watchlist> {
        Arc::new(Watchlist {
            watcher,
            metrics,
            board,
            max_tracked: max_tracked.max(1),
            shutdown,
            tasks: TaskTracker::new(),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks whether the id is watched, waiting or done.
    pub fn is_known(&self, workflow_id: &str) -> bool {
        let state = self.lock();
        state.tracked.contains(workflow_id)
            || state.waiting_ids.contains(workflow_id)
            || state.done.contains(workflow_id)
    }

    /// Remembers a workflow first seen already finished, so it is never
    /// watched or counted.
    pub fn remember_finished(&self, workflow_id: &str) {
        self.lock().done.insert(workflow_id.to_owned());
    }

    /// Starts watching a workflow, or queues it when all slots are taken.
    /// Returns false when the id was already known.
    pub fn offer(self: &Arc<Self>, workflow_id: String, seed: Option<Status>) -> bool {
        let mut state = self.lock();
        if state.tracked.contains(&workflow_id)
            || state.waiting_ids.contains(&workflow_id)
            || state.done.contains(&workflow_id)
        {
            return false;
        }

        if state.tracked.len() < self.max_tracked {
            state.tracked.insert(workflow_id.clone());
            self.spawn(workflow_id, seed);
        } else {
            state.waiting_ids.insert(workflow_id.clone());
            state.waiting.push_back((workflow_id, seed));
        }
        self.publish_sizes(&state);
        true
    }

    fn spawn(self: &Arc<Self>, workflow_id: String, seed: Option<Status>) {
        let list = Arc::clone(self);
        tracing::debug!(workflow_id, "started watching workflow");

        self.tasks.spawn(async move {
            // A panic in one watcher must not keep its slot taken forever.
            let watch = AssertUnwindSafe(list.watcher.watch(&workflow_id, seed)).catch_unwind();
            let outcome = tokio::select! {
                outcome = watch => Some(outcome.unwrap_or_else(|_| {
                    tracing::error!(workflow_id, "watcher panicked, no longer watching the workflow");
                    Outcome::Failed
                })),
                _ = list.shutdown.cancelled() => None,
            };
            list.release(workflow_id, outcome);
        });
    }

    /// Frees the slot of a workflow whose watcher ended, and fills it.
    fn release(self: &Arc<Self>, workflow_id: String, outcome: Option<Outcome>) {
        self.board.remove(&workflow_id);
        self.metrics.forget_queue_position(&workflow_id);

        let mut state = self.lock();
        state.tracked.remove(&workflow_id);
        match outcome {
            // The list may show the workflow again later; discovery then
            // offers it anew.
            Some(Outcome::NotFound) => {}
            Some(outcome) => {
                tracing::debug!(workflow_id, ?outcome, "stopped watching workflow");
                state.done.insert(workflow_id);
            }
            None => return,
        }

        if let Some((next, seed)) = state.waiting.pop_front() {
            state.waiting_ids.remove(&next);
            state.tracked.insert(next.clone());
            self.spawn(next, seed);
        }
        self.publish_sizes(&state);
    }

    fn publish_sizes(&self, state: &State) {
        self.metrics
            .set_tracked(state.tracked.len(), state.waiting.len());
    }

    /// Waits until every watcher task has ended after shutdown.
    pub async fn wait_for_watchers(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A bounded set that drops its oldest entries first.
#[derive(Default)]
struct DoneSet {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl DoneSet {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: String) {
        if !self.ids.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > DONE_CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_set_forgets_the_oldest_past_capacity() {
        let mut done = DoneSet::default();

        for index in 0..=DONE_CAPACITY {
            done.insert(index.to_string());
        }

        assert!(!done.contains("0"));
        assert!(done.contains("1"));
        assert!(done.contains(&DONE_CAPACITY.to_string()));
        assert_eq!(done.ids.len(), DONE_CAPACITY);
    }

    #[test]
    fn done_set_ignores_repeats() {
        let mut done = DoneSet::default();

        done.insert("a".into());
        done.insert("a".into());

        assert_eq!(done.order.len(), 1);
    }
}
