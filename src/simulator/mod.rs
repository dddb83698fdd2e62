//! A local simulator of the ComfyControl API, for tests, demos and
//! development without an account.
//!
//! It serves the three endpoints the exporter uses (list, get, subscribe)
//! with the documented behaviour: bearer authentication, JSON errors,
//! pagination, Server-Sent Events snapshots paced by an interval and capped
//! per connection, and a per-IP rate limit with a cooldown. Workflow states
//! are pure functions of the time since each workflow started, so every
//! client sees the same history. Tests can script exact timelines, inject
//! stream faults and error responses, and read counters of what clients did.
//!
//! Layout:
//!
//! - `timeline`: statuses, phases, and the state at a given offset
//! - `workload`, `generator`: scripted workflows and the random mix
//! - `store`: the bounded workflow history
//! - `server`, `routes`, `stream`, `json`: HTTP, handlers, SSE, bodies
//! - `limits`, `faults`, `stats`: rate limit, injected faults, counters
//! - `cli`: the `simulate` command's flags

mod cli;
mod faults;
mod generator;
mod json;
mod limits;
mod routes;
mod server;
mod stats;
mod store;
mod stream;
mod timeline;
mod workload;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use cli::SimulateArgs;
pub use faults::StreamFault;
pub use stats::{EndpointCounts, SimulatorStats};
pub use timeline::{End, Phase, Status};
pub use workload::{GeneratedWorkload, ScriptedWorkflow, Workload};

use faults::FailNext;
use limits::RateLimiter;
use server::{Settings, Shared};
use store::WorkflowStore;

/// An API endpoint, for injected errors and per-endpoint counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /v1/workflow`
    List,
    /// `GET /v1/workflow/{id}`
    Get,
    /// `GET /v1/workflow/{id}/subscribe`
    Subscribe,
}

/// Settings of a simulator. `Default` gives the documented API limits and an
/// empty scripted workload.
#[derive(Clone)]
pub struct SimulatorConfig {
    /// The one bearer token accepted. `SimulatorHandle::set_token` changes it.
    pub token: String,
    /// Time between two events of a subscribe stream.
    pub interval: Duration,
    /// Maximum number of events per subscribe connection, after which the
    /// server closes it.
    pub max_updates: u32,
    /// Maximum number of requests per client IP address in any
    /// `rate_window`. 0 disables the rate limit.
    pub rate_limit: u32,
    /// Length of the sliding rate limit window.
    pub rate_window: Duration,
    /// Time during which every request is rejected after the limit was
    /// exceeded.
    pub cooldown: Duration,
    /// Whether 429 responses carry a Retry-After header. The API
    /// documentation does not promise one.
    pub retry_after: bool,
    pub workload: Workload,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            token: "cfc_simulator".to_owned(),
            interval: Duration::from_secs(2),
            max_updates: 120,
            rate_limit: 40,
            rate_window: Duration::from_secs(10),
            cooldown: Duration::from_secs(10),
            retry_after: false,
            workload: Workload::Scripted(Vec::new()),
        }
    }
}

impl fmt::Debug for SimulatorConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimulatorConfig")
            .field("token", &"<redacted>")
            .field("interval", &self.interval)
            .field("max_updates", &self.max_updates)
            .field("rate_limit", &self.rate_limit)
            .field("rate_window", &self.rate_window)
            .field("cooldown", &self.cooldown)
            .field("retry_after", &self.retry_after)
            .field("workload", &self.workload)
            .finish()
    }
}

