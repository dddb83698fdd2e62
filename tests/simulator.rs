//! Black-box tests of the API simulator over loopback HTTP.
//!
//! Timelines follow wall-clock time, so the tests that watch a workflow
//! change make every phase last several snapshot intervals and check the
//! order of statuses rather than exact event counts per phase.

use std::time::Duration;

use comfycontrol_exporter::simulator::{
    self, End, Endpoint, Phase, ScriptedWorkflow, SimulatorConfig, SimulatorHandle, Status,
    StreamFault, Workload,
};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;

const TOKEN: &str = "cfc_test1";
const INTERVAL: Duration = Duration::from_millis(50);

/// Upper bound for reading one stream, far above any expected duration, so
/// that a hanging stream fails the test instead of blocking it.
const STREAM_TIMEOUT: Duration = Duration::from_secs(20);

fn config(workflows: Vec<ScriptedWorkflow>) -> SimulatorConfig {
    SimulatorConfig {
        token: TOKEN.to_owned(),
        interval: INTERVAL,
        max_updates: 120,
        rate_limit: 0,
        workload: Workload::Scripted(workflows),
        ..SimulatorConfig::default()
    }
}

async fn start(config: SimulatorConfig) -> SimulatorHandle {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    simulator::start(config, listener)
        .await
        .expect("start the simulator")
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .build()
        .expect("build the HTTP client")
}

async fn get(sim: &SimulatorHandle, path: &str) -> Response {
    get_with_token(sim, path, TOKEN).await
}

async fn get_with_token(sim: &SimulatorHandle, path: &str, token: &str) -> Response {
    client()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("send the request")
}

async fn json_body(response: Response) -> Value {
    response.json().await.expect("read a JSON body")
}

fn running_forever(name: &str) -> ScriptedWorkflow {
    let phases = vec![Phase::new(Status::Running, Duration::from_secs(3600))];
    ScriptedWorkflow::new(name, phases, End::Never)
}

fn ended(name: &str, end: End) -> ScriptedWorkflow {
    ScriptedWorkflow::new(name, Vec::new(), end)
}

/// What a subscribe stream delivered before it ended.
struct StreamRead {
    /// Everything received, as text.
    raw: String,
    /// The JSON of each complete `data:` event.
    events: Vec<Value>,
    /// Whether the body ended cleanly, rather than with a transport error.
    clean_end: bool,
}

impl StreamRead {
    fn statuses(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|event| event["status"].as_str().unwrap_or("<none>").to_owned())
            .collect()
    }
}

async fn read_stream(mut response: Response) -> StreamRead {
    let mut bytes = Vec::new();
    let read = async {
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    };
    let clean_end = tokio::time::timeout(STREAM_TIMEOUT, read)
        .await
        .expect("stream ended within the timeout");

    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let events = parse_events(&raw);
    StreamRead {
        raw,
        events,
        clean_end,
    }
}

/// Parses complete events, each ended by a blank line, and keeps the JSON
/// of their `data:` lines. A trailing incomplete event is skipped.
fn parse_events(raw: &str) -> Vec<Value> {
    let complete = match raw.rfind("\n\n") {
        Some(end) => &raw[..end],
        None => "",
    };

    complete
        .split("\n\n")
        .flat_map(|block| block.lines())
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("event data is JSON"))
        .collect()
}

async fn subscribe(sim: &SimulatorHandle, workflow: &ScriptedWorkflow) -> Response {
    get(sim, &format!("/v1/workflow/{}/subscribe", workflow.id)).await
}

#[tokio::test]
async fn missing_token_gets_401() {
    let workflow = running_forever("a");
    let sim = start(config(vec![workflow.clone()])).await;
    let paths = [
        "/v1/workflow".to_owned(),
        format!("/v1/workflow/{}", workflow.id),
        format!("/v1/workflow/{}/subscribe", workflow.id),
    ];

    for path in &paths {
        let response = client()
            .get(format!("{}{path}", sim.base_url()))
            .send()
            .await
            .expect("send the request");

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body = json_body(response).await;
        assert_eq!(body["status"], 401, "{path}");
        assert!(body["message"].is_string(), "{path}");
    }
}

