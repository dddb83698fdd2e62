//! Validation of the command line into the settings the exporter runs with.
//!
//! Every check names the flag, the value and the fix, and a failure exits
//! with status 2 before anything starts.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::Url;

use crate::cli::ExporterArgs;
use crate::client::ClientConfig;
use crate::discovery::DiscoveryConfig;
use crate::metrics::MetricsConfig;
use crate::token::{TokenError, TokenSource};
use crate::watcher::WatchConfig;

/// Everything the exporter needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub client: ClientConfig,
    pub watch: WatchConfig,
    pub metrics: MetricsConfig,
    /// Workflow ids given on the command line, normalised and deduplicated.
    pub workflows: Vec<String>,
    /// `None` when discovery is turned off.
    pub discovery: Option<DiscoveryConfig>,
    pub max_tracked: usize,
    pub listen_address: SocketAddr,
    pub telemetry_path: String,
}

/// An invalid flag value.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid {flag} {value:?}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },

    #[error("invalid workflow id {value:?}{location}: expected a UUID such as 3f2b8c1e-5d4a-4f6b-9c2d-1a2b3c4d5e6f")]
    WorkflowId { value: String, location: String },

    #[error("failed to read --workflow-file {path}: {source}")]
    WorkflowFile {
        path: String,
        source: std::io::Error,
    },

    #[error(transparent)]
    Token(#[from] TokenError),
}

fn invalid(flag: &'static str, value: impl ToString, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl Settings {
    /// Validates the flags; the token is taken from `token_variable` when no
    /// token file is given.
    pub fn from_args(
        args: &ExporterArgs,
        token_variable: Option<String>,
    ) -> Result<Settings, SettingsError> {
        let token = TokenSource::from_settings(args.token_file.clone(), token_variable)?;
        token.load()?;

        Ok(Settings {
            client: ClientConfig {
                base_url: parse_api_url(&args.api_url)?,
                token,
                connect_timeout: duration("--api.connect-timeout", args.connect_timeout)?,
                request_timeout: duration("--api.request-timeout", args.request_timeout)?,
                rate_limit: at_least_one("--api.rate-limit", args.rate_limit)?,
                rate_window: duration("--api.rate-limit-window", args.rate_limit_window)?,
                cooldown: duration("--api.cooldown", args.cooldown)?,
                unauthorized_retry: duration("--api.unauthorized-retry", args.unauthorized_retry)?,
            },
            watch: watch_config(args)?,
            metrics: MetricsConfig {
                queue_wait_buckets: buckets(
                    "--metrics.queue-wait-buckets",
                    &args.queue_wait_buckets,
                )?,
                run_duration_buckets: buckets(
                    "--metrics.run-duration-buckets",
                    &args.run_duration_buckets,
                )?,
                max_failure_causes: args.max_failure_causes,
            },
            workflows: workflow_ids(args)?,
            discovery: discovery_config(args)?,
            max_tracked: at_least_one("--max-tracked", args.max_tracked)?,
            listen_address: args.listen_address,
            telemetry_path: telemetry_path(&args.telemetry_path)?,
        })
    }
}

