//! Footprint of the exporter with 1,000 workflows in flight: peak RSS, CPU
//! time per 1,000 snapshots and `/metrics` render time.
//!
//! The simulator runs in this process. The exporter runs as a child process,
//! the binary cargo built for this profile, so that `/proc/<pid>` shows its
//! memory and CPU alone. Each subscribe connection lasts 120 events of 250 ms,
//! so 1,000 streams send 1,000 subscribe requests every 30 s, far more than
//! the API's 40 requests per 10 s. The simulator's and the exporter's rate
//! limits are therefore raised to 1,000,000 per 10 s. All streams open within
//! the warm-up, so they also reconnect together, once every 30 s.
//!
//! `cargo bench --bench footprint` measures 30 s after a warm-up that ends
//! once the exporter has received a snapshot of every workflow.
//! `FOOTPRINT_SECONDS` sets the measured time. Started without `--bench`, as
//! `cargo test --all-targets` starts it, the bench makes a short run with 20
//! workflows, which checks that it still works. It prints figures and asserts
//! nothing about them.

use std::error::Error;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use comfycontrol_exporter::board::Board;
use comfycontrol_exporter::change::Change;
use comfycontrol_exporter::cli::Cli;
use comfycontrol_exporter::metrics::{Metrics, MetricsConfig};
use comfycontrol_exporter::simulator::{
    self, End, Phase, ScriptedWorkflow, SimulatorConfig, SimulatorHandle, Workload,
};
use comfycontrol_exporter::status::Status;
use tempfile::NamedTempFile;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use uuid::Uuid;

type BenchResult<T> = Result<T, Box<dyn Error>>;

/// Bearer token that the simulator accepts and the exporter sends.
const TOKEN: &str = "cfc_footprint";

/// Time between two snapshots of one stream.
const INTERVAL: Duration = Duration::from_millis(250);

/// Events per subscribe connection, as the API documents.
const MAX_UPDATES: u32 = 120;

/// Requests per 10 s window allowed by both rate limits.
const RATE_LIMIT: u32 = 1_000_000;

/// Maximum time for the exporter to start and report every workflow.
const WARM_UP_LIMIT: Duration = Duration::from_secs(90);

/// Time between two scrapes while waiting for the warm-up to end.
const WARM_UP_POLL: Duration = Duration::from_millis(200);

/// Time the scripted timelines last beyond the warm-up limit and the
/// measured period, to cover the render timing at the end.
const TIMELINE_MARGIN: Duration = Duration::from_secs(60);

/// Starting queue position of the workflows that stay queued. It falls by
/// one per snapshot interval, so it stays above 1 for more than 40 minutes.
const LONG_QUEUE_START: u32 = 10_000;

/// Size and length of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    workflows: usize,
    measured: Duration,
    render_samples: usize,
}

impl Plan {
    /// The run for `cargo test`: small and short.
    const SMOKE: Plan = Plan {
        workflows: 20,
        measured: Duration::from_secs(2),
        render_samples: 5,
    };

    /// Chooses the full run when cargo passes `--bench`, and the smoke run
    /// otherwise.
    fn from_environment() -> BenchResult<Plan> {
        if !std::env::args().any(|arg| arg == "--bench") {
            return Ok(Plan::SMOKE);
        }

        Ok(Plan {
            workflows: 1_000,
            measured: measured_time()?,
            render_samples: 50,
        })
    }

    /// Returns the time the scripted workflows must stay in flight.
    fn timeline_length(&self) -> Duration {
        WARM_UP_LIMIT + self.measured + TIMELINE_MARGIN
    }
}

