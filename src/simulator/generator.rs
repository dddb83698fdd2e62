//! The generated workload: random workflows with realistic lifecycles.
//!
//! Each workflow goes accepted (1-3 s), uploaded (1-3 s), queued (5-90 s,
//! with a queue position counting down to 1), running (10 s to 10 min,
//! skewed short), and then ends. About 72% complete with 1-4 outputs, 15%
//! fail, 8% are cancelled at a random stage and 5% are invalid straight
//! after acceptance. A quarter of the failures happen during upload, and one
//! in ten has no cause. Phase durations are multiplied by the time scale.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::timeline::{End, Phase, Status};
use super::workload::{GeneratedWorkload, ScriptedWorkflow};

/// Workflow names with the tag of their kind.
const TEMPLATES: [(&str, &str); 8] = [
    ("Text to Image", "text2img"),
    ("SDXL Portrait", "text2img"),
    ("Product Shot", "text2img"),
    ("Image to Image", "img2img"),
    ("Style Transfer", "img2img"),
    ("Inpainting", "img2img"),
    ("Upscale 4x", "upscale"),
    ("Face Restore and Upscale", "upscale"),
];

/// Failure causes while running: node type, exception type, message.
const RUN_FAILURES: [(&str, &str, &str); 5] = [
    (
        "KSampler",
        "torch.cuda.OutOfMemoryError",
        "CUDA out of memory while sampling at 1024x1024",
    ),
    (
        "CheckpointLoaderSimple",
        "FileNotFoundError",
        "checkpoint sd_xl_base_1.0.safetensors not found in models/checkpoints",
    ),
    (
        "VAEDecode",
        "RuntimeError",
        "latent has 16 channels but the VAE expects 4",
    ),
    (
        "CLIPTextEncode",
        "ValueError",
        "prompt weight syntax could not be parsed",
    ),
    (
        "KSampler",
        "RuntimeError",
        "sampler produced NaN values at step 14",
    ),
];

/// Failure causes during upload: node type, exception type, message.
const UPLOAD_FAILURES: [(&str, &str, &str); 2] = [
    (
        "LoadImage",
        "FileNotFoundError",
        "input image reference.png not found on the runner",
    ),
    (
        "CheckpointLoaderSimple",
        "FileNotFoundError",
        "checkpoint realvis_v4.safetensors not found in models/checkpoints",
    ),
];

/// Upper bound of the age of the workflows that exist at start, before
/// scaling. It exceeds the longest lifecycle, so some are already terminal.
const INITIAL_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// Maximum number of arrivals materialized by one call, so that a long idle
/// period with a short mean arrival gap cannot stall a request.
const MAX_ARRIVALS_PER_CALL: usize = 5000;

/// A seeded source of generated workflows and their arrival times.
#[derive(Debug)]
pub struct WorkflowGenerator {
    rng: StdRng,
    time_scale: f64,
    interval: Duration,
    mean_arrival: Duration,
    next_arrival: Option<Instant>,
}

impl WorkflowGenerator {
    /// Creates a generator whose first arrival follows `now` by a random gap.
    /// `interval` is the snapshot interval, which sets how fast queue
    /// positions fall.
    pub fn new(config: &GeneratedWorkload, interval: Duration, now: Instant) -> Self {
        let mut generator = WorkflowGenerator {
            rng: StdRng::seed_from_u64(config.seed),
            time_scale: config.time_scale,
            interval,
            mean_arrival: config.mean_arrival,
            next_arrival: None,
        };

        if !config.mean_arrival.is_zero() {
            let gap = generator.arrival_gap();
            generator.next_arrival = now.checked_add(gap);
        }

        generator
    }

    /// Generates `count` workflows that started before now, oldest first,
    /// each with its age.
    pub fn initial(&mut self, count: usize) -> Vec<(Duration, ScriptedWorkflow)> {
        let max_age = scale(INITIAL_MAX_AGE, self.time_scale);
        let mut ages: Vec<Duration> = (0..count)
            .map(|_| scale(max_age, self.rng.random::<f64>()))
            .collect();
        ages.sort_unstable_by(|a, b| b.cmp(a));

        ages.into_iter().map(|age| (age, self.workflow())).collect()
    }

    /// Generates the workflows that arrived up to `now`, each with its
    /// arrival time, oldest first.
    pub fn arrivals_until(&mut self, now: Instant) -> Vec<(Instant, ScriptedWorkflow)> {
        let mut arrivals = Vec::new();

        while let Some(arrival) = self.next_arrival.filter(|arrival| *arrival <= now) {
            if arrivals.len() == MAX_ARRIVALS_PER_CALL {
                // Skip the backlog: older arrivals would fall out of the
                // bounded history anyway.
                self.next_arrival = now.checked_add(self.arrival_gap());
                break;
            }

            arrivals.push((arrival, self.workflow()));
            self.next_arrival = arrival.checked_add(self.arrival_gap());
        }

        arrivals
    }