#[tokio::test]
async fn wrong_token_gets_401() {
    let sim = start(config(Vec::new())).await;

    let response = get_with_token(&sim, "/v1/workflow", "cfc_wrong").await;

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(response).await["status"], 401);
}

#[tokio::test]
async fn token_rotation_takes_effect() {
    let sim = start(config(Vec::new())).await;

    sim.set_token("cfc_rotated");
    let old = get_with_token(&sim, "/v1/workflow", TOKEN).await;
    let new = get_with_token(&sim, "/v1/workflow", "cfc_rotated").await;

    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(new.status(), StatusCode::OK);
}

#[tokio::test]
async fn list_newest_first() {
    let sim = start(config(Vec::new())).await;
    for name in ["w1", "w2", "w3", "w4", "w5"] {
        sim.add_workflow(running_forever(name));
    }

    let body = json_body(get(&sim, "/v1/workflow?per_page=2").await).await;
    let second = json_body(get(&sim, "/v1/workflow?per_page=2&page=2").await).await;
    let beyond = json_body(get(&sim, "/v1/workflow?per_page=2&page=9").await).await;

    let names = |page: &Value| -> Vec<String> {
        page["workflows"]
            .as_array()
            .expect("workflows is an array")
            .iter()
            .map(|w| w["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(names(&body), ["w5", "w4"]);
    assert_eq!(names(&second), ["w3", "w2"]);
    assert_eq!(names(&beyond), Vec::<String>::new());
    assert_eq!(body["total"], 5);
    assert_eq!(beyond["total"], 5);
}

#[tokio::test]
async fn list_default_page_size_is_ten() {
    let workflows = (0..12).map(|n| running_forever(&format!("w{n}"))).collect();
    let sim = start(config(workflows)).await;

    let body = json_body(get(&sim, "/v1/workflow").await).await;

    assert_eq!(body["workflows"].as_array().map(Vec::len), Some(10));
    assert_eq!(body["total"], 12);
}

#[tokio::test]
async fn list_item_has_documented_fields() {
    let workflow = running_forever("Text to Image").with_tags(&["production", "text2img"]);
    let sim = start(config(vec![workflow.clone()])).await;

    let body = json_body(get(&sim, "/v1/workflow").await).await;
    let item = &body["workflows"][0];

    let mut keys: Vec<&str> = item
        .as_object()
        .expect("item is an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "completed_at",
            "created_at",
            "id",
            "name",
            "started_at",
            "status",
            "tags",
            "updated_at"
        ]
    );
    assert_eq!(item["id"], workflow.id.to_string());
    assert_eq!(item["status"], "running");
    assert_eq!(item["tags"], serde_json::json!(["production", "text2img"]));
    assert!(item["started_at"].is_string());
    assert!(item["completed_at"].is_null());
}

#[tokio::test]
async fn list_filters_by_status() {
    let workflows = vec![
        running_forever("running"),
        ended("done", End::Completed { outputs: 1 }),
        ended("broken", End::FailedWithoutCause),
        ended("also done", End::Completed { outputs: 2 }),
    ];
    let sim = start(config(workflows)).await;

    let completed = json_body(get(&sim, "/v1/workflow?status=completed").await).await;
    let failed = json_body(get(&sim, "/v1/workflow?status=failed").await).await;
    let queued = json_body(get(&sim, "/v1/workflow?status=queued").await).await;

    assert_eq!(completed["total"], 2);
    assert_eq!(completed["workflows"][0]["name"], "also done");
    assert_eq!(failed["total"], 1);
    assert_eq!(queued["total"], 0);
}

#[tokio::test]
async fn list_rejects_invalid_query() {
    let sim = start(config(Vec::new())).await;
    let queries = [
        "per_page=0",
        "per_page=101",
        "per_page=abc",
        "page=0",
        "status=accepted",
        "status=bogus",
    ];

    for query in queries {
        let response = get(&sim, &format!("/v1/workflow?{query}")).await;

        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body = json_body(response).await;
        assert_eq!(body["status"], 400, "{query}");
        assert!(body["message"].is_string(), "{query}");
    }
}

#[tokio::test]
async fn list_accepts_page_size_limits() {
    let sim = start(config(Vec::new())).await;

    for query in ["per_page=1", "per_page=100"] {
        let response = get(&sim, &format!("/v1/workflow?{query}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{query}");
    }
}

#[tokio::test]
async fn get_returns_detail() {
    let failed = ended(
        "broken",
        End::Failed {
            node_type: Some("KSampler".to_owned()),
            exception_type: Some("torch.cuda.OutOfMemoryError".to_owned()),
            message: "CUDA out of memory".to_owned(),
        },
    );
    let sim = start(config(vec![failed.clone()])).await;

    let response = get(&sim, &format!("/v1/workflow/{}", failed.id)).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(response).await;
    assert_eq!(body["id"], failed.id.to_string());
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error_node"], "KSampler");
    assert_eq!(body["exception_type"], "torch.cuda.OutOfMemoryError");
    assert_eq!(body["exception_message"], "CUDA out of memory");
    assert!(body["user_id"].is_string());
    assert!(body["workflow_json"].is_object());
    assert!(body["workflow_params"].is_array());
    assert!(body["queue_number"].is_null());
    assert!(body["completed_at"].is_string());
    let user_runner = body["user_runner_id"].is_string();
    let managed_runner = body["managed_runner_id"].is_string();
    assert!(
        user_runner != managed_runner,
        "exactly one runner id: {body}"
    );
}

#[tokio::test]
async fn get_unknown_id_gets_404() {
    let sim = start(config(Vec::new())).await;

    let response = get(&sim, &format!("/v1/workflow/{}", uuid::Uuid::new_v4())).await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_body(response).await["status"], 404);
}

#[tokio::test]
async fn malformed_id_gets_400() {
    let sim = start(config(Vec::new())).await;

    for path in ["/v1/workflow/not-a-uuid", "/v1/workflow/123/subscribe"] {
        let response = get(&sim, path).await;

        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(json_body(response).await["status"], 400, "{path}");
    }
}

#[tokio::test]
async fn unknown_path_gets_404() {
    let sim = start(config(Vec::new())).await;

    let response = get(&sim, "/v1/runner").await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_body(response).await["status"], 404);
}

#[tokio::test]
async fn other_method_gets_405() {
    let sim = start(config(Vec::new())).await;

    let response = client()
        .post(format!("{}/v1/workflow", sim.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send the request");

    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(json_body(response).await["status"], 405);
}

#[tokio::test]
async fn subscribe_unknown_id_gets_404() {
    let sim = start(config(Vec::new())).await;

    let path = format!("/v1/workflow/{}/subscribe", uuid::Uuid::new_v4());
    let response = get(&sim, &path).await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_body(response).await["status"], 404);
}

#[tokio::test]
async fn subscribe_follows_lifecycle_to_completion() {
    let phase = INTERVAL * 6;
    let workflow = ScriptedWorkflow::new(
        "lifecycle",
        vec![Phase::queued(phase, 3), Phase::new(Status::Running, phase)],
        End::Completed { outputs: 2 },
    );
    let sim = start(config(Vec::new())).await;
    sim.add_workflow(workflow.clone());

    let response = subscribe(&sim, &workflow).await;
    let content_type = response.headers().get("content-type").cloned();
    let stream = read_stream(response).await;

    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    assert!(stream.clean_end, "stream ended with an error");
    let statuses = stream.statuses();
    let mut order = statuses.clone();
    order.dedup();
    assert_eq!(order, ["queued", "running", "completed"], "{statuses:?}");

    let first = &stream.events[0];
    let queue_number = first["queue_number"].as_u64();
    assert!(
        queue_number.is_some_and(|n| (1..=3).contains(&n)),
        "{first}"
    );
    assert!(first["prompt"].is_null());
    assert!(first["started_at"].is_null());

    let last = stream.events.last().expect("at least one event");
    assert!(last["queue_number"].is_null());
    assert!(last["cause"].is_null());
    assert!(last["started_at"].is_string());
    assert!(last["completed_at"].is_string());
    assert!(last["prompt"]["prompt_id"].is_string());
    let outputs = last["outputs"].as_array().expect("outputs is an array");
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[0]["workflow_id"], workflow.id.to_string());
    assert!(outputs[0]["id"].is_string());
    assert!(outputs[0]["src"].is_string());
}

#[tokio::test]
async fn snapshot_has_exactly_documented_fields() {
    let workflow = ended("done", End::Completed { outputs: 1 });
    let sim = start(config(vec![workflow.clone()])).await;

    let stream = read_stream(subscribe(&sim, &workflow).await).await;

    let mut keys: Vec<&str> = stream.events[0]
        .as_object()
        .expect("event is an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cause",
            "completed_at",
            "outputs",
            "prompt",
            "queue_number",
            "started_at",
            "status"
        ]
    );
}

