//! Checks that the deployment files start the exporter the way its command
//! line accepts it.
//!
//! The Kubernetes Deployment, the compose services and the systemd unit pass
//! flags and environment variables to the binary. Each set is parsed with
//! the exporter's own clap definition, so a renamed flag or an invalid value
//! fails here instead of in a crash-looping pod. The files must also agree
//! on port 9786 and on the exporter's paths.
//!
//! The files are read line by line instead of with a YAML parser, which
//! the crate does not depend on. The readers below understand the block
//! lists and mappings these files use, and every test asserts that it found
//! what it looks for, so a layout they cannot read fails instead of passing.

use std::net::SocketAddr;
use std::path::Path;

use clap::{ArgMatches, CommandFactory};
use comfycontrol_exporter::cli::Cli;

const PORT: u16 = 9786;
const TELEMETRY_PATH: &str = "/metrics";
const HEALTHY_PATH: &str = "/-/healthy";
const READY_PATH: &str = "/-/ready";

/// The token variable is read by the settings, not by clap.
const TOKEN_VARIABLE: &str = "COMFYCONTROL_TOKEN";

fn read_repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// Returns the indentation of a line in spaces.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Returns whether a line opens the block of `key`: `key:`, `- key:` as the
/// first key of a list item, or `key: &anchor`.
fn opens_block(line: &str, key: &str) -> bool {
    let content = line.trim().strip_prefix("- ").unwrap_or(line.trim());
    let Some(rest) = content
        .strip_prefix(key)
        .and_then(|rest| rest.strip_prefix(':'))
    else {
        return false;
    };
    rest.is_empty() || rest.trim_start().starts_with('&')
}

/// Returns the lines nested under the first line that opens the block of
/// `key`, without that line. Comment and blank lines are left out.
fn block<'a>(lines: &[&'a str], key: &str) -> Vec<&'a str> {
    let start = lines
        .iter()
        .position(|line| opens_block(line, key))
        .unwrap_or_else(|| panic!("no block {key:?} found"));
    let key_indent = indent(lines[start]);

    lines[start + 1..]
        .iter()
        .take_while(|line| line.trim().is_empty() || indent(line) > key_indent)
        .copied()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .collect()
}

/// Returns the items of a block list such as the one under `args:`.
fn list_items(block: &[&str]) -> Vec<String> {
    let Some(first) = block.first() else {
        return Vec::new();
    };
    let item_indent = indent(first);

    block
        .iter()
        .filter(|line| indent(line) == item_indent)
        .filter_map(|line| line.trim().strip_prefix("- "))
        .map(unquote)
        .collect()
}

/// Returns the `key: value` pairs at the top level of a block mapping.
fn mapping(block: &[&str]) -> Vec<(String, String)> {
    let Some(first) = block.first() else {
        return Vec::new();
    };
    let key_indent = indent(first);

    block
        .iter()
        .filter(|line| indent(line) == key_indent)
        .filter_map(|line| line.trim().split_once(": "))
        .map(|(key, value)| (key.to_owned(), unquote(value)))
        .collect()
}

/// Returns the value of the first `key: value` line in the lines.
fn scalar(lines: &[&str], key: &str) -> String {
    let prefix = format!("{key}: ");
    lines
        .iter()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .map(unquote)
        .unwrap_or_else(|| panic!("no line {prefix:?} found"))
}

fn unquote(value: &str) -> String {
    value.trim().trim_matches('"').trim_matches('\'').to_owned()
}

/// Parses an argument list with the exporter's clap definition.
fn parse(args: &[String]) -> Result<ArgMatches, String> {
    let argv = std::iter::once("comfycontrol-exporter".to_owned()).chain(args.iter().cloned());
    Cli::command()
        .try_get_matches_from(argv)
        .map_err(|error| error.render().to_string())
}

/// Parses an argument list and panics with clap's message when it fails.
fn parse_or_panic(file: &str, args: &[String]) -> ArgMatches {
    parse(args).unwrap_or_else(|error| panic!("{file}: arguments {args:?} rejected:\n{error}"))
}

/// Returns the matches of the flags that configure the exporter, taken from
/// the `demo` subcommand when it is used and from the top level otherwise.
fn exporter_matches(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some(("demo", demo)) => demo,
        Some((name, _)) => panic!("subcommand {name:?} does not run the exporter"),
        None => matches,
    }
}

fn listen_address(matches: &ArgMatches) -> SocketAddr {
    *exporter_matches(matches)
        .try_get_one::<SocketAddr>("listen_address")
        .expect("listen_address is a SocketAddr argument")
        .expect("listen_address has a default")
}

fn telemetry_path(matches: &ArgMatches) -> String {
    exporter_matches(matches)
        .try_get_one::<String>("telemetry_path")
        .expect("telemetry_path is a String argument")
        .expect("telemetry_path has a default")
        .clone()
}

