//! The three commands as the binary starts them: logging, validation,
//! binding, signals and exit codes.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};
use tokio::net::TcpListener;

use crate::cli::{Cli, Command, DemoArgs, ExporterArgs};
use crate::settings::Settings;
use crate::token::TOKEN_VARIABLE;
use crate::{demo, exporter, logging, simulator};

/// Exit status for invalid flags or configuration, as clap uses.
const USAGE_ERROR: u8 = 2;

/// Runs the command the parsed command line selects and returns the
/// process exit status.
pub async fn run(matches: &ArgMatches) -> ExitCode {
    let cli = match Cli::from_arg_matches(matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let log = match &cli.command {
        None => &cli.exporter.log,
        Some(Command::Demo(args)) => &args.exporter.log,
        Some(Command::Simulate(args)) => &args.log,
    };
    logging::init(log.log_level, log.log_format);

    match cli.command {
        None => run_exporter(cli.exporter).await,
        Some(Command::Simulate(args)) => match simulator::run(args, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "simulator failed");
                ExitCode::FAILURE
            }
        },
        Some(Command::Demo(mut args)) => {
            let demo_matches = matches.subcommand_matches("demo");
            if demo_matches.is_some_and(|demo| is_default(demo, "discovery_interval")) {
                args.exporter.discovery_interval = demo::DISCOVERY_INTERVAL;
            }
            run_demo(*args).await
        }
    }
}

fn is_default(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::DefaultValue) | None
    )
}

async fn run_exporter(args: ExporterArgs) -> ExitCode {
    let settings = match Settings::from_args(&args, std::env::var(TOKEN_VARIABLE).ok()) {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let Some(listener) = bind(settings.listen_address).await else {
        return ExitCode::FAILURE;
    };

    serve_until_signal(settings, listener, shutdown_signal()).await
}

async fn run_demo(args: DemoArgs) -> ExitCode {
    match demo::run(args, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "demo failed");
            ExitCode::FAILURE
        }
    }
}

/// Runs the exporter with start and stop log lines.
pub async fn serve_until_signal(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> ExitCode {
    let address = listener
        .local_addr()
        .map(|address| address.to_string())
        .unwrap_or_default();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen_address = %address,
        telemetry_path = %settings.telemetry_path,
        api_url = %settings.client.base_url,
        workflows = settings.workflows.len(),
        discovery = settings.discovery.is_some(),
        "starting comfycontrol-exporter"
    );

    match exporter::run(settings, listener, shutdown).await {
        Ok(()) => {
            tracing::info!("comfycontrol-exporter stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "comfycontrol-exporter failed to start");
            ExitCode::FAILURE
        }
    }
}

/// Binds the metrics listener, logging the failure with the address.
pub async fn bind(address: SocketAddr) -> Option<TcpListener> {
    match TcpListener::bind(address).await {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::error!(%error, %address, "failed to listen; choose another --web.listen-address");
            None
        }
    }
}

/// Completes on SIGINT or SIGTERM and logs which one arrived.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();

    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = interrupt => tracing::info!(signal = "SIGINT", "shutting down"),
                _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            },
            Err(error) => {
                tracing::warn!(%error, "failed to watch SIGTERM, only SIGINT stops the process");
                let _ = interrupt.await;
                tracing::info!(signal = "SIGINT", "shutting down");
            }
        }
    }

    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        tracing::info!(signal = "SIGINT", "shutting down");
    }
}