#[tokio::test]
async fn queue_number_falls_while_queued() {
    let workflow = ScriptedWorkflow::new(
        "queued",
        vec![Phase::queued(Duration::from_secs(3600), 4)],
        End::Never,
    );
    let mut config = config(Vec::new());
    config.max_updates = 6;
    config.interval = Duration::from_millis(100);
    let sim = start(config).await;
    sim.add_workflow(workflow.clone());

    let stream = read_stream(subscribe(&sim, &workflow).await).await;

    let numbers: Vec<u64> = stream
        .events
        .iter()
        .map(|event| event["queue_number"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(numbers.len(), 6);
    assert!(numbers[0] <= 4, "{numbers:?}");
    assert!(numbers[0] >= 2, "{numbers:?}");
    assert_eq!(numbers.last(), Some(&1), "{numbers:?}");
    assert!(
        numbers.windows(2).all(|pair| pair[0] >= pair[1]),
        "{numbers:?}"
    );
}

#[tokio::test]
async fn failed_snapshot_carries_cause() {
    let workflow = ended(
        "broken",
        End::Failed {
            node_type: Some("VAEDecode".to_owned()),
            exception_type: Some("RuntimeError".to_owned()),
            message: "bad latent".to_owned(),
        },
    );
    let sim = start(config(vec![workflow.clone()])).await;

    let stream = read_stream(subscribe(&sim, &workflow).await).await;

    assert_eq!(stream.events.len(), 1);
    let cause = &stream.events[0]["cause"];
    assert_eq!(cause["node_type"], "VAEDecode");
    assert_eq!(cause["exception_type"], "RuntimeError");
    assert_eq!(cause["exception_message"], "bad latent");
    assert_eq!(stream.events[0]["outputs"], serde_json::json!([]));
}

#[tokio::test]
async fn failure_without_cause_sends_null() {
    let workflow = ended("broken", End::FailedWithoutCause);
    let sim = start(config(vec![workflow.clone()])).await;

    let stream = read_stream(subscribe(&sim, &workflow).await).await;

    assert_eq!(stream.events[0]["status"], "failed");
    assert!(stream.events[0]["cause"].is_null());
}

#[tokio::test]
async fn terminal_statuses_close_stream() {
    let ends = [
        End::Completed { outputs: 1 },
        End::FailedWithoutCause,
        End::Cancelled,
        End::Invalid,
    ];

    for end in ends {
        let workflow = ended("terminal", end.clone());
        let sim = start(config(vec![workflow.clone()])).await;

        let stream = read_stream(subscribe(&sim, &workflow).await).await;

        assert!(stream.clean_end, "{end:?}");
        assert_eq!(stream.events.len(), 1, "{end:?}");
    }
}

#[tokio::test]
async fn stream_closes_after_max_updates() {
    let workflow = running_forever("long");
    let mut config = config(vec![workflow.clone()]);
    config.max_updates = 5;
    config.interval = Duration::from_millis(20);
    let sim = start(config).await;

    let stream = read_stream(subscribe(&sim, &workflow).await).await;

    assert!(stream.clean_end);
    assert_eq!(stream.events.len(), 5);
    assert_eq!(sim.stats().events_sent, 5);
    assert_eq!(sim.stats().subscribe_connections, 1);
}

#[tokio::test]
async fn reconnect_repeats_current_state() {
    let workflow = ScriptedWorkflow::new(
        "requeued",
        vec![
            Phase::new(Status::Queued, INTERVAL * 10),
            Phase::new(Status::Running, Duration::from_secs(3600)),
        ],
        End::Never,
    );
    let mut config = config(Vec::new());
    config.max_updates = 1;
    let sim = start(config).await;
    sim.add_workflow(workflow.clone());

    let first = read_stream(subscribe(&sim, &workflow).await).await;
    tokio::time::sleep(INTERVAL * 12).await;
    let second = read_stream(subscribe(&sim, &workflow).await).await;

    assert_eq!(first.statuses(), ["queued"]);
    assert_eq!(second.statuses(), ["running"]);
}

#[tokio::test]
async fn unknown_status_sent_verbatim() {
    let workflow = ScriptedWorkflow::new(
        "paused",
        vec![Phase::new(
            Status::Unknown("paused".to_owned()),
            Duration::from_secs(3600),
        )],
        End::Never,
    );
    let mut config = config(vec![workflow.clone()]);
    config.max_updates = 1;
    let sim = start(config).await;

    let stream = read_stream(subscribe(&sim, &workflow).await).await;

    assert_eq!(stream.statuses(), ["paused"]);
}

#[tokio::test]
async fn drop_after_cuts_connection() {
    let workflow = running_forever("dropped").with_fault(StreamFault::DropAfter {
        connection: 1,
        events: 2,
    });
    let mut config = config(vec![workflow.clone()]);
    config.max_updates = 3;
    let sim = start(config).await;

    let first = read_stream(subscribe(&sim, &workflow).await).await;
    let second = read_stream(subscribe(&sim, &workflow).await).await;

    assert!(!first.clean_end, "first connection ended cleanly");
    assert_eq!(first.events.len(), 2);
    assert!(second.clean_end, "second connection ended with an error");
    assert_eq!(second.events.len(), 3);
}

#[tokio::test]
async fn drop_mid_event_leaves_partial_line() {
    let workflow = running_forever("half").with_fault(StreamFault::DropMidEvent {
        connection: 1,
        events: 1,
    });
    let sim = start(config(vec![workflow.clone()])).await;

    let stream = read_stream(subscribe(&sim, &workflow).await).await;

    assert!(!stream.clean_end);
    assert_eq!(stream.events.len(), 1);
    let rest = stream
        .raw
        .rsplit_once("\n\n")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    assert!(rest.starts_with("data: {"), "partial event: {rest:?}");
    assert!(!rest.contains('\n'), "partial event: {rest:?}");
}

#[tokio::test]
async fn raw_line_written_verbatim() {
    let workflow = running_forever("raw").with_fault(StreamFault::RawLine {
        connection: 1,
        after_events: 1,
        bytes: b": keep-alive\n\nevent: update\nid: 7\nretry: 500\r\n\r\n".to_vec(),
    });
    let mut config = config(vec![workflow.clone()]);
    config.max_updates = 2;
    let sim = start(config).await;

    let stream = read_stream(subscribe(&sim, &workflow).await).await;

    assert!(stream.clean_end);
    assert_eq!(stream.events.len(), 2);
    let after_first = stream.raw.find("\n\n").map(|end| &stream.raw[end + 2..]);
    assert_eq!(
        after_first.map(
            |rest| rest.starts_with(": keep-alive\n\nevent: update\nid: 7\nretry: 500\r\n\r\n")
        ),
        Some(true),
        "{:?}",
        stream.raw
    );
    assert_eq!(sim.stats().events_sent, 2);
}

#[tokio::test]
async fn status_fault_replaces_stream() {
    let workflow = running_forever("refused").with_fault(StreamFault::Status {
        connection: 1,
        code: 503,
    });
    let mut config = config(vec![workflow.clone()]);
    config.max_updates = 1;
    let sim = start(config).await;

    let refused = subscribe(&sim, &workflow).await;
    let refused_status = refused.status();
    let refused_body = json_body(refused).await;
    let accepted = read_stream(subscribe(&sim, &workflow).await).await;

    assert_eq!(refused_status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused_body["status"], 503);
    assert_eq!(accepted.events.len(), 1);
    assert_eq!(sim.stats().subscribe_connections, 1);
    assert_eq!(sim.stats().by_endpoint.subscribe, 2);
}

#[tokio::test]
async fn fail_next_fails_only_that_endpoint() {
    let workflow = running_forever("a");
    let sim = start(config(vec![workflow.clone()])).await;

    sim.fail_next(Endpoint::List, 2, 503);
    let first = get(&sim, "/v1/workflow").await;
    let other = get(&sim, &format!("/v1/workflow/{}", workflow.id)).await;
    let second = get(&sim, "/v1/workflow").await;
    let third = get(&sim, "/v1/workflow").await;

    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_body(first).await["status"], 503);
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.status(), StatusCode::OK);
}

