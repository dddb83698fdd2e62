//! The ComfyControl API client: one request budget, one token, one place
//! where responses are counted and classified.
//!
//! Every request waits for the shared [`RateLimiter`] and goes through the
//! [`AuthGate`], which lets one request probe the API per retry interval while
//! the token is rejected, instead of every watcher retrying on its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{header, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::token::{Token, TokenError, TokenSource};

/// Largest error body read to find the API's `message`, in bytes.
const MAX_ERROR_BODY: usize = 4096;

/// Largest workflow list body read, in bytes: a page of 100 workflows is
/// tens of kilobytes.
const MAX_LIST_BODY: usize = 8 * 1024 * 1024;

/// Minimum pause after a 429, also when `Retry-After` is 0.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Maximum pause a `Retry-After` header can impose. The API documents a
/// 10 s cooldown, so a far longer value is capped to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Settings of the API client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: Url,
    pub token: TokenSource,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub rate_limit: u32,
    pub rate_window: Duration,
    pub cooldown: Duration,
    pub unauthorized_retry: Duration,
}

/// A failed API request, typed by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API rejected the token (HTTP 401): check the token, it may be expired or revoked")]
    Unauthorized,

    #[error("not found (HTTP 404)")]
    NotFound,

    #[error("rate limited (HTTP 429): all requests pause for {0:?}")]
    RateLimited(Duration),

    #[error("API returned HTTP {code}: {message}")]
    Status { code: u16, message: String },

    #[error("request failed: {}", error_chain(.0))]
    Transport(#[source] reqwest::Error),

    #[error("no response headers within {0:?}")]
    TimedOut(Duration),

    #[error("expected a text/event-stream response, got Content-Type {0:?}")]
    NotAStream(String),

    #[error("invalid response body: {0}")]
    Decode(String),

    #[error(transparent)]
    Token(#[from] TokenError),
}

/// One page of `GET /v1/workflow`. Items are kept as JSON values, so one
/// malformed item is skipped by discovery instead of failing the page.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowPage {
    pub workflows: Vec<serde_json::Value>,
    pub total: u64,
}

/// The API client shared by every task.
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    request_timeout: Duration,
    cooldown: Duration,
    limiter: RateLimiter,
    auth: AuthGate,
    metrics: Arc<Metrics>,
}

impl ApiClient {
    /// Builds the client and reads the token once.
    pub fn new(config: ClientConfig, metrics: Arc<Metrics>) -> Result<ApiClient, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("comfycontrol-exporter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ApiError::Transport)?;
        let token = config.token.load()?;

        Ok(ApiClient {
            http,
            base_url: config.base_url.as_str().trim_end_matches('/').to_owned(),
            request_timeout: config.request_timeout,
            cooldown: config.cooldown,
            limiter: RateLimiter::new(config.rate_limit, config.rate_window)
                .with_startup_reserve(startup_reserve(config.rate_limit)),
            auth: AuthGate::new(config.token, token, config.unauthorized_retry),
            metrics,
        })
    }

    /// Fetches one page of the workflow list, newest first.
    pub async fn list(&self, page: u32, per_page: u32) -> Result<WorkflowPage, ApiError> {
        let url = format!("{}/v1/workflow", self.base_url);
        let request = self
            .http
            .get(url)
            .query(&[("page", page), ("per_page", per_page)])
            .timeout(self.request_timeout);

        let response = self.send("list", request, None).await?;
        let page = read_capped(response, MAX_LIST_BODY).await.and_then(|body| {
            serde_json::from_slice::<WorkflowPage>(&body)
                .map_err(|error| ApiError::Decode(error.to_string()))
        });
        if page.is_err() {
            // A 200 whose body is no workflow list is a broken API.
            self.metrics.set_up(false);
        }
        page
    }

    /// Opens the event stream of one workflow. Only the wait for the
    /// response headers is bounded, and only once the request is sent: the
    /// stream itself may last minutes, and the waits for the rate limit and
    /// the token gate are not the server's delay.
    pub async fn subscribe(&self, workflow_id: &str) -> Result<Response, ApiError> {
        let url = format!("{}/v1/workflow/{workflow_id}/subscribe", self.base_url);
        let request = self
            .http
            .get(url)
            .header(header::ACCEPT, "text/event-stream");

        let response = self
            .send("subscribe", request, Some(self.request_timeout))
            .await?;
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !content_type
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
        {
            return Err(ApiError::NotAStream(content_type.to_owned()));
        }
        Ok(response)
    }