/// Reads the measured time from `FOOTPRINT_SECONDS`, 30 s when it is not set.
fn measured_time() -> BenchResult<Duration> {
    let Ok(text) = std::env::var("FOOTPRINT_SECONDS") else {
        return Ok(Duration::from_secs(30));
    };

    match text.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(format!(
            "invalid FOOTPRINT_SECONDS {text:?}: expected a whole number of seconds, at least 1"
        )
        .into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("footprint bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> BenchResult<()> {
    let plan = Plan::from_environment()?;
    let ticks_per_second = clock_ticks_per_second()?;
    let http = reqwest::Client::new();

    let workflows = scripted_workflows(plan.workflows, plan.timeline_length());
    let ids: Vec<Uuid> = workflows.iter().map(|workflow| workflow.id).collect();
    let simulator = start_simulator(workflows).await?;
    let mut exporter = ExporterProcess::spawn(&simulator.base_url(), &ids)?;

    let warm_up = exporter.warm_up(&http, plan.workflows).await?;
    let period = exporter
        .measure(&http, plan.measured, ticks_per_second)
        .await?;
    let identity = time_scrapes(&http, &exporter.metrics_url, plan.render_samples, false).await?;
    let gzip = time_scrapes(&http, &exporter.metrics_url, plan.render_samples, true).await?;

    exporter.stop().await;
    simulator.shutdown().await;
    let in_process = time_render_in_process(plan.workflows, plan.render_samples)?;

    print_report(&plan, warm_up, &period, &[identity, gzip, in_process]);
    Ok(())
}

/// Builds `count` workflows that stay in flight for at least `length`.
///
/// Every tenth workflow stays uploaded and the next one stays queued with a
/// falling queue position. The rest alternate between queued and running,
/// so status transitions and queue moves happen all through the run.
fn scripted_workflows(count: usize, length: Duration) -> Vec<ScriptedWorkflow> {
    (0..count)
        .map(|index| {
            let phases = match index % 10 {
                0 => vec![
                    Phase::new(simulator::Status::Accepted, Duration::from_secs(1)),
                    Phase::new(simulator::Status::Uploaded, length),
                ],
                1 => vec![
                    Phase::new(simulator::Status::Accepted, Duration::from_secs(1)),
                    Phase::queued(length, LONG_QUEUE_START),
                ],
                _ => alternating_phases(index as u64, length),
            };
            ScriptedWorkflow::new(format!("footprint-{index}"), phases, End::Never)
        })
        .collect()
}

/// Phases that go from accepted through uploaded into cycles of queued and
/// running, with lengths that vary by `index` so the transitions spread out.
fn alternating_phases(index: u64, length: Duration) -> Vec<Phase> {
    let accepted = Duration::from_secs(1 + index % 3);
    let queued = Duration::from_secs(3 + index % 5);
    let running = Duration::from_secs(5 + index % 7);
    let first_position = 1 + (index % 24) as u32;

    let mut phases = vec![
        Phase::new(simulator::Status::Accepted, accepted),
        Phase::new(simulator::Status::Uploaded, Duration::from_secs(1)),
    ];
    let mut covered = accepted;
    while covered < length {
        phases.push(Phase::queued(queued, first_position));
        phases.push(Phase::new(simulator::Status::Running, running));
        covered += queued + running;
    }
    phases
}

async fn start_simulator(workflows: Vec<ScriptedWorkflow>) -> BenchResult<SimulatorHandle> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let config = SimulatorConfig {
        token: TOKEN.to_owned(),
        interval: INTERVAL,
        max_updates: MAX_UPDATES,
        rate_limit: RATE_LIMIT,
        workload: Workload::Scripted(workflows),
        ..SimulatorConfig::default()
    };

    let handle = simulator::start(config, listener)
        .await
        .map_err(|error| format!("failed to start the simulator: {error}"))?;
    Ok(handle)
}

/// The exporter's counters and gauges that the bench reads from a scrape.
#[derive(Debug, Clone, Copy, Default)]
struct ScrapedValues {
    /// Workflows with a known status, the sum of `comfycontrol_workflows`.
    /// Without discovery, a workflow has one only after its first snapshot.
    reported_workflows: f64,
    snapshots: f64,
    update_limit_reconnects: f64,
    other_reconnects: f64,
}

impl ScrapedValues {
    fn parse(body: &[u8]) -> ScrapedValues {
        let body = String::from_utf8_lossy(body);
        let value = |series: &str| metric_value(&body, series).unwrap_or(0.0);

        ScrapedValues {
            reported_workflows: family_sum(&body, "comfycontrol_workflows"),
            snapshots: value("comfycontrol_sse_events_total"),
            update_limit_reconnects: value(
                "comfycontrol_sse_reconnects_total{reason=\"update_limit\"}",
            ),
            other_reconnects: value("comfycontrol_sse_reconnects_total{reason=\"disconnected\"}")
                + value("comfycontrol_sse_reconnects_total{reason=\"error\"}"),
        }
    }

    /// Returns whether a snapshot of every workflow has arrived.
    fn warmed_up(&self, workflows: usize) -> bool {
        self.reported_workflows >= workflows as f64
    }
}

/// Adds up the values of every series of the family `name`.
fn family_sum(body: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{");
    body.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| rest.rsplit_once(' '))
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// Returns the value of `series`, which must be written as the text format
/// writes it, with labels sorted by name.
fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Readings over the measured period.
#[derive(Debug)]
struct Period {
    wall: Duration,
    cpu: CpuTime,
    snapshots: f64,
    update_limit_reconnects: f64,
    other_reconnects: f64,
    peak_rss_kib: u64,
    rss_kib: u64,
}

/// The exporter child process. Dropping it kills the process.
struct ExporterProcess {
    child: Child,
    pid: u32,
    metrics_url: String,
    /// The temporary file of workflow ids. It is deleted on drop, so it
    /// exists until the exporter has read it at start.
    _workflow_file: NamedTempFile,
}

impl ExporterProcess {
    /// Starts the exporter binary against `api_url`, watching `ids`, with
    /// logs at warn on this process's standard error.
    fn spawn(api_url: &str, ids: &[Uuid]) -> BenchResult<ExporterProcess> {
        let workflow_file = write_workflow_file(ids)?;
        let address = free_loopback_address()?;

        let mut command = Command::new(env!("CARGO_BIN_EXE_comfycontrol-exporter"));
        remove_exporter_variables(&mut command);
        command
            .arg("--api.url")
            .arg(api_url)
            .arg("--api.rate-limit")
            .arg(RATE_LIMIT.to_string())
            .arg("--sse.max-updates")
            .arg(MAX_UPDATES.to_string())
            .arg("--workflow-file")
            .arg(workflow_file.path())
            .args(["--discovery.interval", "0", "--log.level", "warn"])
            .arg("--web.listen-address")
            .arg(address.to_string())
            .env("COMFYCONTROL_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);

        let child = command
            .spawn()
            .map_err(|error| format!("failed to start the exporter binary: {error}"))?;
        let pid = child
            .id()
            .ok_or("the exporter exited right after its start")?;

        Ok(ExporterProcess {
            child,
            pid,
            metrics_url: format!("http://{address}/metrics"),
            _workflow_file: workflow_file,
        })
    }

    /// Scrapes until a snapshot of every workflow has arrived and returns
    /// how long that took.
    async fn warm_up(&mut self, http: &reqwest::Client, workflows: usize) -> BenchResult<Duration> {
        let start = Instant::now();

        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("the exporter exited during the warm-up with {status}").into());
            }
            // Connection errors are expected until the exporter listens.
            if let Ok(body) = scrape(http, &self.metrics_url, false).await {
                if ScrapedValues::parse(&body).warmed_up(workflows) {
                    return Ok(start.elapsed());
                }
            }
            if start.elapsed() > WARM_UP_LIMIT {
                return Err(format!(
                    "timed out after {WARM_UP_LIMIT:?} waiting for a snapshot of each of \
                     {workflows} workflows; check the exporter's log above"
                )
                .into());
            }
            tokio::time::sleep(WARM_UP_POLL).await;
        }
    }

    /// Reads CPU time and counters, waits `measured` and reads them again.
    /// The snapshot count spans the CPU reading and the two scrapes around
    /// it, a few milliseconds more.
    async fn measure(
        &self,
        http: &reqwest::Client,
        measured: Duration,
        ticks_per_second: u64,
    ) -> BenchResult<Period> {
        let before = ScrapedValues::parse(&scrape(http, &self.metrics_url, false).await?);
        let cpu_before = CpuTime::read(self.pid, ticks_per_second)?;
        let start = Instant::now();

        tokio::time::sleep(measured).await;

        let cpu_after = CpuTime::read(self.pid, ticks_per_second)?;
        let wall = start.elapsed();
        let after = ScrapedValues::parse(&scrape(http, &self.metrics_url, false).await?);

        Ok(Period {
            wall,
            cpu: cpu_after.since(cpu_before),
            snapshots: after.snapshots - before.snapshots,
            update_limit_reconnects: after.update_limit_reconnects - before.update_limit_reconnects,
            other_reconnects: after.other_reconnects - before.other_reconnects,
            peak_rss_kib: status_kib(self.pid, "VmHWM")?,
            rss_kib: status_kib(self.pid, "VmRSS")?,
        })
    }

    async fn stop(mut self) {
        if let Err(error) = self.child.kill().await {
            eprintln!("failed to stop the exporter (pid {}): {error}", self.pid);
        }
    }
}

