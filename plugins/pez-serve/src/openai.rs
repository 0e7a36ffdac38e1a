//! The objects pez-serve answers with, typed in OpenAI's shape (field names as the `openai` Python package reads
//! them): chat completions and their chunks, (legacy) completions, models, and the list page every list route
//! returns. A classifier's answer and mistral.rs's (see `engine::compat`) are built as these.

use pez_classify::api::{LabelScores, Usage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `chat.completion`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: Message,
    pub finish_reason: String,
    pub logprobs: Option<ChatLogprobs>,
}

/// An assistant's message (whole, or a stream's delta).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Message {
    pub role: String,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<mistralrs_core::ToolCallResponse>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Message,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
}

/// Chat's logprobs: one entry per generated token.
#[derive(Debug, Clone, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    /// The token's text as UTF-8 bytes.
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
}

impl TopLogprob {
    pub fn new(token: &str, logprob: f64) -> Self {
        Self {
            token: token.to_string(),
            logprob,
            bytes: token.as_bytes().to_vec(),
        }
    }
}

/// `text_completion` (whole, or one chunk of a stream).
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<String>,
}

/// The legacy completions layout: per generated token its text, log-probability, the top alternatives (text ->
/// log-probability) and its offset in characters from the start of the completion.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f64>,
    /// Best first (an object keeps its keys' order).
    pub top_logprobs: Vec<LabelScores>,
    pub text_offset: Vec<usize>,
}

/// A served model's card (`/v1/models`): a base model, or a classifier with what it reads and answers.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: String,
    #[serde(flatten)]
    pub kind: ModelKind,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelKind {
    Base {
        /// Plain chat and completions run on mistral.rs for it.
        generation: bool,
    },
    Classifier {
        base_model: String,
        task: String,
        /// The best (or only) prompt.
        prompt: String,
        /// Every prompt a text is scored under (an ensemble's members, best first): forward passes per text.
        prompts: Vec<String>,
        template: String,
        labels: Vec<String>,
        calibration: pez_tasks::Calibration,
    },
}

/// A page of a list (`{"object": "list", "data": [...]}`); cursor pages (files, jobs, events, checkpoints) also
/// say whether more follow and their first and last ids.
#[derive(Debug, Clone, Serialize)]
pub struct List<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_more: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_id: Option<String>,
}

impl<T> List<T> {
    pub fn of(data: Vec<T>) -> Self {
        Self {
            object: "list",
            data,
            has_more: None,
            first_id: None,
            last_id: None,
        }
    }

    /// A cursor page: `data` (at most the page's limit), and whether more follow.
    pub fn page(data: Vec<T>, has_more: bool, id: impl Fn(&T) -> String) -> Self {
        let (first_id, last_id) = (data.first().map(&id), data.last().map(&id));
        Self {
            object: "list",
            data,
            has_more: Some(has_more),
            first_id,
            last_id,
        }
    }
}

/// `{"status": ...}` of the health routes, with the problems when unhealthy.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// `file`: an uploaded file.
#[derive(Debug, Clone, Serialize)]
pub struct FileObject {
    pub id: String,
    pub object: &'static str,
    pub bytes: u64,
    pub created_at: u64,
    pub filename: String,
    pub purpose: String,
    /// Deprecated in OpenAI's API; always `processed` here (a file is checked before it is kept).
    pub status: &'static str,
    pub expires_at: Option<u64>,
}

/// The answer to deleting a file.
#[derive(Debug, Clone, Serialize)]
pub struct FileDeleted {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}

/// `fine_tuning.job`.
#[derive(Debug, Clone, Serialize)]
pub struct FineTuningJob {
    pub id: String,
    pub object: &'static str,
    pub created_at: u64,
    pub error: Option<JobError>,
    pub fine_tuned_model: Option<String>,
    pub finished_at: Option<u64>,
    pub hyperparameters: JobHyperparameters,
    pub model: String,
    pub organization_id: String,
    pub result_files: Vec<String>,
    pub seed: u64,
    pub status: Status,
    pub trained_tokens: Option<u64>,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub estimated_finish: Option<u64>,
    /// None are supported (OpenAI's are Weights & Biases runs).
    pub integrations: Vec<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub method: JobMethod,
    pub user_provided_suffix: Option<String>,
}

/// OpenAI's three hyperparameters, as a PEZ run has them: examples per step, the learning rate over pez's
/// default for the optimizer, and passes over the training examples the steps make (rounded up).
#[derive(Debug, Clone, Serialize)]
pub struct JobHyperparameters {
    pub batch_size: usize,
    pub learning_rate_multiplier: f64,
    pub n_epochs: usize,
}

/// The job's method: `pez`, with every setting of the run and the task derived from the training file.
#[derive(Debug, Clone, Serialize)]
pub struct JobMethod {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pez: PezMethod,
}

#[derive(Debug, Clone, Serialize)]
pub struct PezMethod {
    pub hyperparameters: PezHyperparameters,
}

/// Every setting of a job's run (resolved: the defaults it got included) and its task's prompt format.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PezHyperparameters {
    pub template: String,
    pub verbalizers: Vec<String>,
    pub labels: Vec<String>,
    #[serde(flatten)]
    pub settings: pez_config::TuneSettings,
}

/// `fine_tuning.job.event`.
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    pub id: String,
    pub object: &'static str,
    pub created_at: u64,
    pub level: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Option<Metrics>,
}

/// `fine_tuning.job.checkpoint`: a holdout evaluation the run can be resumed from.
#[derive(Debug, Clone, Serialize)]
pub struct JobCheckpoint {
    pub id: String,
    pub object: &'static str,
    pub created_at: u64,
    pub fine_tuned_model_checkpoint: String,
    pub fine_tuning_job_id: String,
    pub metrics: Metrics,
    pub step_number: u64,
}

/// A job's state, as OpenAI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display, strum::EnumString)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Status {
    ValidatingFiles,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Why a job failed (OpenAI's `error` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
    pub param: Option<String>,
}

/// Where a run is: an event's data (every few steps, and at each holdout evaluation) and a checkpoint's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub step: u64,
    pub total_steps: u64,
    /// Mean training loss since the last report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    /// Accuracy of the prompt of this step on the holdout (at evaluations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holdout_accuracy: Option<f64>,
    /// The best holdout accuracy so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_holdout_accuracy: Option<f64>,
    /// The hard prompt of this step (at evaluations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    pub elapsed_s: f64,
    /// Seconds left at the rate so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
}

/// Seconds since the Unix epoch: what every object's `created`/`created_at` says.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