    /// Sends one request through the token gate and the rate limit.
    /// `header_timeout` bounds the wait for the response headers.
    async fn send(
        &self,
        endpoint: &str,
        request: RequestBuilder,
        header_timeout: Option<Duration>,
    ) -> Result<Response, ApiError> {
        let token = self.auth.token_for_request().await?;
        let _permit = self.limiter.acquire().await;

        let sent = request.bearer_auth(token.expose()).send();
        let transport = |error: reqwest::Error| ApiError::Transport(error.without_url());
        let result = match header_timeout {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(result) => result.map_err(transport),
                Err(_) => Err(ApiError::TimedOut(limit)),
            },
            None => sent.await.map_err(transport),
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                self.metrics.count_request(endpoint, "error");
                self.metrics.set_up(false);
                return Err(error);
            }
        };

        let status = response.status();
        self.metrics.count_request(endpoint, status.as_str());
        self.classify(status, response).await
    }

    async fn classify(&self, status: StatusCode, response: Response) -> Result<Response, ApiError> {
        if status.is_success() {
            self.auth.accepted();
            self.metrics.set_up(true);
            return Ok(response);
        }

        match status {
            StatusCode::UNAUTHORIZED => {
                self.auth.rejected();
                self.metrics.set_up(false);
                Err(ApiError::Unauthorized)
            }
            StatusCode::NOT_FOUND => {
                self.auth.accepted();
                self.metrics.set_up(true);
                Err(ApiError::NotFound)
            }
            StatusCode::TOO_MANY_REQUESTS => Err(self.start_cooldown(&response)),
            _ => {
                // 403 is a tier limit of the account: the token cannot do
                // what the exporter needs, so the API counts as down for it.
                if status.is_server_error() || status == StatusCode::FORBIDDEN {
                    self.metrics.set_up(false);
                }
                Err(ApiError::Status {
                    code: status.as_u16(),
                    message: error_message(response).await,
                })
            }
        }
    }

    fn start_cooldown(&self, response: &Response) -> ApiError {
        let pause = retry_after(response).unwrap_or(self.cooldown);
        if self.limiter.pause(pause) {
            self.metrics.count_cooldown();
            tracing::warn!(
                pause_seconds = pause.as_secs_f64(),
                "API rate limit reached, pausing all requests"
            );
        }
        ApiError::RateLimited(pause)
    }
}

/// Reads a whole body, failing once it grows past `limit` bytes.
async fn read_capped(mut response: Response, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| ApiError::Decode(error_chain(&error)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ApiError::Decode(format!("body larger than {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads the `message` of the API's JSON error body, or a short excerpt.
async fn error_message(mut response: Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }

    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(error) => error.message,
        Err(_) => String::from_utf8_lossy(&body).chars().take(200).collect(),
    }
}

/// Parses a `Retry-After` header given in seconds, kept between
/// [`MIN_RETRY_AFTER`] and [`MAX_RETRY_AFTER`].
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER))
}

/// Requests of the first window held back at start: two thirds of the
/// budget. A process restarted at once after one that spent its whole
/// budget of 30 then sends at most 10 in the API's window, 40 in all.
fn startup_reserve(rate_limit: u32) -> usize {
    rate_limit as usize * 2 / 3
}

/// Formats an error with every cause in its chain, such as
/// "error sending request: connection refused".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Shares one token among all requests and, while the API rejects it, lets
/// one request through per retry interval, reading the token again first.
struct AuthGate {
    source: TokenSource,
    retry: Duration,
    state: Mutex<AuthState>,
    changed: Notify,
}

struct AuthState {
    token: Token,
    rejected: bool,
    next_probe: Instant,
}

impl AuthGate {
    fn new(source: TokenSource, token: Token, retry: Duration) -> AuthGate {
        AuthGate {
            source,
            retry,
            state: Mutex::new(AuthState {
                token,
                rejected: false,
                next_probe: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns the token to send, waiting while it is rejected until this
    /// request's turn to probe comes or another probe succeeds.
    async fn token_for_request(&self) -> Result<Token, TokenError> {
        loop {
            let notified = self.changed.notified();
            let wake_at = {
                let mut state = self.lock();
                if !state.rejected {
                    return Ok(state.token.clone());
                }
                let now = Instant::now();
                if now >= state.next_probe {
                    state.next_probe = now + self.retry;
                    let token = self.source.load()?;
                    state.token = token.clone();
                    return Ok(token);
                }
                state.next_probe
            };

            tokio::select! {
                _ = notified => {}
                _ = sleep_until(wake_at) => {}
            }
        }
    }

    fn accepted(&self) {
        let mut state = self.lock();
        if state.rejected {
            state.rejected = false;
            tracing::info!("API accepted the token again");
            self.changed.notify_waiters();
        }
    }

    fn rejected(&self) {
        let mut state = self.lock();
        if !state.rejected {
            state.rejected = true;
            state.next_probe = Instant::now() + self.retry;
            tracing::error!(
                retry_seconds = self.retry.as_secs_f64(),
                "API rejected the token with HTTP 401; check the token file or COMFYCONTROL_TOKEN, retrying with the token read again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_with_retry_after(value: &str) -> Response {
        let response = hyper::Response::builder()
            .status(429)
            .header(header::RETRY_AFTER, value)
            .body(Vec::<u8>::new())
            .expect("valid response");
        Response::from(response)
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let seven = response_with_retry_after("7");
        let huge = response_with_retry_after("18446744073709551615");
        let date = response_with_retry_after("Wed, 21 Oct 2015 07:28:00 GMT");
        let zero = response_with_retry_after("0");

        assert_eq!(retry_after(&seven), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&zero), Some(MIN_RETRY_AFTER));
        assert_eq!(retry_after(&huge), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn list_page_keeps_malformed_items() {
        let body =
            r#"{"workflows":[{"id":1,"status":"running"},{"id":"a","status":"queued"}],"total":2}"#;

        let page: WorkflowPage = serde_json::from_str(body).expect("page decodes");

        assert_eq!(page.workflows.len(), 2);
        assert_eq!(page.total, 2);
    }

    #[test]
    fn error_chain_names_every_cause() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = std::io::Error::other(ChainedError(inner));

        let text = error_chain(&outer);

        assert!(text.contains("connecting failed"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
    }

    #[derive(Debug)]
    struct ChainedError(std::io::Error);

    impl std::fmt::Display for ChainedError {
        fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("connecting failed")
        }
    }

    impl std::error::Error for ChainedError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