fn write_workflow_file(ids: &[Uuid]) -> BenchResult<NamedTempFile> {
    let mut file = NamedTempFile::new()?;
    for id in ids {
        writeln!(file, "{id}")?;
    }
    file.flush()?;
    Ok(file)
}

/// Returns a loopback address with a port that was free a moment ago.
///
/// NOTE: Another process may take the port before the exporter binds it.
/// The exporter then exits and the warm-up reports it.
fn free_loopback_address() -> BenchResult<SocketAddr> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

/// Removes `COMFYCONTROL_*` variables inherited from this process, so that
/// only the flags and the token that `ExporterProcess::spawn` sets configure
/// the exporter.
fn remove_exporter_variables(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COMFYCONTROL_") {
            command.env_remove(name);
        }
    }
}

async fn scrape(http: &reqwest::Client, url: &str, gzip: bool) -> BenchResult<Bytes> {
    let mut request = http.get(url);
    if gzip {
        request = request.header(reqwest::header::ACCEPT_ENCODING, "gzip");
    }

    let response = request.send().await?.error_for_status()?;
    Ok(response.bytes().await?)
}

/// Runs `getconf CLK_TCK` and returns the clock ticks per second, the unit of
/// the CPU times in `/proc/<pid>/stat`.
fn clock_ticks_per_second() -> BenchResult<u64> {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .map_err(|error| format!("failed to run getconf CLK_TCK: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);

    match text.trim().parse::<u64>() {
        Ok(ticks) if ticks > 0 => Ok(ticks),
        _ => Err(format!("invalid output of getconf CLK_TCK: {text:?}").into()),
    }
}

/// CPU time of a process, in user and in kernel (system) mode.
#[derive(Debug, Clone, Copy)]
struct CpuTime {
    user: Duration,
    system: Duration,
}

impl CpuTime {
    /// Reads the CPU time of `pid` from `/proc/<pid>/stat`, whose fields 14
    /// (utime) and 15 (stime) count clock ticks, as proc(5) documents.
    fn read(pid: u32, ticks_per_second: u64) -> BenchResult<CpuTime> {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path)?;

        // The command name in field 2 may contain spaces, so fields are
        // counted after its closing bracket, where field 3 is the first.
        let (_, fields) = stat
            .rsplit_once(')')
            .ok_or_else(|| format!("invalid {path}: no closing bracket after the command name"))?;
        let fields: Vec<&str> = fields.split_whitespace().collect();
        let field = |number: usize| -> BenchResult<Duration> {
            let text = fields
                .get(number - 3)
                .ok_or_else(|| format!("invalid {path}: field {number} missing"))?;
            let ticks: u64 = text.parse()?;
            Ok(Duration::from_secs_f64(
                ticks as f64 / ticks_per_second as f64,
            ))
        };

        Ok(CpuTime {
            user: field(14)?,
            system: field(15)?,
        })
    }

    /// Returns the CPU time spent after `earlier`.
    fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    fn total(self) -> Duration {
        self.user + self.system
    }
}

/// Reads a `kB` field such as `VmHWM` from `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> BenchResult<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)?;
    let prefix = format!("{field}:");

    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .ok_or_else(|| format!("field {field} not found in {path}"))?;
    let number = line.trim().trim_end_matches("kB").trim();
    Ok(number.parse()?)
}

