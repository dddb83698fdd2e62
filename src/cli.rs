//! Command-line flags, each with an environment variable.
//!
//! Flag names follow the Prometheus exporter conventions (`--web.*`,
//! `--log.*`) and group the API client's settings under `--api.*`. Parsing
//! happens in two stages: clap turns the command line into these raw values,
//! then [`crate::settings`] validates them into the settings the exporter
//! runs with, so that every start-up error names the flag and the fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::simulator::SimulateArgs;

/// The whole command line: exporter flags, or a subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "comfycontrol-exporter",
    version,
    about = "Prometheus exporter for ComfyControl workflows",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub exporter: ExporterArgs,
}

/// The subcommands beside the default, which runs the exporter.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a simulated ComfyControl API with a continuous workload.
    Simulate(SimulateArgs),

    /// Run the simulator and the exporter against it in one process
    /// (--api.url and --api.token-file are replaced by the simulator's).
    Demo(Box<DemoArgs>),
}

/// Flags of the `demo` subcommand. It takes every exporter flag, but
/// `--api.url` and the token come from its own simulator.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address of the demo's simulated API; port 0 picks a free port.
    #[arg(
        long = "simulator.listen",
        env = "COMFYCONTROL_DEMO_SIMULATOR_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    pub simulator_listen: SocketAddr,

    /// Factor applied to every duration of the simulated workload; the
    /// default makes workflows finish within seconds.
    #[arg(
        long = "simulator.time-scale",
        env = "COMFYCONTROL_DEMO_TIME_SCALE",
        default_value_t = 0.1
    )]
    pub time_scale: f64,

    /// Time between two snapshots on the simulated streams.
    #[arg(
        long = "simulator.interval",
        env = "COMFYCONTROL_DEMO_INTERVAL",
        default_value = "1s",
        value_parser = parse_duration
    )]
    pub interval: Duration,

    #[command(flatten)]
    pub exporter: ExporterArgs,
}