#[tokio::test]
async fn fail_next_applies_to_subscribe() {
    let workflow = running_forever("a");
    let sim = start(config(vec![workflow.clone()])).await;

    sim.fail_next(Endpoint::Subscribe, 1, 500);
    let response = subscribe(&sim, &workflow).await;

    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json_body(response).await["status"], 500);
    assert_eq!(sim.stats().subscribe_connections, 0);
}

fn rate_limited(cooldown: Duration) -> SimulatorConfig {
    SimulatorConfig {
        rate_limit: 40,
        // A long window keeps the test independent of how fast the machine
        // sends the first 40 requests.
        rate_window: Duration::from_secs(60),
        cooldown,
        ..config(Vec::new())
    }
}

#[tokio::test]
async fn rate_limit_rejects_41st_request() {
    let cooldown = Duration::from_millis(300);
    let sim = start(rate_limited(cooldown)).await;

    for request in 1..=40 {
        let response = get(&sim, "/v1/workflow").await;
        assert_eq!(response.status(), StatusCode::OK, "request {request}");
    }
    let over = get(&sim, "/v1/workflow").await;
    let over_retry_after = over.headers().get("retry-after").cloned();
    let over_status = over.status();
    let over_body = json_body(over).await;
    let during = get(&sim, "/v1/workflow").await;
    let during_status = during.status();

    assert_eq!(over_status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over_body["status"], 429);
    assert_eq!(over_retry_after, None);
    assert_eq!(during_status, StatusCode::TOO_MANY_REQUESTS);
    let stats = sim.stats();
    assert_eq!(stats.over_limit, 1);
    assert_eq!(stats.during_cooldown.len(), 1);
    assert!(stats.during_cooldown[0] < cooldown);

    tokio::time::sleep(cooldown).await;
    let after = get(&sim, "/v1/workflow").await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(sim.stats().requests, 43);
}