/// Durations of repeated renders and the size of the last body.
struct RenderTimes {
    label: &'static str,
    durations: Vec<Duration>,
    body_bytes: usize,
}

impl RenderTimes {
    /// Formats the minimum, median and maximum time and the body size.
    fn summary(&self) -> String {
        let mut sorted = self.durations.clone();
        sorted.sort();
        let min = sorted.first().copied().unwrap_or_default();
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
        let max = sorted.last().copied().unwrap_or_default();

        format!(
            "min {:.2} ms, median {:.2} ms, max {:.2} ms, {:.1} KiB",
            milliseconds(min),
            milliseconds(median),
            milliseconds(max),
            self.body_bytes as f64 / 1024.0,
        )
    }
}

/// Times `samples` sequential GETs of the metrics over one keep-alive
/// connection, with or without `Accept-Encoding: gzip`.
async fn time_scrapes(
    http: &reqwest::Client,
    url: &str,
    samples: usize,
    gzip: bool,
) -> BenchResult<RenderTimes> {
    let mut times = RenderTimes {
        label: if gzip {
            "GET /metrics, gzip"
        } else {
            "GET /metrics, identity"
        },
        durations: Vec::with_capacity(samples),
        body_bytes: 0,
    };

    for _ in 0..samples {
        let start = Instant::now();
        let body = scrape(http, url, gzip).await?;
        times.durations.push(start.elapsed());
        times.body_bytes = body.len();
    }
    Ok(times)
}

