//! Request routing and the three endpoint handlers, after the checks that
//! every request passes (see `server`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde::Serialize;
use uuid::Uuid;

use super::faults::ConnectionFaults;
use super::json::{self, ErrorBody, ListBody};
use super::server::Shared;
use super::stream::{event_stream, StreamAborted, StreamSettings};
use super::timeline::Status;
use super::{lock, Endpoint};

/// The response body type of every route.
pub type Body = BoxBody<Bytes, StreamAborted>;

/// Maximum of `per_page`, as documented by the API.
const MAX_PER_PAGE: usize = 100;

/// Default of `per_page`, as documented by the API.
const DEFAULT_PER_PAGE: usize = 10;

/// Status values accepted by the list filter, as documented by the API.
const FILTER_STATUSES: [Status; 5] = [
    Status::Completed,
    Status::Running,
    Status::Queued,
    Status::Failed,
    Status::Cancelled,
];

/// The resource a request path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    List,
    /// A workflow path, with the id segment as sent.
    Get(String),
    Subscribe(String),
    NotFound,
}

impl Route {
    /// Parses a request path.
    pub fn parse(path: &str) -> Route {
        let Some(rest) = path.strip_prefix("/v1/workflow") else {
            return Route::NotFound;
        };
        if rest.is_empty() {
            return Route::List;
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return Route::NotFound;
        };

        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            [id] if !id.is_empty() => Route::Get((*id).to_owned()),
            [id, "subscribe"] if !id.is_empty() => Route::Subscribe((*id).to_owned()),
            _ => Route::NotFound,
        }
    }

    /// Returns the endpoint of this route, if it has one.
    pub fn endpoint(&self) -> Option<Endpoint> {
        match self {
            Route::List => Some(Endpoint::List),
            Route::Get(_) => Some(Endpoint::Get),
            Route::Subscribe(_) => Some(Endpoint::Subscribe),
            Route::NotFound => None,
        }
    }
}

/// Handles an authenticated request to an endpoint and returns the response.
pub fn dispatch(route: Route, query: Option<&str>, shared: &Arc<Shared>) -> Response<Body> {
    match route {
        Route::List => list(query, shared),
        Route::Get(id) => get(&id, shared),
        Route::Subscribe(id) => subscribe(&id, shared),
        Route::NotFound => not_found(),
    }
}

fn list(query: Option<&str>, shared: &Arc<Shared>) -> Response<Body> {
    let query = match ListQuery::parse(query.unwrap_or("")) {
        Ok(query) => query,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, &message),
    };

    let now = Instant::now();
    let interval = shared.settings.interval;
    let (records, total) = {
        let mut store = lock(&shared.store);
        store.refresh(now);
        store.page(query.status.as_ref(), query.page, query.per_page, now)
    };

    let workflows = records
        .iter()
        .map(|record| json::list_item(record, &record.state(now, interval)))
        .collect();
    json_response(StatusCode::OK, &ListBody { workflows, total })
}

fn get(id: &str, shared: &Arc<Shared>) -> Response<Body> {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(response) => return *response,
    };

    let now = Instant::now();
    let record = {
        let mut store = lock(&shared.store);
        store.refresh(now);
        store.find(id)
    };

    match record {
        Some(record) => {
            let state = record.state(now, shared.settings.interval);
            json_response(StatusCode::OK, &json::detail(&record, &state))
        }
        None => not_found(),
    }
}

fn subscribe(id: &str, shared: &Arc<Shared>) -> Response<Body> {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(response) => return *response,
    };

    let opened = {
        let mut store = lock(&shared.store);
        store.refresh(Instant::now());
        store.open_subscription(id)
    };
    let Some((record, connection)) = opened else {
        return not_found();
    };

    let faults = ConnectionFaults::select(&record.workflow.faults, connection);
    if let Some(code) = faults.status {
        tracing::debug!(workflow_id = %id, connection, code, "injected subscribe status");
        return error_response(
            status_code(code),
            "injected error on this subscribe connection",
        );
    }

    lock(&shared.stats).subscribe_connections += 1;
    let settings = StreamSettings {
        interval: shared.settings.interval,
        max_updates: shared.settings.max_updates,
        stats: Arc::clone(&shared.stats),
    };
    let body = StreamBody::new(event_stream(record, settings, faults)).boxed();

    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn parse_id(id: &str) -> Result<Uuid, Box<Response<Body>>> {
    Uuid::parse_str(id).map_err(|_| {
        let message = format!("invalid workflow id '{id}': expected a UUID");
        Box::new(error_response(StatusCode::BAD_REQUEST, &message))
    })
}

/// Validated query parameters of the list endpoint.
#[derive(Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub page: usize,
    pub per_page: usize,
    pub status: Option<Status>,
}