/// Starts serving on an already bound listener. The simulator runs until
/// `SimulatorHandle::shutdown` is called or the handle is dropped.
///
/// Fails if the listener has no local address or the generated workload's
/// time scale is not a positive finite number.
pub async fn start(config: SimulatorConfig, listener: TcpListener) -> io::Result<SimulatorHandle> {
    validate(&config)?;
    let local_addr = listener.local_addr()?;

    let store = WorkflowStore::new(config.workload, config.interval, Instant::now(), Utc::now());
    let shared = Arc::new(Shared {
        settings: Settings {
            interval: config.interval,
            max_updates: config.max_updates,
            rate_limit: config.rate_limit,
            rate_window: config.rate_window,
            cooldown: config.cooldown,
            retry_after: config.retry_after,
        },
        token: RwLock::new(config.token),
        store: Mutex::new(store),
        limiter: Mutex::new(RateLimiter::new(
            config.rate_limit,
            config.rate_window,
            config.cooldown,
        )),
        fail_next: Mutex::new(FailNext::default()),
        stats: Arc::new(Mutex::new(SimulatorStats::default())),
    });

    let cancel = CancellationToken::new();
    let task = tokio::spawn(server::serve(listener, Arc::clone(&shared), cancel.clone()));

    Ok(SimulatorHandle {
        local_addr,
        shared,
        cancel,
        task: Some(task),
    })
}

fn validate(config: &SimulatorConfig) -> io::Result<()> {
    if let Workload::Generated(generated) = &config.workload {
        let scale = generated.time_scale;
        if !(scale.is_finite() && scale > 0.0) {
            let message = format!("invalid time scale {scale}: expected a positive number");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
    }
    Ok(())
}

/// Control of a running simulator. Dropping it stops the server.
pub struct SimulatorHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl SimulatorHandle {
    /// Returns the address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the base URL for clients, such as `http://127.0.0.1:8731`.
    /// An unspecified listen address is replaced by loopback.
    pub fn base_url(&self) -> String {
        let ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    /// Replaces the accepted bearer token. Open streams continue.
    pub fn set_token(&self, token: &str) {
        *self
            .shared
            .token
            .write()
            .unwrap_or_else(PoisonError::into_inner) = token.to_owned();
    }

    /// Adds a workflow whose timeline starts now. If a stored workflow has
    /// the same id, requests find the one added last.
    pub fn add_workflow(&self, workflow: ScriptedWorkflow) {
        let now = Instant::now();
        let mut store = lock(&self.shared.store);

        // Generated arrivals up to now go first, to keep creation order.
        store.refresh(now);
        store.add(workflow, now, Utc::now());
    }

    /// Makes the next `count` requests to `endpoint` fail with HTTP `status`
    /// and a JSON error body, replacing an earlier setting for that
    /// endpoint. Requests rejected by the rate limit, unknown paths and
    /// other methods do not consume them. A `status` that is not a valid
    /// HTTP status code is sent as 500.
    pub fn fail_next(&self, endpoint: Endpoint, count: u32, status: u16) {
        lock(&self.shared.fail_next).set(endpoint, count, status);
    }

    /// Returns a copy of the counters.
    pub fn stats(&self) -> SimulatorStats {
        lock(&self.shared.stats).clone()
    }

    /// Stops accepting connections, closes the open ones and waits until
    /// the server task has ended.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::warn!(%error, "simulator server task failed");
            }
        }
    }
}

impl fmt::Debug for SimulatorHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimulatorHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Errors of `run`.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error(
        "failed to bind the simulator to {address}: {source} (set --listen to a free address)"
    )]
    Bind {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("failed to start the simulator: {0}")]
    Start(#[source] io::Error),
}

/// Binds the listen address of `args`, serves the generated workload and
/// returns once `shutdown` completes and the server has stopped.
pub async fn run(
    args: SimulateArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimulatorError> {
    let config = args.config();
    let seed = match &config.workload {
        Workload::Generated(generated) => Some(generated.seed),
        Workload::Scripted(_) => None,
    };

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| SimulatorError::Bind {
            address: args.listen,
            source,
        })?;
    let handle = start(config, listener)
        .await
        .map_err(SimulatorError::Start)?;
    tracing::info!(url = %handle.base_url(), seed, "simulator listening");

    shutdown.await;
    tracing::info!("simulator shutting down");
    handle.shutdown().await;
    Ok(())
}

/// Locks a mutex and ignores poisoning, because every critical section
/// leaves its data consistent and a panic elsewhere does not invalidate it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks an `RwLock`, ignoring poisoning for the reason of `lock`.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}
