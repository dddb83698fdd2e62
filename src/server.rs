//! The HTTP server Prometheus scrapes.
//!
//! Routes:
//! - `/` (or the root of the telemetry path's site): a small landing page.
//! - the telemetry path (`/metrics` by default): the metrics in the text
//!   exposition format, gzip-compressed when the scraper accepts gzip.
//! - `/-/healthy`: 200 while the process serves HTTP.
//! - `/-/ready`: 200 once the watchers and discovery have been started.
//!
//! `GET` and `HEAD` are accepted; other methods get 405.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Content type of the Prometheus text exposition format 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Time a client gets to send its request headers; a slow client would
/// otherwise hold a connection and a file descriptor forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum HTTP connections served at once.
const MAX_CONNECTIONS: usize = 256;

/// Minimum time between two log lines about failed accepts.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Time open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The state the routes serve.
pub struct Site {
    pub telemetry_path: String,
    pub ready: AtomicBool,
    /// Renders the metrics at scrape time.
    pub render: Box<dyn Fn() -> Vec<u8> + Send + Sync>,
}

/// Serves HTTP on `listener` until `shutdown` completes, then lets open
/// connections finish for a few seconds.
pub async fn serve(listener: TcpListener, site: Arc<Site>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);

    let mut accept_errors = 0u64;
    let mut last_accept_log = None;

    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));

    loop {
        // Beyond the cap, new connections wait in the listen backlog, so a
        // flood cannot take the file descriptors the API client needs.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, this fails until connections
                    // close, so log it once per interval with a count.
                    accept_errors += 1;
                    if last_accept_log.is_none_or(|at: Instant| at.elapsed() >= ACCEPT_LOG_INTERVAL) {
                        tracing::warn!(%error, failures = accept_errors, "failed to accept connections");
                        last_accept_log = Some(Instant::now());
                        accept_errors = 0;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };

        let site = Arc::clone(&site);
        let service = service_fn(move |request| {
            let site = Arc::clone(&site);
            async move { Ok::<_, Infallible>(route(&site, &request)) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }

    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open HTTP connections did not finish within {DRAIN_TIMEOUT:?}");
    }
}

fn route(site: &Site, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed, use GET or HEAD.\n",
        );
    }

    let response = match request.uri().path() {
        path if path == site.telemetry_path => metrics(site, request),
        "/" => landing(site),
        "/-/healthy" => plain(StatusCode::OK, "Healthy\n"),
        "/-/ready" if site.ready.load(Ordering::Acquire) => plain(StatusCode::OK, "Ready\n"),
        "/-/ready" => plain(StatusCode::SERVICE_UNAVAILABLE, "Not ready\n"),
        _ => plain(StatusCode::NOT_FOUND, "Not found\n"),
    };
    // hyper leaves out the body of a response to HEAD and keeps its length.
    response
}

fn metrics(site: &Site, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let body = (site.render)();
    let mut response = Response::new(Full::new(Bytes::new()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));

    let body = if accepts_gzip(request.headers()) {
        match gzip(&body) {
            Ok(compressed) => {
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                compressed
            }
            Err(error) => {
                tracing::warn!(%error, "failed to compress metrics, sending them uncompressed");
                body
            }
        }
    } else {
        body
    };
    *response.body_mut() = Full::new(Bytes::from(body));
    response
}

/// Checks whether Accept-Encoding lists gzip with a non-zero weight.
fn accepts_gzip(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|parameter| {
                parameter
                    .strip_prefix("q=")
                    .and_then(|weight| weight.parse::<f32>().ok())
                    .is_some_and(|weight| weight == 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    encoder.write_all(body)?;
    encoder.finish()
}

fn landing(site: &Site) -> Response<Full<Bytes>> {
    let page = format!(
        "<!DOCTYPE html>\n<html><head><title>ComfyControl Exporter</title></head>\n<body>\n\
         <h1>ComfyControl Exporter</h1>\n<p>Version {}</p>\n<ul>\n\
         <li><a href=\"{path}\">Metrics</a></li>\n\
         <li><a href=\"/-/healthy\">Health</a></li>\n\
         <li><a href=\"/-/ready\">Readiness</a></li>\n</ul>\n</body></html>\n",
        env!("CARGO_PKG_VERSION"),
        path = html_escape(&site.telemetry_path),
    );
    let mut response = Response::new(Full::new(Bytes::from(page)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = hyper::HeaderMap::new();
        for value in values {
            headers.append(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).expect("valid header"),
            );
        }
        accepts_gzip(&headers)
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["deflate, GZIP;q=0.5"]));
        assert!(accepts(&["br", "gzip"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&["identity"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["x-gzip-like"]));
    }

    #[test]
    fn gzip_output_decompresses_to_the_input() {
        let body = b"comfycontrol_up 1\n".repeat(100);

        let compressed = gzip(&body).expect("compresses");
        let mut decoder = flate2::read::GzDecoder::new(compressed.as_slice());
        let mut output = Vec::new();
        std::io::Read::read_to_end(&mut decoder, &mut output).expect("decompresses");

        assert_eq!(output, body);
        assert!(compressed.len() < body.len());
    }

    #[test]
    fn html_escape_covers_markup() {
        assert_eq!(
            html_escape("/m?a=<b>&\"c\""),
            "/m?a=&lt;b&gt;&amp;&quot;c&quot;"
        );
    }
}