#[tokio::test]
async fn rate_limit_counts_all_endpoints() {
    let workflow = running_forever("a");
    let config = SimulatorConfig {
        rate_limit: 3,
        workload: Workload::Scripted(vec![workflow.clone()]),
        ..rate_limited(Duration::from_secs(60))
    };
    let sim = start(config).await;

    let list = get(&sim, "/v1/workflow").await;
    let detail = get(&sim, &format!("/v1/workflow/{}", workflow.id)).await;
    let unauthorized = get_with_token(&sim, "/v1/workflow", "cfc_wrong").await;
    let over = get(&sim, "/v1/workflow").await;

    assert_eq!(list.status(), StatusCode::OK);
    assert_eq!(detail.status(), StatusCode::OK);
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn retry_after_sent_when_configured() {
    let config = SimulatorConfig {
        rate_limit: 1,
        retry_after: true,
        ..rate_limited(Duration::from_secs(5))
    };
    let sim = start(config).await;

    let allowed = get(&sim, "/v1/workflow").await;
    let over = get(&sim, "/v1/workflow").await;

    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = over
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok());
    assert_eq!(retry_after, Some("5"));
}

#[tokio::test]
async fn stats_count_requests_by_endpoint() {
    let workflow = ended("done", End::Cancelled);
    let sim = start(config(vec![workflow.clone()])).await;

    get(&sim, "/v1/workflow").await;
    get(&sim, "/v1/workflow").await;
    get(&sim, &format!("/v1/workflow/{}", workflow.id)).await;
    read_stream(subscribe(&sim, &workflow).await).await;
    get(&sim, "/elsewhere").await;

    let stats = sim.stats();
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.by_endpoint.count(Endpoint::List), 2);
    assert_eq!(stats.by_endpoint.count(Endpoint::Get), 1);
    assert_eq!(stats.by_endpoint.count(Endpoint::Subscribe), 1);
    assert_eq!(stats.subscribe_connections, 1);
    assert_eq!(stats.events_sent, 1);
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let workflow = running_forever("open");
    let sim = start(config(vec![workflow.clone()])).await;
    let mut response = subscribe(&sim, &workflow).await;
    let first = response.chunk().await.expect("read the first event");
    assert!(first.is_some());

    sim.shutdown().await;
    let rest = tokio::time::timeout(STREAM_TIMEOUT, async {
        loop {
            match response.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    })
    .await;

    assert!(rest.is_ok(), "stream still open after shutdown");
}