fn parse_api_url(value: &str) -> Result<Url, SettingsError> {
    let url = Url::parse(value).map_err(|error| {
        invalid(
            "--api.url",
            value,
            format!("{error} (expected e.g. https://api.comfycontrol.app)"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            "--api.url",
            value,
            "the scheme must be http or https",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("--api.url", value, "remove the query and fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // The value is not shown: it contains a credential.
        return Err(invalid(
            "--api.url",
            "(redacted)",
            "remove the user name and password; the token goes in --api.token-file",
        ));
    }
    Ok(url)
}

fn watch_config(args: &ExporterArgs) -> Result<WatchConfig, SettingsError> {
    if args.backoff_min > args.backoff_max {
        return Err(invalid(
            "--api.backoff-min",
            humantime::format_duration(args.backoff_min),
            "must not exceed --api.backoff-max",
        ));
    }
    if args.sse_max_line_bytes < 1024 {
        return Err(invalid(
            "--sse.max-line-bytes",
            args.sse_max_line_bytes,
            "must be at least 1024",
        ));
    }

    Ok(WatchConfig {
        max_updates: at_least_one("--sse.max-updates", args.sse_max_updates)?,
        max_line_bytes: args.sse_max_line_bytes,
        idle_timeout: duration("--api.idle-timeout", args.idle_timeout)?,
        backoff_min: duration("--api.backoff-min", args.backoff_min)?,
        backoff_max: duration("--api.backoff-max", args.backoff_max)?,
    })
}

fn discovery_config(args: &ExporterArgs) -> Result<Option<DiscoveryConfig>, SettingsError> {
    if args.discovery_interval.is_zero() {
        return Ok(None);
    }
    let interval = duration("--discovery.interval", args.discovery_interval)?;
    if interval < MIN_DISCOVERY_INTERVAL {
        return Err(invalid(
            "--discovery.interval",
            humantime::format_duration(interval),
            "must be 0 (off) or at least 100ms",
        ));
    }
    if !(1..=100).contains(&args.discovery_per_page) {
        return Err(invalid(
            "--discovery.per-page",
            args.discovery_per_page,
            "must be from 1 to 100",
        ));
    }
    Ok(Some(DiscoveryConfig {
        interval,
        per_page: args.discovery_per_page,
    }))
}

fn workflow_ids(args: &ExporterArgs) -> Result<Vec<String>, SettingsError> {
    let mut ids = Vec::new();
    for value in &args.workflows {
        ids.push(parse_workflow_id(value, "")?);
    }
    if let Some(path) = &args.workflow_file {
        ids.extend(read_workflow_file(path)?);
    }

    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    Ok(ids)
}

fn read_workflow_file(path: &Path) -> Result<Vec<String>, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::WorkflowFile {
        path: path.display().to_string(),
        source,
    })?;

    let mut ids = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let location = format!(" in {} line {}", path.display(), index + 1);
        ids.push(parse_workflow_id(line, &location)?);
    }
    Ok(ids)
}

/// Parses a UUID and returns it in the API's lowercase hyphenated form.
fn parse_workflow_id(value: &str, location: &str) -> Result<String, SettingsError> {
    let trimmed = value.trim();
    let valid = trimmed.len() == 36 && uuid::Uuid::parse_str(trimmed).is_ok();
    if !valid {
        return Err(SettingsError::WorkflowId {
            value: value.to_owned(),
            location: location.to_owned(),
        });
    }
    Ok(trimmed.to_ascii_lowercase())
}

fn telemetry_path(value: &str) -> Result<String, SettingsError> {
    if !value.starts_with('/') || value == "/" || value.starts_with("/-/") {
        return Err(invalid(
            "--web.telemetry-path",
            value,
            "must start with / and must not be / or under /-/",
        ));
    }
    Ok(value.to_owned())
}

fn buckets(flag: &'static str, values: &[f64]) -> Result<Vec<f64>, SettingsError> {
    let listed = || {
        values
            .iter()
            .map(f64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if values.is_empty() {
        return Err(invalid(flag, listed(), "give at least one bucket bound"));
    }
    let ascending = values.windows(2).all(|pair| pair[0] < pair[1]);
    let finite_positive = values.iter().all(|bound| bound.is_finite() && *bound > 0.0);
    if !ascending || !finite_positive {
        return Err(invalid(
            flag,
            listed(),
            "bounds must be positive seconds in increasing order",
        ));
    }
    Ok(values.to_vec())
}

/// Maximum duration any flag accepts. Longer ones are mistakes and would
/// overflow the clock arithmetic.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Shortest discovery interval: a shorter one only spends the request budget.
const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_millis(100);

/// Checks that a duration flag is above zero and at most a day.
fn duration(flag: &'static str, value: Duration) -> Result<Duration, SettingsError> {
    let shown = humantime::format_duration(value);
    if value.is_zero() {
        return Err(invalid(flag, "0", "must be greater than zero"));
    }
    if value > MAX_DURATION {
        return Err(invalid(flag, shown, "must be at most 24h"));
    }
    Ok(value)
}

fn at_least_one<T: PartialOrd + From<u8> + ToString>(
    flag: &'static str,
    value: T,
) -> Result<T, SettingsError> {
    if value < T::from(1) {
        return Err(invalid(flag, value, "must be at least 1"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn settings(flags: &[&str]) -> Result<Settings, SettingsError> {
        let mut argv = vec!["comfycontrol-exporter"];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).expect("flags parse");
        Settings::from_args(&cli.exporter, Some("cfc_test".into()))
    }

    #[test]
    fn defaults_are_valid() {
        let settings = settings(&[]).expect("valid defaults");

        assert_eq!(settings.telemetry_path, "/metrics");
        assert!(settings.discovery.is_some());
        assert!(settings.workflows.is_empty());
    }

    #[test]
    fn workflow_ids_are_normalised_and_deduplicated() {
        let id = "3F2B8C1E-5D4A-4F6B-9C2D-1A2B3C4D5E6F";

        let settings =
            settings(&["--workflow", id, "--workflow", &id.to_lowercase()]).expect("valid");

        assert_eq!(settings.workflows, [id.to_lowercase()]);
    }

    #[test]
    fn malformed_workflow_id_is_named() {
        let error = settings(&["--workflow", "not-a-uuid"]).expect_err("invalid id");

        assert!(error.to_string().contains("\"not-a-uuid\""), "{error}");
    }

    #[test]
    fn workflow_file_errors_name_the_line() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let good = "3f2b8c1e-5d4a-4f6b-9c2d-1a2b3c4d5e6f";
        std::fs::write(file.path(), format!("# watched\n{good}\n\nbad-id\n")).expect("write");
        let path = file.path().to_str().expect("utf-8 path");

        let error = settings(&["--workflow-file", path]).expect_err("invalid line");

        assert!(error.to_string().contains("line 4"), "{error}");
    }

    #[test]
    fn discovery_zero_turns_it_off() {
        let settings = settings(&["--discovery.interval", "0"]).expect("valid");

        assert!(settings.discovery.is_none());
    }

    #[test]
    fn invalid_values_name_their_flag() {
        let cases: [&[&str]; 11] = [
            &["--api.cooldown", "0"],
            &["--api.connect-timeout", "48h"],
            &["--discovery.interval", "1ns"],
            &["--api.url", "http://user:secret@127.0.0.1:1"],
            &["--api.url", "ftp://example.invalid"],
            &["--api.rate-limit", "0"],
            &["--discovery.per-page", "101"],
            &["--metrics.queue-wait-buckets", "5,1"],
            &["--web.telemetry-path", "metrics"],
            &["--api.backoff-min", "2m", "--api.backoff-max", "1m"],
            &["--max-tracked", "0"],
        ];

        for flags in cases {
            let error = settings(flags).expect_err(flags[0]);
            assert!(error.to_string().contains(flags[0]), "{error}");
        }
    }

    #[test]
    fn url_credentials_are_not_echoed() {
        let error =
            settings(&["--api.url", "http://user:s3cret@127.0.0.1:1"]).expect_err("rejected");

        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn missing_token_says_where_to_put_it() {
        let cli = Cli::try_parse_from(["comfycontrol-exporter"]).expect("flags parse");

        let error = Settings::from_args(&cli.exporter, None).expect_err("no token");

        assert!(error.to_string().contains("COMFYCONTROL_TOKEN"), "{error}");
        assert!(error.to_string().contains("--api.token-file"), "{error}");
    }
}