impl ListQuery {
    /// Parses and validates a query string. The error is the message of a
    /// 400 response. Unknown parameters are ignored.
    pub fn parse(query: &str) -> Result<ListQuery, String> {
        let params = parse_query_string(query);

        let page = match params.get("page") {
            Some(value) => parse_number("page", value, 1, usize::MAX)?,
            None => 1,
        };
        let per_page = match params.get("per_page") {
            Some(value) => parse_number("per_page", value, 1, MAX_PER_PAGE)?,
            None => DEFAULT_PER_PAGE,
        };
        let status = match params.get("status") {
            Some(value) => Some(parse_status_filter(value)?),
            None => None,
        };

        Ok(ListQuery {
            page,
            per_page,
            status,
        })
    }
}

fn parse_number(name: &str, value: &str, min: usize, max: usize) -> Result<usize, String> {
    let range = if max == usize::MAX {
        format!("an integer of at least {min}")
    } else {
        format!("an integer from {min} to {max}")
    };

    match value.parse::<usize>() {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        _ => Err(format!("invalid {name} '{value}': expected {range}")),
    }
}

fn parse_status_filter(value: &str) -> Result<Status, String> {
    FILTER_STATUSES
        .iter()
        .find(|status| status.as_str() == value)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = FILTER_STATUSES.iter().map(Status::as_str).collect();
            format!(
                "invalid status '{value}': expected one of {}",
                names.join(", ")
            )
        })
}

/// Splits a query string into decoded names and values. A repeated name
/// keeps its last value.
fn parse_query_string(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// Decodes `+` and `%XX` escapes. Invalid escapes stay as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;

    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());

        match (bytes[index], escaped) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                index += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }

    String::from_utf8_lossy(&decoded).into_owned()
}

/// Converts a configured status code, falling back to 500 for numbers that
/// are not valid HTTP status codes.
pub fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or_else(|_| {
        tracing::warn!(code, "invalid injected status code, sending 500 instead");
        StatusCode::INTERNAL_SERVER_ERROR
    })
}

/// Builds a JSON response.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = match serde_json::to_vec(body) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%error, "failed to encode response body");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "failed to encode body");
        }
    };

    let body = Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Builds the API's JSON error response, `{"status": N, "message": "..."}`.
pub fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let body = ErrorBody {
        status: status.as_u16(),
        message,
    };
    json_response(status, &body)
}

/// Builds the 404 response, with the API's message.
pub fn not_found() -> Response<Body> {
    error_response(StatusCode::NOT_FOUND, "requested entity not found")
}

/// Builds the 405 response for a method other than GET.
pub fn method_not_allowed(method: &Method) -> Response<Body> {
    let message = format!("method {method} not allowed: this API accepts only GET");
    let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, &message);
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_parses_endpoints() {
        let id = "a1b2c3d4-e5f6-4890-abcd-ef1234567890";
        let cases = [
            ("/v1/workflow", Route::List),
            (&format!("/v1/workflow/{id}"), Route::Get(id.to_owned())),
            (
                &format!("/v1/workflow/{id}/subscribe"),
                Route::Subscribe(id.to_owned()),
            ),
            ("/v1/workflow/", Route::NotFound),
            ("/v1/workflows", Route::NotFound),
            ("/v1/workflowx/abc/subscribe", Route::NotFound),
            ("/v1/workflow//subscribe", Route::NotFound),
            (&format!("/v1/workflow/{id}/other"), Route::NotFound),
            ("/v1/runner", Route::NotFound),
            ("/", Route::NotFound),
        ];

        for (path, expected) in cases {
            assert_eq!(Route::parse(path), expected, "path {path}");
        }
    }

    #[test]
    fn list_query_defaults() {
        let query = ListQuery::parse("");

        assert_eq!(
            query,
            Ok(ListQuery {
                page: 1,
                per_page: 10,
                status: None
            })
        );
    }

    #[test]
    fn list_query_reads_values() {
        let query = ListQuery::parse("page=3&per_page=100&status=failed&extra=1");

        assert_eq!(
            query,
            Ok(ListQuery {
                page: 3,
                per_page: 100,
                status: Some(Status::Failed)
            })
        );
    }

    #[test]
    fn list_query_rejects_out_of_range() {
        let rejected = [
            "page=0",
            "page=-1",
            "page=x",
            "page=",
            "per_page=0",
            "per_page=101",
            "per_page=ten",
            "status=accepted",
            "status=invalid",
            "status=Running",
            "status=",
        ];

        for query in rejected {
            assert!(ListQuery::parse(query).is_err(), "query {query}");
        }
    }

    #[test]
    fn percent_decode_handles_escapes() {
        assert_eq!(percent_decode("r%75nning"), "running");
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
