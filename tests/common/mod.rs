//! Helpers shared by the integration tests: a simulator and an exporter on
//! free loopback ports, scrapes, and a finder for metric lines.

#![allow(dead_code)]

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use clap::Parser;
use comfycontrol_exporter::cli::Cli;
use comfycontrol_exporter::settings::Settings;
use comfycontrol_exporter::simulator::{self, SimulatorConfig, SimulatorHandle, Workload};
use comfycontrol_exporter::{exporter, simulator::ScriptedWorkflow};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Token the test simulators accept.
pub const TOKEN: &str = "cfc_test0token";

/// Interval between snapshots in tests: fast, but slow enough that a
/// loaded 2-core machine still reads every snapshot.
pub const INTERVAL: Duration = Duration::from_millis(25);

/// Maximum wait for a condition before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Builds a simulator config with the test token, the test interval and these workflows.
pub fn simulator_config(workflows: Vec<ScriptedWorkflow>) -> SimulatorConfig {
    SimulatorConfig {
        token: TOKEN.to_owned(),
        interval: INTERVAL,
        workload: Workload::Scripted(workflows),
        ..SimulatorConfig::default()
    }
}

pub async fn start_simulator(config: SimulatorConfig) -> SimulatorHandle {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind simulator");
    simulator::start(config, listener)
        .await
        .expect("start simulator")
}

/// An exporter running in this process against a simulator.
pub struct Exporter {
    pub url: String,
    pub token_file: tempfile::NamedTempFile,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Starts an exporter with the token in a file and the given flags. Unless
/// the flags set them, discovery is off, backoffs are short and the request
/// budget is large.
pub async fn start_exporter(api_url: &str, token: &str, flags: &[&str]) -> Exporter {
    let mut token_file = tempfile::NamedTempFile::new().expect("token file");
    token_file.write_all(token.as_bytes()).expect("write token");
    let token_path = token_file.path().to_str().expect("utf-8 path").to_owned();

    let defaults = [
        ("--discovery.interval", "0"),
        ("--api.backoff-min", "50ms"),
        ("--api.backoff-max", "400ms"),
        ("--api.rate-limit", "1000"),
    ];
    let mut argv = vec![
        "comfycontrol-exporter",
        "--api.url",
        api_url,
        "--api.token-file",
        &token_path,
    ];
    for (flag, value) in defaults {
        if !flags.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
    argv.extend_from_slice(flags);
    let cli = Cli::try_parse_from(argv).expect("test flags parse");
    let settings = Settings::from_args(&cli.exporter, None).expect("valid test settings");

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind exporter");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        exporter::run(settings, listener, shutdown)
            .await
            .expect("exporter runs");
    });

    Exporter {
        url,
        token_file,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Exporter {
    /// Replaces the token in the token file, as a secret rotation would.
    pub fn write_token(&self, token: &str) {
        std::fs::write(self.token_file.path(), token).expect("rewrite token file");
    }

    pub async fn scrape(&self) -> Scrape {
        let body = reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("scrape request")
            .text()
            .await
            .expect("scrape body");
        Scrape(body)
    }

    /// Scrapes until `condition` holds, failing the test after [`PATIENCE`]
    /// with the last scrape in the message.
    pub async fn wait_until(&self, what: &str, condition: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let scrape = self.scrape().await;
            if condition(&scrape) {
                return scrape;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; last scrape:\n{}", scrape.0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("exporter task ends cleanly");
        }
    }
}

/// The text of one scrape.
pub struct Scrape(pub String);

impl Scrape {
    /// Returns the value of the series with exactly these labels, if present.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .lines()
            .find_map(|line| parse_sample(line, name, labels))
    }

    /// The value of a series that must exist; a missing one fails the test
    /// with the scrape.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.value(name, labels) {
            Some(value) => value,
            None => panic!("no series {name}{labels:?} in scrape:\n{}", self.0),
        }
    }

    /// Sum of every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter_map(|line| parse_sample_subset(line, name, labels))
            .sum()
    }

    /// Checks whether any series of `name` carries these labels among others.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.0
            .lines()
            .any(|line| parse_sample_subset(line, name, labels).is_some())
    }
}

fn split_sample<'a>(line: &'a str, name: &str) -> Option<(Vec<(&'a str, &'a str)>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let rest = line.strip_prefix(name)?;
    let (labels, value) = match rest.strip_prefix('{') {
        Some(inner) => {
            let end = inner.find('}')?;
            (&inner[..end], inner[end + 1..].trim())
        }
        None if rest.starts_with(' ') => ("", rest.trim()),
        None => return None,
    };
    let pairs = labels
        .split(',')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key, value.trim_matches('"')))
        })
        .collect();
    Some((pairs, value.parse().ok()?))
}

fn parse_sample(line: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (pairs, value) = split_sample(line, name)?;
    let same = pairs.len() == labels.len() && labels.iter().all(|label| pairs.contains(label));
    same.then_some(value)
}

fn parse_sample_subset(line: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (pairs, value) = split_sample(line, name)?;
    labels
        .iter()
        .all(|label| pairs.contains(label))
        .then_some(value)
}

/// Polls `condition` every 20 ms until it is true or [`PATIENCE`] passes.
pub async fn eventually<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
