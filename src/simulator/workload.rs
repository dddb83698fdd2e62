//! The workflows a simulator serves: either a generated, endless mix or a
//! fixed script for tests that count exact events.

use std::time::Duration;

use uuid::Uuid;

use super::faults::StreamFault;
use super::timeline::{End, Phase};

/// The source of the workflows that a simulator serves.
#[derive(Clone, Debug)]
pub enum Workload {
    /// Random arrivals with realistic lifecycles, for demos and manual runs.
    Generated(GeneratedWorkload),
    /// Exactly these workflows, all starting when the simulator starts.
    /// `SimulatorHandle::add_workflow` adds more at run time.
    Scripted(Vec<ScriptedWorkflow>),
}

/// Parameters of the generated workload.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedWorkload {
    /// Seed of the random generator. The same seed and snapshot interval give
    /// the same workflows in the same order.
    pub seed: u64,
    /// Mean time between two new workflows. Gaps are drawn from an
    /// exponential distribution. Zero disables new arrivals.
    pub mean_arrival: Duration,
    /// Factor applied to every phase duration of a generated workflow, so
    /// 0.1 runs lifecycles ten times faster. Arrival gaps are not scaled.
    pub time_scale: f64,
    /// Number of workflows that exist already at start, at random stages.
    /// At most 5000 are kept, the size of the history.
    pub initial: usize,
}

impl Default for GeneratedWorkload {
    fn default() -> Self {
        GeneratedWorkload {
            seed: 0,
            mean_arrival: Duration::from_secs(5),
            time_scale: 1.0,
            initial: 20,
        }
    }
}

/// A workflow with a fixed timeline. Its clock starts when the simulator
/// starts or when it is added at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedWorkflow {
    pub id: Uuid,
    pub name: String,
    pub tags: Vec<String>,
    /// Phases in order. Each lasts its `duration`, and the first starts with
    /// the workflow.
    pub phases: Vec<Phase>,
    /// The outcome that follows the last phase.
    pub end: End,
    /// Faults injected into this workflow's subscribe connections.
    pub faults: Vec<StreamFault>,
}

impl ScriptedWorkflow {
    /// Creates a workflow with a random id, no tags and no faults.
    pub fn new(name: impl Into<String>, phases: Vec<Phase>, end: End) -> Self {
        ScriptedWorkflow {
            id: Uuid::new_v4(),
            name: name.into(),
            tags: Vec::new(),
            phases,
            end,
            faults: Vec::new(),
        }
    }

    /// Returns the workflow with these tags.
    pub fn with_tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
        self
    }

    /// Returns the workflow with this fault added.
    pub fn with_fault(mut self, fault: StreamFault) -> Self {
        self.faults.push(fault);
        self
    }
}