/// Returns the `--flag=value` that an environment variable stands for, or
/// None for the token variable, which has no flag. Looks in the `demo`
/// subcommand's flags when `subcommand` is "demo".
fn flag_for_env(subcommand: Option<&str>, name: &str, value: &str) -> Option<String> {
    if name == TOKEN_VARIABLE {
        return None;
    }

    let root = Cli::command();
    let command = match subcommand {
        Some(sub) => root
            .find_subcommand(sub)
            .unwrap_or_else(|| panic!("no subcommand {sub:?}"))
            .clone(),
        None => root,
    };

    let arg = command
        .get_arguments()
        .find(|arg| arg.get_env().is_some_and(|env| env == name))
        .unwrap_or_else(|| panic!("environment variable {name} is not read by the exporter"));
    let long = arg.get_long().expect("every exporter flag has a long name");
    Some(format!("--{long}={value}"))
}

/// Returns a compose service's command followed by its environment as flags.
fn compose_service_args(lines: &[&str], service: &str) -> Vec<String> {
    let service_lines = block(lines, service);
    let mut args = list_items(&block(&service_lines, "command"));

    let subcommand = args
        .first()
        .filter(|first| !first.starts_with('-'))
        .cloned();
    let has_environment = service_lines
        .iter()
        .any(|line| opens_block(line, "environment"));
    if has_environment {
        for (name, value) in mapping(&block(&service_lines, "environment")) {
            args.extend(flag_for_env(subcommand.as_deref(), &name, &value));
        }
    }
    args
}

/// Returns the flags of the systemd unit's ExecStart, with continuation
/// lines joined, and the flags its Environment= lines stand for.
fn systemd_args(unit: &str) -> (String, Vec<String>) {
    let joined = unit.replace("\\\n", " ");
    let exec_start = joined
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart= line");

    let mut words = exec_start.split_whitespace().map(str::to_owned);
    let binary = words.next().expect("ExecStart= names a binary");
    let mut args: Vec<String> = words.collect();

    for assignment in joined
        .lines()
        .filter_map(|line| line.strip_prefix("Environment="))
    {
        let (name, value) = assignment
            .trim_matches('"')
            .split_once('=')
            .expect("Environment= sets NAME=value");
        args.extend(flag_for_env(None, name, value));
    }
    (binary, args)
}

#[test]
fn parser_rejects_misspelled_flag() {
    let args = ["--web.listen-adress=0.0.0.0:9786".to_owned()];

    let error = parse(&args).expect_err("a misspelled flag must be rejected");

    assert!(error.contains("--web.listen-adress"), "error: {error}");
}

#[test]
fn parser_rejects_invalid_duration() {
    let args = ["--api.idle-timeout=30".to_owned()];

    assert!(
        parse(&args).is_err(),
        "a duration without a unit must be rejected"
    );
}

