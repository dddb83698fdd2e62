//! JSON bodies in the shapes of the ComfyControl API.
//!
//! Snapshot fields follow the order of the API documentation's subscribe
//! examples, because serde serializes struct fields in declaration order.

use serde::Serialize;
use serde_json::{json, Value};

use super::store::{Runner, WorkflowRecord};
use super::timeline::{End, TimelineState};

/// The error body that every non-2xx response carries.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub status: u16,
    pub message: &'a str,
}

/// One event of the subscribe stream: a complete snapshot of the workflow.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub status: String,
    pub prompt: Option<Prompt>,
    pub queue_number: Option<u32>,
    pub outputs: Vec<Output>,
    pub cause: Option<Cause>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Prompt {
    pub prompt_id: String,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub id: String,
    pub workflow_id: String,
    pub src: String,
}

#[derive(Debug, Serialize)]
pub struct Cause {
    pub node_type: Option<String>,
    pub exception_type: Option<String>,
    pub exception_message: String,
}

/// The body of `GET /v1/workflow`.
#[derive(Debug, Serialize)]
pub struct ListBody {
    pub workflows: Vec<ListItem>,
    pub total: usize,
}

/// A workflow in the list view.
#[derive(Debug, Serialize)]
pub struct ListItem {
    pub id: String,
    pub name: String,
    pub status: String,
    pub tags: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}

/// The body of `GET /v1/workflow/{id}`.
#[derive(Debug, Serialize)]
pub struct DetailBody {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub status: String,
    pub tags: Vec<String>,
    pub user_runner_id: Option<String>,
    pub managed_runner_id: Option<String>,
    pub workflow_json: Value,
    pub workflow_params: Vec<Param>,
    pub prompt_id: Option<String>,
    pub queue_number: Option<u32>,
    pub error_node: Option<String>,
    pub exception_type: Option<String>,
    pub exception_message: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}

/// A value substituted for a placeholder of the workflow JSON.
#[derive(Debug, Serialize)]
pub struct Param {
    pub placeholder: String,
    pub value: String,
}

/// Builds the stream snapshot of `record` in `state`.
pub fn snapshot(record: &WorkflowRecord, state: &TimelineState) -> Snapshot {
    let prompt = state.started.map(|_| Prompt {
        prompt_id: record.prompt_id.to_string(),
    });

    Snapshot {
        status: state.status.as_str().to_owned(),
        prompt,
        queue_number: state.queue_number,
        outputs: outputs(record, state),
        cause: cause(&record.workflow.end, state),
        started_at: state.started.map(|offset| record.timestamp(offset)),
        completed_at: state.completed.map(|offset| record.timestamp(offset)),
    }
}

/// Builds the list view of `record` in `state`.
pub fn list_item(record: &WorkflowRecord, state: &TimelineState) -> ListItem {
    let workflow = &record.workflow;

    ListItem {
        id: workflow.id.to_string(),
        name: workflow.name.clone(),
        status: state.status.as_str().to_owned(),
        tags: workflow.tags.clone(),
        created_at: record.timestamp(Default::default()),
        updated_at: record.timestamp(state.updated),
        started_at: state.started.map(|offset| record.timestamp(offset)),
        completed_at: state.completed.map(|offset| record.timestamp(offset)),
    }
}

/// Builds the detailed view of `record` in `state`.
pub fn detail(record: &WorkflowRecord, state: &TimelineState) -> DetailBody {
    let item = list_item(record, state);
    let cause = cause(&record.workflow.end, state);
    let (user_runner_id, managed_runner_id) = match record.runner {
        Runner::User(id) => (Some(id.to_string()), None),
        Runner::Managed(id) => (None, Some(id.to_string())),
    };

    DetailBody {
        id: item.id,
        user_id: record.user_id.to_string(),
        name: item.name,
        status: item.status,
        tags: item.tags,
        user_runner_id,
        managed_runner_id,
        workflow_json: workflow_json(record),
        workflow_params: workflow_params(record),
        prompt_id: state.started.map(|_| record.prompt_id.to_string()),
        queue_number: state.queue_number,
        error_node: cause.as_ref().and_then(|c| c.node_type.clone()),
        exception_type: cause.as_ref().and_then(|c| c.exception_type.clone()),
        exception_message: cause.map(|c| c.exception_message),
        created_at: item.created_at,
        updated_at: item.updated_at,
        started_at: item.started_at,
        completed_at: item.completed_at,
    }
}

fn outputs(record: &WorkflowRecord, state: &TimelineState) -> Vec<Output> {
    let count = match (&record.workflow.end, state.ended) {
        (End::Completed { outputs }, true) => *outputs,
        _ => 0,
    };
    let workflow_id = record.workflow.id.to_string();

    (1..=count)
        .map(|index| Output {
            id: format!("output-{index}"),
            workflow_id: workflow_id.clone(),
            src: format!(
                "https://storage.comfycontrol.app/outputs/{workflow_id}/{index}.png?signature=simulated"
            ),
        })
        .collect()
}

fn cause(end: &End, state: &TimelineState) -> Option<Cause> {
    match end {
        End::Failed {
            node_type,
            exception_type,
            message,
        } if state.ended => Some(Cause {
            node_type: node_type.clone(),
            exception_type: exception_type.clone(),
            exception_message: message.clone(),
        }),
        _ => None,
    }
}

/// Builds a small ComfyUI API-format graph: checkpoint, prompt, sampler,
/// decoder and saver, with `{{prompt}}` and `{{seed}}` placeholders.
fn workflow_json(record: &WorkflowRecord) -> Value {
    json!({
        "3": {"class_type": "KSampler", "inputs": {
            "seed": "{{seed}}", "steps": 25, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {
            "ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {
            "width": 1024, "height": 1024, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {
            "text": "{{prompt}}", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {
            "text": "blurry, low quality", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {
            "samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {
            "filename_prefix": record.workflow.name, "images": ["8", 0]}},
    })
}

fn workflow_params(record: &WorkflowRecord) -> Vec<Param> {
    vec![
        Param {
            placeholder: "{{prompt}}".to_owned(),
            value: format!("{}, studio lighting, detailed", record.workflow.name),
        },
        Param {
            placeholder: "{{seed}}".to_owned(),
            value: record.sampler_seed.to_string(),
        },
    ]
}