    fn arrival_gap(&mut self) -> Duration {
        let uniform: f64 = self.rng.random();
        let factor = -(1.0 - uniform).ln();
        scale(self.mean_arrival, factor)
    }

    fn workflow(&mut self) -> ScriptedWorkflow {
        let id = random_id(&mut self.rng);
        let (name, kind) = TEMPLATES[self.rng.random_range(0..TEMPLATES.len())];
        let environment = if self.rng.random_bool(0.7) {
            "production"
        } else {
            "staging"
        };
        let (phases, end) = self.lifecycle();

        ScriptedWorkflow {
            id,
            name: name.to_owned(),
            tags: vec![environment.to_owned(), kind.to_owned()],
            phases,
            end,
            faults: Vec::new(),
        }
    }

    fn lifecycle(&mut self) -> (Vec<Phase>, End) {
        let full = self.full_phases();
        let roll: f64 = self.rng.random();

        if roll < 0.05 {
            (full[..1].to_vec(), End::Invalid)
        } else if roll < 0.13 {
            self.cancelled(full)
        } else if roll < 0.28 {
            self.failed(full)
        } else {
            let outputs = self.rng.random_range(1..=4);
            (full, End::Completed { outputs })
        }
    }

    /// Returns the four phases of a workflow that runs to the end.
    fn full_phases(&mut self) -> Vec<Phase> {
        let accepted = self.seconds_between(1.0, 3.0);
        let uploaded = self.seconds_between(1.0, 3.0);
        let queued = self.seconds_between(5.0, 90.0);

        // Cubing a uniform value puts most run times near the short end.
        let skew = self.rng.random::<f64>().powi(3);
        let running = self.scaled(10.0 + 590.0 * skew);

        vec![
            Phase::new(Status::Accepted, accepted),
            Phase::new(Status::Uploaded, uploaded),
            Phase::queued(queued, self.queue_start(queued)),
            Phase::new(Status::Running, running),
        ]
    }

    fn cancelled(&mut self, mut phases: Vec<Phase>) -> (Vec<Phase>, End) {
        let stage = self.rng.random_range(0..phases.len());
        phases.truncate(stage + 1);
        self.cut_last(&mut phases);
        (phases, End::Cancelled)
    }

    fn failed(&mut self, mut phases: Vec<Phase>) -> (Vec<Phase>, End) {
        let during_upload = self.rng.random_bool(0.25);
        let causes: &[(&str, &str, &str)] = if during_upload {
            phases.truncate(2);
            &UPLOAD_FAILURES
        } else {
            &RUN_FAILURES
        };
        self.cut_last(&mut phases);

        if self.rng.random_bool(0.1) {
            return (phases, End::FailedWithoutCause);
        }

        let (node_type, exception_type, message) = causes[self.rng.random_range(0..causes.len())];
        let end = End::Failed {
            node_type: Some(node_type.to_owned()),
            exception_type: Some(exception_type.to_owned()),
            message: message.to_owned(),
        };
        (phases, end)
    }

    /// Shortens the last phase to a random part of its length, because a
    /// cancellation or failure interrupts it.
    fn cut_last(&mut self, phases: &mut [Phase]) {
        let fraction = self.rng.random_range(0.1..1.0);
        if let Some(last) = phases.last_mut() {
            last.duration = scale(last.duration, fraction);
        }
    }

    /// Returns a queue position that reaches 1 at about the end of a queued
    /// phase of this length, with one step per snapshot interval.
    fn queue_start(&self, queued: Duration) -> u32 {
        if self.interval.is_zero() {
            return 1;
        }

        let steps = queued.as_secs_f64() / self.interval.as_secs_f64();
        steps.round().clamp(1.0, 99.0) as u32
    }

    fn seconds_between(&mut self, low: f64, high: f64) -> Duration {
        let seconds = self.rng.random_range(low..=high);
        self.scaled(seconds)
    }

    fn scaled(&self, seconds: f64) -> Duration {
        scale(Duration::from_secs(1), seconds * self.time_scale)
    }
}

