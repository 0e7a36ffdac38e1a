//! One file per endpoint. Here what they share: which served model a request names (`target`), usage counts,
//! labels ranked by score, server-sent events, and generation on mistral.rs within the memory budget.

pub mod chat;
pub mod classify;
pub mod completions;
pub mod health;
pub mod models;

use crate::engine::{self, Kind};
use crate::error::ApiError;
use crate::metrics::resident_bytes;
use crate::middleware::served;
use crate::state::AppState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mistralrs_server_core::types::SharedMistralRsState;
use pez_classify::api::Usage;
use pez_classify::Scored;
use serde_json::Value;

/// Who answers a request for a model name.
pub enum Target {
    /// A learned classifier (pez's forward pass).
    Classifier,
    /// A base model's plain generation (mistral.rs).
    Engine(SharedMistralRsState),
}

pub fn target(s: &AppState, model: &str) -> Result<Target, ApiError> {
    if s.pool.classifiers.contains_key(model) {
        return Ok(Target::Classifier);
    }
    match s.bases.iter().find(|b| b.name == model) {
        Some(b) if b.generate => s.engine.clone().map(Target::Engine).ok_or_else(|| ApiError::unknown_model(model)),
        Some(_) => Err(ApiError::bad_request(format!("the base model `{model}` is served for classification only (mistral.rs does not run it); use one of its classifiers"))),
        None => Err(ApiError::unknown_model(model)),
    }
}

/// Scores `texts` with the classifier `model`.
pub async fn run_classifier(s: &AppState, model: &str, texts: Vec<String>) -> Result<Vec<Scored>, ApiError> {
    Ok(s.pool.classify(model, texts).await?)
}

pub fn usage(scored: &[Scored], completion_tokens: usize) -> Usage {
    let prompt_tokens: usize = scored.iter().map(|x| x.tokens).sum();
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    }
}

/// Labels sorted by log-probability, best first, at most `k`.
pub fn ranked(labels: &[String], lp: &[f32], k: usize) -> Vec<(String, f32)> {
    let mut v: Vec<(String, f32)> = labels.iter().cloned().zip(lp.iter().copied()).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(k);
    v
}

/// Server-sent events in OpenAI's shape: each event a `data:` line, then `data: [DONE]`.
pub fn sse(events: &[Value]) -> Response {
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Plain generation on mistral.rs: refused with a 503 while the resident size is over its budget.
pub async fn generate(
    s: &AppState,
    engine: SharedMistralRsState,
    request: Value,
    kind: Kind,
    model: String,
) -> Result<Response, ApiError> {
    let budget = s.limits.rss_budget();
    if resident_bytes().is_some_and(|r| r > budget) {
        s.metrics.memory_refusals.inc();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the server's memory is over its budget ({} MiB); generation is paused, retry later",
                budget >> 20
            ),
            "server_overloaded",
        ));
    }
    Ok(served(
        engine::generate(engine, request, kind, model.clone()).await?,
        model,
    ))
}