#[test]
fn deployment_args_parse() {
    let text = read_repo_file("deploy/kubernetes/deployment.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let args = list_items(&block(&lines, "args"));
    assert!(!args.is_empty(), "no container args found");

    let matches = parse_or_panic("deployment.yaml", &args);

    assert_eq!(listen_address(&matches).port(), PORT);
    assert_eq!(telemetry_path(&matches), TELEMETRY_PATH);
}

#[test]
fn deployment_token_file_is_in_secret_mount() {
    let text = read_repo_file("deploy/kubernetes/deployment.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let args = list_items(&block(&lines, "args"));
    let mount_path = scalar(&block(&lines, "volumeMounts"), "mountPath");

    let token_file = args
        .iter()
        .find_map(|arg| arg.strip_prefix("--api.token-file="))
        .expect("the Deployment passes --api.token-file");

    assert_eq!(Path::new(token_file).parent(), Some(Path::new(&mount_path)));
    assert_eq!(scalar(&block(&lines, "volumes"), "path"), "token");
}

#[test]
fn deployment_probes_use_health_paths() {
    let text = read_repo_file("deploy/kubernetes/deployment.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let ports = block(&lines, "ports");
    let liveness = block(&lines, "livenessProbe");
    let readiness = block(&lines, "readinessProbe");

    assert_eq!(scalar(&ports, "containerPort"), PORT.to_string());
    assert_eq!(scalar(&ports, "- name"), "http-metrics");
    assert_eq!(scalar(&liveness, "path"), HEALTHY_PATH);
    assert_eq!(scalar(&liveness, "port"), "http-metrics");
    assert_eq!(scalar(&readiness, "path"), READY_PATH);
    assert_eq!(scalar(&readiness, "port"), "http-metrics");
}

#[test]
fn service_and_monitor_use_metrics_port() {
    let service = read_repo_file("deploy/kubernetes/service.yaml");
    let service_lines: Vec<&str> = service.lines().collect();
    let monitor = read_repo_file("deploy/kubernetes/servicemonitor.yaml");
    let monitor_lines: Vec<&str> = monitor.lines().collect();
    let endpoints = block(&monitor_lines, "endpoints");

    assert_eq!(scalar(&service_lines, "port"), PORT.to_string());
    assert_eq!(scalar(&service_lines, "targetPort"), "http-metrics");
    assert_eq!(scalar(&service_lines, "- name"), "http-metrics");
    assert_eq!(scalar(&endpoints, "- port"), "http-metrics");
    assert_eq!(scalar(&endpoints, "path"), TELEMETRY_PATH);
}

#[test]
fn compose_services_parse() {
    let text = read_repo_file("deploy/docker/compose.yaml");
    let lines: Vec<&str> = text.lines().collect();

    for service in ["demo", "exporter"] {
        let args = compose_service_args(&lines, service);
        assert!(!args.is_empty(), "service {service}: no command found");

        let matches = parse_or_panic(&format!("compose.yaml service {service}"), &args);

        assert_eq!(listen_address(&matches).port(), PORT, "service {service}");
        assert_eq!(
            telemetry_path(&matches),
            TELEMETRY_PATH,
            "service {service}"
        );
    }
}

#[test]
fn compose_demo_runs_demo_subcommand() {
    let text = read_repo_file("deploy/docker/compose.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let args = compose_service_args(&lines, "demo");

    let matches = parse_or_panic("compose.yaml service demo", &args);

    assert_eq!(matches.subcommand_name(), Some("demo"));
}

#[test]
fn compose_token_file_is_the_secret() {
    let text = read_repo_file("deploy/docker/compose.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let args = compose_service_args(&lines, "exporter");
    let secrets = list_items(&block(&block(&lines, "exporter"), "secrets"));
    assert_eq!(secrets.len(), 1, "service exporter: secrets {secrets:?}");

    let token_file = args
        .iter()
        .find_map(|arg| arg.strip_prefix("--api.token-file="))
        .expect("service exporter passes --api.token-file");

    assert_eq!(token_file, format!("/run/secrets/{}", secrets[0]));
}

#[test]
fn compose_publishes_exporter_port() {
    let text = read_repo_file("deploy/docker/compose.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let ports = list_items(&block(&block(&lines, "x-exporter"), "ports"));
    assert_eq!(ports.len(), 1, "exporter ports {ports:?}");

    let container_port = ports[0].rsplit(':').next();

    assert_eq!(container_port, Some(PORT.to_string().as_str()));
}

#[test]
fn systemd_exec_start_parses() {
    let unit = read_repo_file("deploy/systemd/comfycontrol-exporter.service");
    let (binary, args) = systemd_args(&unit);
    assert!(!args.is_empty(), "ExecStart= has no flags");

    let matches = parse_or_panic("comfycontrol-exporter.service", &args);

    assert_eq!(
        Path::new(&binary).file_name(),
        Some("comfycontrol-exporter".as_ref())
    );
    assert_eq!(listen_address(&matches).port(), PORT);
    assert_eq!(telemetry_path(&matches), TELEMETRY_PATH);
}

#[test]
fn prometheus_configs_scrape_exporter_port() {
    for file in ["prometheus.yml", "prometheus.compose.yml"] {
        let text = read_repo_file(&format!("deploy/prometheus/{file}"));
        let lines: Vec<&str> = text.lines().collect();
        let targets = list_items(&block(&lines, "targets"));
        assert!(!targets.is_empty(), "{file}: no targets found");

        for target in &targets {
            assert!(
                target.ends_with(&format!(":{PORT}")),
                "{file}: target {target}"
            );
        }
        assert_eq!(scalar(&lines, "metrics_path"), TELEMETRY_PATH, "{file}");
    }
}

#[test]
fn dockerfile_exposes_exporter_port() {
    let text = read_repo_file("deploy/docker/Dockerfile");

    let exposed: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("EXPOSE "))
        .collect();
    let entrypoint = text
        .lines()
        .find_map(|line| line.strip_prefix("ENTRYPOINT "))
        .expect("the Dockerfile has an ENTRYPOINT");

    assert_eq!(exposed, [PORT.to_string()]);
    assert!(
        entrypoint.contains("/comfycontrol-exporter\""),
        "{entrypoint}"
    );
}

#[test]
fn dockerfile_copies_every_target_the_manifest_names() {
    let manifest = read_repo_file("Cargo.toml");
    let dockerfile = read_repo_file("deploy/docker/Dockerfile");
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("COPY "))
        .filter(|line| !line.starts_with("--from"))
        .flat_map(str::split_whitespace)
        .collect();

    for (section, folder) in [
        ("[[bench]]", "benches"),
        ("[[test]]", "tests"),
        ("[[example]]", "examples"),
    ] {
        if manifest.contains(section) {
            assert!(
                copied.contains(&folder),
                "Cargo.toml has a {section} section but the Dockerfile does not copy {folder}/"
            );
        }
    }
}