#[tokio::test]
async fn generated_workload_serves_history() {
    let config = SimulatorConfig {
        workload: Workload::Generated(simulator::GeneratedWorkload {
            seed: 42,
            mean_arrival: Duration::from_millis(100),
            time_scale: 0.01,
            initial: 20,
        }),
        ..config(Vec::new())
    };
    let sim = start(config).await;

    let first = json_body(get(&sim, "/v1/workflow?per_page=100").await).await;
    let workflows = first["workflows"]
        .as_array()
        .expect("workflows is an array");
    let id = workflows[0]["id"]
        .as_str()
        .expect("id is a string")
        .to_owned();
    let detail = get(&sim, &format!("/v1/workflow/{id}")).await;

    assert!(first["total"].as_u64().unwrap_or(0) >= 20);
    assert_eq!(detail.status(), StatusCode::OK);
}

#[tokio::test]
async fn base_url_is_loopback() {
    let sim = start(config(Vec::new())).await;

    let url = sim.base_url();

    assert_eq!(url, format!("http://127.0.0.1:{}", sim.local_addr().port()));
}

fn simulate_args(listen: std::net::SocketAddr) -> simulator::SimulateArgs {
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: simulator::SimulateArgs,
    }

    let listen = format!("--listen={listen}");
    Command::try_parse_from(["simulate", listen.as_str(), "--seed=1"])
        .expect("parse simulate flags")
        .args
}

#[tokio::test]
async fn run_reports_busy_address() {
    let occupied = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let address = occupied.local_addr().expect("read the bound address");

    let result = simulator::run(simulate_args(address), std::future::ready(())).await;

    let Err(error) = result else {
        panic!("run bound an address that is in use");
    };
    assert!(
        matches!(error, simulator::SimulatorError::Bind { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&address.to_string()), "{error}");
}

#[tokio::test]
async fn run_returns_after_shutdown() {
    let address = "127.0.0.1:0".parse().expect("parse a loopback address");

    let result = tokio::time::timeout(
        STREAM_TIMEOUT,
        simulator::run(simulate_args(address), std::future::ready(())),
    )
    .await;

    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
}
