//! `pez-serve`: learned PEZ classifiers behind an OpenAI-compatible API, on mistral.rs.
//!
//! A classifier is a `prompt.json` applied to a base model: the server builds `[bos] prompt text template`, reads
//! the next-token logits of the verbalizer tokens and answers with the label. Classification runs on pez's own
//! forward pass (the one `pez eval` uses, so labels agree), with the prompt's keys and values computed once per
//! classifier and requests batched. Plain chat and completions on a base model go to the mistral.rs engine.
//!
//! Layout: `routes/` one file per endpoint; `middleware` (request id, logs, metrics, body and concurrency
//! bounds); `requests` (typed bodies) and `validate` (checks before work); `pool` and `worker` (classification);
//! `engine` (mistral.rs); `http` (the connection loop); `config`, `state`, `metrics`; `error` at the bottom.

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

/// Every route, with the middleware: bodies are read in full (bounded in size and time) before a request takes
/// one of the in-flight permits; every request is observed (id, log line, metrics).
pub fn router(state: AppState) -> Router {
    let limited = Router::new()
        .route("/v1/chat/completions", post(routes::chat::chat_completions))
        .route("/v1/completions", post(routes::completions::completions))
        .route("/v1/classify", post(routes::classify::classify))
        .route_layer(from_fn_with_state(state.clone(), middleware::limit_concurrency))
        .route_layer(from_fn_with_state(state.clone(), middleware::read_body));
    Router::new()
        .route("/health", get(routes::health::ready))
        .route("/health/live", get(routes::health::live))
        .route("/metrics", get(routes::health::metrics))
        .route("/v1/models", get(routes::models::list))
        .route("/v1/models/{id}", get(routes::models::retrieve))
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
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}