/// Multiplies a duration by a non-negative factor, saturating at
/// `Duration::MAX` where `Duration::mul_f64` would panic.
fn scale(duration: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Creates a workflow id from random bytes of `rng`.
pub fn random_id(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> GeneratedWorkload {
        GeneratedWorkload {
            seed,
            mean_arrival: Duration::from_secs(5),
            time_scale: 1.0,
            initial: 0,
        }
    }

    fn generator(seed: u64) -> WorkflowGenerator {
        WorkflowGenerator::new(&config(seed), Duration::from_secs(2), Instant::now())
    }

    fn many(count: usize) -> Vec<ScriptedWorkflow> {
        let mut generator = generator(7);
        (0..count).map(|_| generator.workflow()).collect()
    }

    #[test]
    fn same_seed_same_workflows() {
        let first: Vec<_> = generator(3).initial(10);
        let second: Vec<_> = generator(3).initial(10);

        assert_eq!(first, second);
    }

    #[test]
    fn outcome_mix_near_targets() {
        let workflows = many(4000);
        let share = |matches: fn(&End) -> bool| {
            let count = workflows.iter().filter(|w| matches(&w.end)).count();
            count as f64 / workflows.len() as f64
        };

        let completed = share(|end| matches!(end, End::Completed { .. }));
        let failed = share(|end| matches!(end, End::Failed { .. } | End::FailedWithoutCause));
        let cancelled = share(|end| matches!(end, End::Cancelled));
        let invalid = share(|end| matches!(end, End::Invalid));

        assert!((0.67..0.77).contains(&completed), "completed {completed}");
        assert!((0.12..0.18).contains(&failed), "failed {failed}");
        assert!((0.06..0.10).contains(&cancelled), "cancelled {cancelled}");
        assert!((0.035..0.065).contains(&invalid), "invalid {invalid}");
    }

    #[test]
    fn phases_within_documented_ranges() {
        for workflow in many(500) {
            let full = matches!(workflow.end, End::Completed { .. });
            if !full {
                continue;
            }
            let seconds: Vec<f64> = workflow
                .phases
                .iter()
                .map(|phase| phase.duration.as_secs_f64())
                .collect();

            assert!((1.0..=3.0).contains(&seconds[0]), "accepted {}", seconds[0]);
            assert!((1.0..=3.0).contains(&seconds[1]), "uploaded {}", seconds[1]);
            assert!((5.0..=90.0).contains(&seconds[2]), "queued {}", seconds[2]);
            assert!(
                (10.0..=600.0).contains(&seconds[3]),
                "running {}",
                seconds[3]
            );
        }
    }

    #[test]
    fn invalid_follows_accepted_only() {
        for workflow in many(500) {
            if workflow.end == End::Invalid {
                assert_eq!(workflow.phases.len(), 1);
                assert_eq!(workflow.phases[0].status, Status::Accepted);
            }
        }
    }

    #[test]
    fn some_failures_during_upload() {
        let workflows = many(2000);
        let failed_in_upload = workflows.iter().filter(|workflow| {
            matches!(workflow.end, End::Failed { .. }) && workflow.phases.len() == 2
        });

        assert!(failed_in_upload.count() > 10);
    }

    #[test]
    fn time_scale_shortens_phases() {
        let mut scaled_config = config(7);
        scaled_config.time_scale = 0.1;
        let mut scaled =
            WorkflowGenerator::new(&scaled_config, Duration::from_secs(2), Instant::now());
        let mut normal = generator(7);

        let fast = scaled.workflow();
        let slow = normal.workflow();

        let first_fast = fast.phases[0].duration.as_secs_f64();
        let first_slow = slow.phases[0].duration.as_secs_f64();
        assert!((first_fast * 10.0 - first_slow).abs() < 1e-6);
    }

    #[test]
    fn initial_oldest_first() {
        let initial = generator(11).initial(30);

        let ages: Vec<Duration> = initial.iter().map(|(age, _)| *age).collect();
        let mut sorted = ages.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));

        assert_eq!(ages, sorted);
        assert!(ages.iter().all(|age| *age <= INITIAL_MAX_AGE));
    }

    #[test]
    fn arrivals_follow_mean_gap() {
        let start = Instant::now();
        let mut generator = WorkflowGenerator::new(&config(5), Duration::from_secs(2), start);

        let arrivals = generator.arrivals_until(start + Duration::from_secs(5000));

        assert!((800..1200).contains(&arrivals.len()), "{}", arrivals.len());
        assert!(arrivals.windows(2).all(|pair| pair[0].0 <= pair[1].0));
    }

    #[test]
    fn zero_mean_arrival_disables_arrivals() {
        let start = Instant::now();
        let mut no_arrivals = config(5);
        no_arrivals.mean_arrival = Duration::ZERO;
        let mut generator = WorkflowGenerator::new(&no_arrivals, Duration::from_secs(2), start);

        let arrivals = generator.arrivals_until(start + Duration::from_secs(5000));

        assert!(arrivals.is_empty());
    }
}