/// Times the work of a scrape without HTTP: the status summary from a board
/// of `workflows` queued workflows and `Metrics::render` with one
/// queue-position series per workflow, using the exporter's default buckets.
fn time_render_in_process(workflows: usize, samples: usize) -> BenchResult<RenderTimes> {
    let defaults = Cli::try_parse_from(["comfycontrol-exporter"])?.exporter;
    let metrics = Metrics::new(&MetricsConfig {
        queue_wait_buckets: defaults.queue_wait_buckets,
        run_duration_buckets: defaults.run_duration_buckets,
        max_failure_causes: defaults.max_failure_causes,
    })?;
    let board = Board::default();

    let since = tokio::time::Instant::now();
    for position in 1..=workflows {
        let id = Uuid::new_v4().to_string();
        metrics.apply(&id, &[Change::QueuePosition(Some(position as i64))]);
        board.set(&id, Status::Queued, since);
    }

    let mut times = RenderTimes {
        label: "summary + render, no HTTP",
        durations: Vec::with_capacity(samples),
        body_bytes: 0,
    };
    for _ in 0..samples {
        let start = Instant::now();
        metrics.set_status_summary(&board.summary(tokio::time::Instant::now()));
        let body = metrics.render();
        times.durations.push(start.elapsed());
        times.body_bytes = body.len();
    }
    Ok(times)
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn mebibytes(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_report(plan: &Plan, warm_up: Duration, period: &Period, renders: &[RenderTimes]) {
    let wall = period.wall.as_secs_f64();
    let cpu = period.cpu.total().as_secs_f64();

    println!(
        "footprint: {} workflows, snapshot interval {} ms, {} events per connection",
        plan.workflows,
        INTERVAL.as_millis(),
        MAX_UPDATES,
    );
    println!(
        "{:<40} {:.1} s",
        "warm-up until every workflow reported",
        warm_up.as_secs_f64()
    );
    println!("{:<40} {wall:.1} s", "measured period");
    println!(
        "{:<40} {:.1} MiB",
        "exporter peak RSS (VmHWM)",
        mebibytes(period.peak_rss_kib)
    );
    println!(
        "{:<40} {:.1} MiB",
        "exporter RSS at end (VmRSS)",
        mebibytes(period.rss_kib)
    );
    println!(
        "{:<40} {:.0} ({:.0} per second)",
        "snapshots received",
        period.snapshots,
        period.snapshots / wall,
    );
    println!(
        "{:<40} {cpu:.2} s = {:.2} s user + {:.2} s system ({:.1} % of one core)",
        "exporter CPU time",
        period.cpu.user.as_secs_f64(),
        period.cpu.system.as_secs_f64(),
        100.0 * cpu / wall,
    );
    if period.snapshots > 0.0 {
        let per_thousand = cpu / (period.snapshots / 1000.0);
        println!(
            "{:<40} {:.1} ms",
            "exporter CPU per 1,000 snapshots",
            per_thousand * 1000.0
        );
    }
    println!(
        "{:<40} {:.0} at the update limit, {:.0} other",
        "reconnects", period.update_limit_reconnects, period.other_reconnects,
    );
    for render in renders {
        println!(
            "{:<40} {}",
            format!("{} ({}x)", render.label, render.durations.len()),
            render.summary(),
        );
    }
}
