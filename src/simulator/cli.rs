//! Flags of the `simulate` command.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::{GeneratedWorkload, SimulatorConfig, Workload};

/// Runs a local ComfyControl API simulator with a generated workload.
#[derive(Args, Clone, PartialEq)]
pub struct SimulateArgs {
    /// Address and port to listen on.
    #[arg(
        long,
        env = "COMFYCONTROL_SIMULATOR_LISTEN",
        default_value = "127.0.0.1:8731"
    )]
    pub listen: SocketAddr,

    /// The bearer token that clients must send.
    #[arg(
        long,
        env = "COMFYCONTROL_SIMULATOR_TOKEN",
        default_value = "cfc_simulator",
        hide_env_values = true
    )]
    pub token: String,

    /// Time between two events of a subscribe stream, such as 2s or 500ms.
    #[arg(long, env = "COMFYCONTROL_SIMULATOR_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Maximum number of events per subscribe connection, after which the
    /// server closes it.
    #[arg(
        long,
        env = "COMFYCONTROL_SIMULATOR_MAX_UPDATES",
        default_value_t = 120
    )]
    pub max_updates: u32,

    /// Maximum number of requests per client IP address in one rate limit
    /// window. 0 disables the limit.
    #[arg(long, env = "COMFYCONTROL_SIMULATOR_RATE_LIMIT", default_value_t = 40)]
    pub rate_limit: u32,

    /// Length of the sliding rate limit window, such as 10s.
    #[arg(long, env = "COMFYCONTROL_SIMULATOR_RATE_LIMIT_WINDOW", default_value = "10s", value_parser = humantime::parse_duration)]
    pub rate_limit_window: Duration,

    /// Time during which all requests of a client get 429 after it exceeded
    /// the rate limit, such as 10s.
    #[arg(long, env = "COMFYCONTROL_SIMULATOR_COOLDOWN", default_value = "10s", value_parser = humantime::parse_duration)]
    pub cooldown: Duration,

    /// Send a Retry-After header, in whole seconds, with 429 responses.
    #[arg(long, env = "COMFYCONTROL_SIMULATOR_RETRY_AFTER")]
    pub retry_after: bool,

    /// Mean time between two new workflows, such as 5s. 0s stops arrivals.
    #[arg(long, env = "COMFYCONTROL_SIMULATOR_ARRIVAL_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub arrival_interval: Duration,

    /// Factor applied to all workflow phase durations. 0.1 runs lifecycles
    /// ten times faster.
    #[arg(long, env = "COMFYCONTROL_SIMULATOR_TIME_SCALE", default_value_t = 1.0, value_parser = parse_time_scale)]
    pub time_scale: f64,

    /// Number of workflows that exist at start, at random stages.
    #[arg(
        long,
        env = "COMFYCONTROL_SIMULATOR_INITIAL_WORKFLOWS",
        default_value_t = 20
    )]
    pub initial_workflows: usize,

    /// Seed of the workload generator, random when absent. The same seed and
    /// interval give the same workflows.
    #[arg(long, env = "COMFYCONTROL_SIMULATOR_SEED")]
    pub seed: Option<u64>,

    #[command(flatten)]
    pub log: crate::cli::LogArgs,
}

impl SimulateArgs {
    /// Builds the simulator settings, drawing a random seed if none is set.
    pub fn config(&self) -> SimulatorConfig {
        let workload = GeneratedWorkload {
            seed: self.seed.unwrap_or_else(rand::random),
            mean_arrival: self.arrival_interval,
            time_scale: self.time_scale,
            initial: self.initial_workflows,
        };

        SimulatorConfig {
            token: self.token.clone(),
            interval: self.interval,
            max_updates: self.max_updates,
            rate_limit: self.rate_limit,
            rate_window: self.rate_limit_window,
            cooldown: self.cooldown,
            retry_after: self.retry_after,
            workload: Workload::Generated(workload),
        }
    }
}

impl fmt::Debug for SimulateArgs {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimulateArgs")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .field("interval", &self.interval)
            .field("max_updates", &self.max_updates)
            .field("rate_limit", &self.rate_limit)
            .field("rate_limit_window", &self.rate_limit_window)
            .field("cooldown", &self.cooldown)
            .field("retry_after", &self.retry_after)
            .field("arrival_interval", &self.arrival_interval)
            .field("time_scale", &self.time_scale)
            .field("initial_workflows", &self.initial_workflows)
            .field("seed", &self.seed)
            .finish()
    }
}

fn parse_time_scale(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(scale),
        _ => Err(format!(
            "invalid time scale '{value}': expected a positive number such as 0.1"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(flags: &[&str]) -> Result<SimulateArgs, clap::Error> {
        let argv = std::iter::once("simulate").chain(flags.iter().copied());
        Command::try_parse_from(argv).map(|command| command.args)
    }

    #[test]
    fn defaults_match_api_limits() {
        let config = parse(&[]).map(|args| args.config());

        let Ok(config) = config else {
            panic!("default flags rejected: {config:?}");
        };
        assert_eq!(config.token, "cfc_simulator");
        assert_eq!(config.interval, Duration::from_secs(2));
        assert_eq!(config.max_updates, 120);
        assert_eq!(config.rate_limit, 40);
        assert_eq!(config.rate_window, Duration::from_secs(10));
        assert_eq!(config.cooldown, Duration::from_secs(10));
        assert!(!config.retry_after);
    }

    #[test]
    fn flags_set_config() {
        let flags = [
            "--listen=127.0.0.1:0",
            "--interval=20ms",
            "--arrival-interval=1s",
            "--time-scale=0.1",
            "--initial-workflows=3",
            "--seed=9",
            "--retry-after",
        ];

        let args = parse(&flags).map_err(|error| error.to_string());

        let Ok(args) = args else {
            panic!("flags rejected: {args:?}");
        };
        let config = args.config();
        let Workload::Generated(generated) = config.workload else {
            panic!("simulate must use the generated workload");
        };
        assert_eq!(config.interval, Duration::from_millis(20));
        assert!(config.retry_after);
        assert_eq!(generated.seed, 9);
        assert_eq!(generated.mean_arrival, Duration::from_secs(1));
        assert_eq!(generated.time_scale, 0.1);
        assert_eq!(generated.initial, 3);
    }

    #[test]
    fn time_scale_must_be_positive() {
        for value in ["0", "-1", "NaN", "inf", "fast"] {
            let flag = format!("--time-scale={value}");
            assert!(parse(&[&flag]).is_err(), "time scale {value}");
        }
    }
}
