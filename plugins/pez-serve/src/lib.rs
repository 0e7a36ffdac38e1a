//! `pez-serve`: learned PEZ classifiers behind an OpenAI-compatible API, on mistral.rs.
//!
//! A classifier is a `prompt.json` applied to a base model: the server builds `[bos] prompt text template`, reads
//! the next-token logits of the verbalizer tokens and answers with the label. Classification runs on pez's own
//! forward pass (the one `pez eval` uses, so labels agree), with the prompt's keys and values computed once per
//! classifier and requests batched. Plain chat and completions on a base model go to the mistral.rs engine.
//!
//! Classifiers are also made here: files and fine-tuning jobs in OpenAI's shape (`tuning`), a job's prompt served
//! as a classifier as soon as it is learned.
//!
//! Layout: `routes/` one file per endpoint; `middleware` (request id, logs, metrics, body and concurrency
//! bounds) and `auth` (API keys); `requests` (typed bodies), `validate` (checks before work) and `openai` (typed
//! answers); `pool` and `worker` (classification); `engine` (mistral.rs, its differences in `engine::compat`);
//! `tuning` (files, jobs, their store and runners); `http` (the connection loop); `config`, `state`, `metrics`;
//! `error` at the bottom.

pub mod auth;
pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod metrics;
pub mod middleware;
pub mod openai;
pub mod pool;
pub mod requests;
pub mod routes;
pub mod state;
pub mod tuning;
pub mod validate;
pub mod worker;

pub use config::ServeConfig;
pub use pool::ClassifierPool;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use state::AppState;

/// Every route, with the middleware: a request is observed (id, log line, metrics), then its API key checked;
/// bodies are read in full (bounded in size and time) before a request takes one of the in-flight permits;
/// uploads stream in within `[tuning] max_file_bytes`.
pub fn router(state: AppState) -> Router {
    use routes::{chat, classify, completions, files, fine_tuning, health, models};
    let limited = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/classify", post(classify::classify))
        .route("/v1/fine_tuning/jobs", post(fine_tuning::create))
        .route("/v1/fine_tuning/jobs/{id}/cancel", post(fine_tuning::cancel))
        .route_layer(from_fn_with_state(state.clone(), middleware::limit_concurrency))
        .route_layer(from_fn_with_state(state.clone(), middleware::read_body));
    let upload_limit = state.tuning.as_ref().map_or(0, |t| t.cfg.max_file_bytes as usize) + (64 << 10);
    let upload = post(files::upload).layer(DefaultBodyLimit::max(upload_limit));
    Router::new()
        .route("/health", get(health::ready))
        .route("/health/live", get(health::live))
        .route("/metrics", get(health::metrics))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::retrieve))
        .route("/v1/files", upload.get(files::list))
        .route("/v1/files/{id}", get(files::retrieve).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/fine_tuning/jobs", get(fine_tuning::list))
        .route("/v1/fine_tuning/jobs/{id}", get(fine_tuning::retrieve))
        .route("/v1/fine_tuning/jobs/{id}/events", get(fine_tuning::events))
        .route("/v1/fine_tuning/jobs/{id}/checkpoints", get(fine_tuning::checkpoints))
        .merge(limited)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route", "invalid_request_error") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method",
                "invalid_request_error",
            )
        })
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(from_fn_with_state(state.clone(), middleware::authorize))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}