/// Flags of the exporter itself, shared by the default command and `demo`.
#[derive(Debug, Clone, Args)]
pub struct ExporterArgs {
    /// Base URL of the ComfyControl API.
    #[arg(
        long = "api.url",
        env = "COMFYCONTROL_API_URL",
        default_value = "https://api.comfycontrol.app"
    )]
    pub api_url: String,

    /// File with the API token, read at start and again before each retry
    /// after a 401, so a rotated secret is picked up without a restart.
    /// Without it the token comes from the COMFYCONTROL_TOKEN variable.
    #[arg(long = "api.token-file", env = "COMFYCONTROL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// API requests allowed per rate-limit window, all endpoints together.
    /// The API allows 40 per 10 s per client IP address.
    #[arg(
        long = "api.rate-limit",
        env = "COMFYCONTROL_API_RATE_LIMIT",
        default_value_t = 30
    )]
    pub rate_limit: u32,

    /// Length of the sliding rate-limit window.
    #[arg(
        long = "api.rate-limit-window",
        env = "COMFYCONTROL_API_RATE_LIMIT_WINDOW",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub rate_limit_window: Duration,

    /// Pause of all requests after a 429 that carries no Retry-After header.
    #[arg(
        long = "api.cooldown",
        env = "COMFYCONTROL_API_COOLDOWN",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub cooldown: Duration,

    /// Time allowed to open a connection to the API.
    #[arg(
        long = "api.connect-timeout",
        env = "COMFYCONTROL_API_CONNECT_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub connect_timeout: Duration,

    /// Time allowed for a whole list request, and for the response headers
    /// of a stream once its request is sent. A stream itself has no limit.
    #[arg(
        long = "api.request-timeout",
        env = "COMFYCONTROL_API_REQUEST_TIMEOUT",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub request_timeout: Duration,

    /// A stream that delivers no byte for this long is dropped and reopened.
    #[arg(
        long = "api.idle-timeout",
        env = "COMFYCONTROL_API_IDLE_TIMEOUT",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub idle_timeout: Duration,

    /// First delay before retrying after an error; it doubles up to
    /// --api.backoff-max, with jitter.
    #[arg(
        long = "api.backoff-min",
        env = "COMFYCONTROL_API_BACKOFF_MIN",
        default_value = "1s",
        value_parser = parse_duration
    )]
    pub backoff_min: Duration,

    /// Largest delay between retries after errors.
    #[arg(
        long = "api.backoff-max",
        env = "COMFYCONTROL_API_BACKOFF_MAX",
        default_value = "60s",
        value_parser = parse_duration
    )]
    pub backoff_max: Duration,

    /// Delay between retries while the API rejects the token with 401.
    #[arg(
        long = "api.unauthorized-retry",
        env = "COMFYCONTROL_API_UNAUTHORIZED_RETRY",
        default_value = "60s",
        value_parser = parse_duration
    )]
    pub unauthorized_retry: Duration,

    /// Events the API sends on one stream before it closes it; a stream
    /// that ends after this many is counted as reason "update_limit".
    #[arg(
        long = "sse.max-updates",
        env = "COMFYCONTROL_SSE_MAX_UPDATES",
        default_value_t = 120
    )]
    pub sse_max_updates: u32,

    /// Longest accepted line on a stream, in bytes; a longer line drops the
    /// connection.
    #[arg(
        long = "sse.max-line-bytes",
        env = "COMFYCONTROL_SSE_MAX_LINE_BYTES",
        default_value_t = 1024 * 1024
    )]
    pub sse_max_line_bytes: usize,

    /// Workflow id to watch; repeat the flag for more. The variable takes a
    /// comma-separated list.
    #[arg(
        long = "workflow",
        env = "COMFYCONTROL_WORKFLOWS",
        value_delimiter = ','
    )]
    pub workflows: Vec<String>,

    /// File with workflow ids to watch, one a line; blank lines and lines
    /// starting with # are skipped.
    #[arg(long = "workflow-file", env = "COMFYCONTROL_WORKFLOW_FILE")]
    pub workflow_file: Option<PathBuf>,

    /// Time between two polls of the workflow list for unfinished
    /// workflows; 0 turns discovery off.
    #[arg(
        long = "discovery.interval",
        env = "COMFYCONTROL_DISCOVERY_INTERVAL",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub discovery_interval: Duration,

    /// Workflows asked for per page of the list, 1 to 100.
    #[arg(
        long = "discovery.per-page",
        env = "COMFYCONTROL_DISCOVERY_PER_PAGE",
        default_value_t = 100
    )]
    pub discovery_per_page: u32,

    /// Maximum workflows watched at once; more wait for a free slot.
    #[arg(
        long = "max-tracked",
        env = "COMFYCONTROL_MAX_TRACKED",
        default_value_t = 10_000
    )]
    pub max_tracked: usize,

    /// Upper bounds in seconds of the queue-wait histogram buckets,
    /// comma-separated.
    #[arg(
        long = "metrics.queue-wait-buckets",
        env = "COMFYCONTROL_METRICS_QUEUE_WAIT_BUCKETS",
        value_delimiter = ',',
        default_value = "1,2.5,5,10,30,60,120,300,600,1200,1800,3600"
    )]
    pub queue_wait_buckets: Vec<f64>,

    /// Upper bounds in seconds of the run-duration histogram buckets,
    /// comma-separated.
    #[arg(
        long = "metrics.run-duration-buckets",
        env = "COMFYCONTROL_METRICS_RUN_DURATION_BUCKETS",
        value_delimiter = ',',
        default_value = "1,5,10,30,60,120,300,600,1200,1800,2700,3600"
    )]
    pub run_duration_buckets: Vec<f64>,

    /// Distinct (node_type, exception_type) pairs kept as label values;
    /// further pairs are counted as "other".
    #[arg(
        long = "metrics.max-failure-causes",
        env = "COMFYCONTROL_METRICS_MAX_FAILURE_CAUSES",
        default_value_t = 200
    )]
    pub max_failure_causes: usize,

    /// Address the metrics server listens on.
    #[arg(
        long = "web.listen-address",
        env = "COMFYCONTROL_WEB_LISTEN_ADDRESS",
        default_value = "0.0.0.0:9786"
    )]
    pub listen_address: SocketAddr,

    /// Path under which the metrics are served.
    #[arg(
        long = "web.telemetry-path",
        env = "COMFYCONTROL_WEB_TELEMETRY_PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Flags of the log output, shared by every command.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LogArgs {
    /// Minimum level of the log lines written.
    #[arg(
        long = "log.level",
        env = "COMFYCONTROL_LOG_LEVEL",
        value_enum,
        default_value_t = LogLevel::Info
    )]
    pub log_level: LogLevel,

    /// Log line format.
    #[arg(
        long = "log.format",
        env = "COMFYCONTROL_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Logfmt
    )]
    pub log_format: LogFormat,
}

/// Log levels accepted by `--log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Log line formats accepted by `--log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

/// Parses a duration such as `10s`, `500ms` or `1m30s`; a bare `0` is zero.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    if value.trim() == "0" {
        return Ok(Duration::ZERO);
    }

    humantime::parse_duration(value).map_err(|error| {
        format!("invalid duration {value:?}: {error} (use a unit, e.g. 10s or 500ms)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_accept_units_and_zero() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn defaults_parse_without_flags() {
        let cli = Cli::try_parse_from(["comfycontrol-exporter"]).expect("defaults parse");

        assert!(cli.command.is_none());
        assert_eq!(cli.exporter.rate_limit, 30);
        assert_eq!(cli.exporter.discovery_interval, Duration::from_secs(30));
        assert_eq!(cli.exporter.queue_wait_buckets.len(), 12);
    }

    #[test]
    fn workflow_flag_repeats() {
        let cli =
            Cli::try_parse_from(["x", "--workflow", "a", "--workflow", "b"]).expect("flags parse");

        assert_eq!(cli.exporter.workflows, ["a", "b"]);
    }
}
