//! The workflow history: every workflow the simulator stores, in creation
//! order, with the clock each one started on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::generator::{random_id, WorkflowGenerator};
use super::timeline::{state_at, Status, TimelineState};
use super::workload::{ScriptedWorkflow, Workload};

/// Maximum number of workflows kept. The oldest are dropped first, and
/// requests for their ids then get 404.
pub const MAX_HISTORY: usize = 5000;

/// The runner a workflow was scheduled on. The API reports a user runner and
/// a managed runner id, one of them null.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    User(Uuid),
    Managed(Uuid),
}

/// A workflow with its start time and the attributes that only the detailed
/// view reports. Immutable once stored, so streams share it without locks.
#[derive(Debug)]
pub struct WorkflowRecord {
    pub workflow: ScriptedWorkflow,
    /// Monotonic start of the timeline.
    pub start: Instant,
    /// Wall-clock time of the start, which timestamps are computed from.
    pub created_at: DateTime<Utc>,
    pub user_id: Uuid,
    pub runner: Runner,
    pub prompt_id: Uuid,
    /// Sampler seed shown in the workflow JSON and parameters.
    pub sampler_seed: u32,
}

impl WorkflowRecord {
    /// Computes the workflow's state at `now`.
    pub fn state(&self, now: Instant, interval: Duration) -> TimelineState {
        let elapsed = now.saturating_duration_since(self.start);
        state_at(&self.workflow.phases, &self.workflow.end, elapsed, interval)
    }

    /// Formats the time `offset` after the start as RFC 3339 UTC with
    /// milliseconds, such as `2024-01-15T14:30:05.123Z`.
    pub fn timestamp(&self, offset: Duration) -> String {
        let offset = chrono::Duration::from_std(offset).unwrap_or(chrono::Duration::MAX);
        let moment = self
            .created_at
            .checked_add_signed(offset)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        moment.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

#[derive(Debug)]
struct Stored {
    record: Arc<WorkflowRecord>,
    subscribe_connections: u32,
}

/// All workflows of one simulator, in creation order.
#[derive(Debug)]
pub struct WorkflowStore {
    stored: VecDeque<Stored>,
    generator: Option<WorkflowGenerator>,
    user_id: Uuid,
    interval: Duration,
}

impl WorkflowStore {
    /// Creates the store with the workload's initial workflows, started
    /// relative to `now` and `now_utc`, which must be the same moment.
    pub fn new(
        workload: Workload,
        interval: Duration,
        now: Instant,
        now_utc: DateTime<Utc>,
    ) -> Self {
        let mut store = WorkflowStore {
            stored: VecDeque::new(),
            generator: None,
            user_id: Uuid::new_v4(),
            interval,
        };

        match workload {
            Workload::Scripted(workflows) => {
                for workflow in workflows {
                    store.add(workflow, now, now_utc);
                }
            }
            Workload::Generated(config) => {
                let mut generator = WorkflowGenerator::new(&config, interval, now);
                store.user_id = random_id(&mut StdRng::seed_from_u64(config.seed));

                let initial = config.initial.min(MAX_HISTORY);
                for (age, workflow) in generator.initial(initial) {
                    let start = now.checked_sub(age).unwrap_or(now);
                    let age = now - start;
                    let created_at = now_utc - chrono::Duration::from_std(age).unwrap_or_default();
                    store.add(workflow, start, created_at);
                }
                store.generator = Some(generator);
            }
        }

        store
    }

    /// Stores a workflow whose timeline starts at `start`, the same moment
    /// as `created_at`. Callers add workflows in order of their start, which
    /// keeps the history sorted by creation time.
    pub fn add(&mut self, workflow: ScriptedWorkflow, start: Instant, created_at: DateTime<Utc>) {
        let mut rng = StdRng::seed_from_u64(seed_of(workflow.id));
        let runner = if rng.random_bool(0.6) {
            Runner::User(random_id(&mut rng))
        } else {
            Runner::Managed(random_id(&mut rng))
        };

        let record = WorkflowRecord {
            workflow,
            start,
            created_at,
            user_id: self.user_id,
            runner,
            prompt_id: random_id(&mut rng),
            sampler_seed: rng.random(),
        };

        self.stored.push_back(Stored {
            record: Arc::new(record),
            subscribe_connections: 0,
        });
        if self.stored.len() > MAX_HISTORY {
            self.stored.pop_front();
        }
    }

    /// Adds the generated workflows that arrived up to `now`.
    pub fn refresh(&mut self, now: Instant) {
        let Some(generator) = self.generator.as_mut() else {
            return;
        };

        let arrivals = generator.arrivals_until(now);
        let now_utc = Utc::now();
        for (arrival, workflow) in arrivals {
            let age = chrono::Duration::from_std(now - arrival).unwrap_or_default();
            self.add(workflow, arrival, now_utc - age);
        }
    }

    /// Returns one page of workflows, newest first, and the number of
    /// workflows that match `status` across all pages. `page` starts at 1.
    pub fn page(
        &self,
        status: Option<&Status>,
        page: usize,
        per_page: usize,
        now: Instant,
    ) -> (Vec<Arc<WorkflowRecord>>, usize) {
        let matching: Vec<&Arc<WorkflowRecord>> = self
            .stored
            .iter()
            .rev()
            .map(|stored| &stored.record)
            .filter(|record| match status {
                Some(wanted) => record.state(now, self.interval).status == *wanted,
                None => true,
            })
            .collect();

        let skip = page.saturating_sub(1).saturating_mul(per_page);
        let items = matching
            .iter()
            .skip(skip)
            .take(per_page)
            .map(|record| Arc::clone(record))
            .collect();

        (items, matching.len())
    }

    /// Returns the newest workflow with this id.
    pub fn find(&self, id: Uuid) -> Option<Arc<WorkflowRecord>> {
        self.stored
            .iter()
            .rev()
            .find(|stored| stored.record.workflow.id == id)
            .map(|stored| Arc::clone(&stored.record))
    }

    /// Counts a subscribe connection to the workflow with this id and
    /// returns the workflow with the connection's number, starting at 1.
    pub fn open_subscription(&mut self, id: Uuid) -> Option<(Arc<WorkflowRecord>, u32)> {
        let stored = self
            .stored
            .iter_mut()
            .rev()
            .find(|stored| stored.record.workflow.id == id)?;

        stored.subscribe_connections = stored.subscribe_connections.saturating_add(1);
        Some((Arc::clone(&stored.record), stored.subscribe_connections))
    }
}

/// Derives a seed from a workflow id, so that a workflow's detail attributes
/// are the same in every run.
fn seed_of(id: Uuid) -> u64 {
    let (high, low) = id.as_u64_pair();
    high ^ low
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::timeline::{End, Phase};

    fn scripted(name: &str) -> ScriptedWorkflow {
        let phases = vec![Phase::new(Status::Running, Duration::from_secs(60))];
        ScriptedWorkflow::new(name, phases, End::Never)
    }

    fn store_with(names: &[&str]) -> WorkflowStore {
        let workflows = names.iter().map(|name| scripted(name)).collect();
        WorkflowStore::new(
            Workload::Scripted(workflows),
            Duration::from_secs(2),
            Instant::now(),
            Utc::now(),
        )
    }

    #[test]
    fn page_newest_first() {
        let store = store_with(&["a", "b", "c", "d", "e"]);

        let (first, total) = store.page(None, 1, 2, Instant::now());
        let (third, _) = store.page(None, 3, 2, Instant::now());

        let names: Vec<&str> = first.iter().map(|r| r.workflow.name.as_str()).collect();
        assert_eq!(names, ["e", "d"]);
        assert_eq!(total, 5);
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].workflow.name, "a");
    }

