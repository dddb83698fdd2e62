//! The HTTP server: accepts connections and runs every request through the
//! same checks before its endpoint handler.
//!
//! Routes, all GET and all behind `Authorization: Bearer <token>`:
//!
//! - `/v1/workflow`: a page of workflows, newest first
//! - `/v1/workflow/{id}`: one workflow in detail
//! - `/v1/workflow/{id}/subscribe`: Server-Sent Events with snapshots
//!
//! Each request is checked in this order: the rate limit (429), the path
//! (404) and method (405), injected errors from `fail_next`, and the token
//! (401). The rate limit comes first because the real API enforces it at
//! Cloudflare, in front of everything else.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::faults::FailNext;
use super::limits::{Decision, RateLimiter};
use super::routes::{self, error_response, Body, Route};
use super::stats::SimulatorStats;
use super::store::WorkflowStore;
use super::{lock, read};

/// Settings fixed for the lifetime of a simulator.
#[derive(Debug)]
pub struct Settings {
    pub interval: Duration,
    pub max_updates: u32,
    pub rate_limit: u32,
    pub rate_window: Duration,
    pub cooldown: Duration,
    pub retry_after: bool,
}

/// State shared by the server's connections and the simulator handle.
pub struct Shared {
    pub settings: Settings,
    pub token: RwLock<String>,
    pub store: Mutex<WorkflowStore>,
    pub limiter: Mutex<RateLimiter>,
    pub fail_next: Mutex<FailNext>,
    pub stats: Arc<Mutex<SimulatorStats>>,
}

/// Pause after a failed accept, so that running out of file descriptors
/// does not turn into a busy loop.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Accepts connections until `cancel` fires, then aborts the open ones.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut connections = JoinSet::new();

    loop {
        tokio::select! {
            () = cancel.cancelled() => break,

            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, Arc::clone(&shared)));
                }
                Err(error) => {
                    tracing::warn!(%error, "failed to accept a connection, retrying");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            },

            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }

    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let service = service_fn(move |request| handle(request, peer.ip(), Arc::clone(&shared)));
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);

    // Errors here are mostly clients that went away or aborted streams.
    if let Err(error) = connection.await {
        tracing::debug!(%error, client = %peer, "connection ended with an error");
    }
}

async fn handle(
    request: Request<Incoming>,
    client: IpAddr,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();

    let response = respond(&request, client, &shared);

    tracing::debug!(%method, %path, %client, status = response.status().as_u16(), "request");
    Ok(response)
}

fn respond(request: &Request<Incoming>, client: IpAddr, shared: &Arc<Shared>) -> Response<Body> {
    let route = Route::parse(request.uri().path());
    lock(&shared.stats).record_request(route.endpoint());

    if let Some(rejection) = check_rate_limit(client, shared) {
        return rejection;
    }

    let Some(endpoint) = route.endpoint() else {
        return routes::not_found();
    };
    if request.method() != Method::GET {
        return routes::method_not_allowed(request.method());
    }

    if let Some(code) = lock(&shared.fail_next).take(endpoint) {
        return error_response(routes::status_code(code), "injected error");
    }

    if !is_authorized(request.headers(), shared) {
        let message = "invalid or missing authentication token: send Authorization: Bearer <token>";
        return error_response(StatusCode::UNAUTHORIZED, message);
    }

    routes::dispatch(route, request.uri().query(), shared)
}

/// Counts the request against the client's rate limit and returns the 429
/// response if it is rejected.
fn check_rate_limit(client: IpAddr, shared: &Shared) -> Option<Response<Body>> {
    let decision = lock(&shared.limiter).check(client, Instant::now());
    let cooldown = shared.settings.cooldown;

    let remaining = match decision {
        Decision::Allow => return None,
        Decision::OverLimit => {
            lock(&shared.stats).over_limit += 1;
            tracing::debug!(%client, "rate limit exceeded, cooldown started");
            cooldown
        }
        Decision::DuringCooldown { since_start } => {
            lock(&shared.stats).record_during_cooldown(since_start);
            cooldown.saturating_sub(since_start)
        }
    };

    Some(too_many_requests(&shared.settings, remaining))
}

fn too_many_requests(settings: &Settings, remaining: Duration) -> Response<Body> {
    let message = format!(
        "rate limit exceeded: the limit is {} requests per {} per client IP address, \
         and all requests are rejected for {} after exceeding it",
        settings.rate_limit,
        humantime::format_duration(settings.rate_window),
        humantime::format_duration(settings.cooldown),
    );
    let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, &message);

    if settings.retry_after {
        // Retry-After takes whole seconds, so round up.
        let seconds = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }

    response
}

fn is_authorized(headers: &HeaderMap, shared: &Shared) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };

    scheme.eq_ignore_ascii_case("bearer") && token == read(&shared.token).as_str()
}
