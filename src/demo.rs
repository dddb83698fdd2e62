//! The simulator and the exporter in one process, wired together, so a
//! fresh machine shows live metrics without an account.
//!
//! The simulated workload runs faster than real time (`--simulator.time-scale`,
//! 0.1 by default), so workflows finish and fail within the first minute,
//! and discovery polls every 2 s unless `--discovery.interval` is given.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::cli::DemoArgs;
use crate::launch;
use crate::settings::{Settings, SettingsError};
use crate::simulator::{self, GeneratedWorkload, SimulatorConfig, Workload};

/// Discovery interval of the demo when the flag is not given.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);

/// Mean time between two new simulated workflows.
const MEAN_ARRIVAL: Duration = Duration::from_secs(2);

/// Simulated workflows that exist when the demo starts.
const INITIAL_WORKFLOWS: usize = 20;

/// Token shared by the demo's simulator and exporter.
const DEMO_TOKEN: &str = "cfc_demo";

/// A failure to start the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("failed to start the simulator on {address}: {source}")]
    Simulator {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },

    #[error(transparent)]
    Settings(#[from] SettingsError),

    #[error("failed to listen on {0}; choose another --web.listen-address")]
    Listen(std::net::SocketAddr),

    #[error("the exporter stopped with an error")]
    Exporter,
}

/// Runs the demo until `shutdown` completes.
pub async fn run(args: DemoArgs, shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
    let simulator_error = |source| DemoError::Simulator {
        address: args.simulator_listen,
        source,
    };
    let listener = TcpListener::bind(args.simulator_listen)
        .await
        .map_err(simulator_error)?;
    let config = SimulatorConfig {
        token: DEMO_TOKEN.to_owned(),
        interval: args.interval,
        workload: Workload::Generated(GeneratedWorkload {
            seed: rand::random(),
            mean_arrival: MEAN_ARRIVAL,
            time_scale: args.time_scale,
            initial: INITIAL_WORKFLOWS,
        }),
        ..SimulatorConfig::default()
    };
    let simulator = simulator::start(config, listener)
        .await
        .map_err(simulator_error)?;

    let mut exporter_args = args.exporter.clone();
    exporter_args.api_url = simulator.base_url();
    exporter_args.token_file = None;
    let settings = Settings::from_args(&exporter_args, Some(DEMO_TOKEN.to_owned()))?;
    let Some(listener) = launch::bind(settings.listen_address).await else {
        return Err(DemoError::Listen(settings.listen_address));
    };

    let address = listener
        .local_addr()
        .map_err(|_| DemoError::Listen(settings.listen_address))?;
    let host = match address.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        ip => ip.to_string(),
    };
    tracing::info!(simulator = %simulator.base_url(), "demo simulator started");
    println!(
        "comfycontrol-exporter demo: metrics at http://{host}:{}{}",
        address.port(),
        settings.telemetry_path
    );

    let exit = launch::serve_until_signal(settings, listener, shutdown).await;
    simulator.shutdown().await;
    if exit != std::process::ExitCode::SUCCESS {
        return Err(DemoError::Exporter);
    }
    Ok(())
}