    #[test]
    fn history_bounded() {
        let mut store = store_with(&[]);
        let first = scripted("first");
        let first_id = first.id;
        store.add(first, Instant::now(), Utc::now());

        for _ in 0..MAX_HISTORY {
            store.add(scripted("later"), Instant::now(), Utc::now());
        }

        let (_, total) = store.page(None, 1, 1, Instant::now());
        assert_eq!(total, MAX_HISTORY);
        assert!(store.find(first_id).is_none());
    }

    #[test]
    fn subscriptions_numbered_per_workflow() {
        let mut store = store_with(&["a", "b"]);
        let (items, _) = store.page(None, 1, 2, Instant::now());
        let newer = items[0].workflow.id;
        let older = items[1].workflow.id;

        let first = store.open_subscription(newer).map(|(_, n)| n);
        let second = store.open_subscription(newer).map(|(_, n)| n);
        let other = store.open_subscription(older).map(|(_, n)| n);

        assert_eq!(first, Some(1));
        assert_eq!(second, Some(2));
        assert_eq!(other, Some(1));
        assert!(store.open_subscription(Uuid::new_v4()).is_none());
    }

    #[test]
    fn timestamp_has_milliseconds() {
        let store = store_with(&["a"]);
        let record = store.page(None, 1, 1, Instant::now()).0.remove(0);

        let stamp = record.timestamp(Duration::from_millis(1500));
        let parsed = DateTime::parse_from_rfc3339(&stamp).map(|t| t.with_timezone(&Utc));
        let offset = parsed.map(|t| t - record.created_at).ok();

        assert!(stamp.ends_with('Z'), "{stamp}");
        assert_eq!(stamp.len(), "2024-01-15T14:30:05.123Z".len(), "{stamp}");
        assert!(
            offset.is_some_and(|o| (o.num_milliseconds() - 1500).abs() <= 1),
            "{stamp} is not 1.5 s after {}",
            record.created_at
        );
    }

    #[test]
    fn generated_store_has_initial_history() {
        let workload = Workload::Generated(crate::simulator::GeneratedWorkload {
            seed: 1,
            mean_arrival: Duration::from_secs(5),
            time_scale: 1.0,
            initial: 20,
        });
        let now = Instant::now();
        let store = WorkflowStore::new(workload, Duration::from_secs(2), now, Utc::now());

        let (_, total) = store.page(None, 1, 1, now);
        let (_, terminal) = store.page(Some(&Status::Completed), 1, 1, now);

        assert_eq!(total, 20);
        assert!(terminal > 0, "no completed workflow among the initial ones");
    }
}
