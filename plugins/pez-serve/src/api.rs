//! The HTTP API: OpenAI-shaped routes where a classifier is a model name; base models go to mistral.rs.

use crate::pool::{AdHoc, ClassifierPool, ClassifyError, Scored};
use pez_classify::api::{Classification, ClassifyRequest, ClassifyResponse, LabelScores, Usage};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mistralrs_server_core::types::SharedMistralRsState;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// A base model as the API lists it.
#[derive(Debug, Clone)]
pub struct BaseInfo {
    pub name: String,
    /// Plain chat/completions run on mistral.rs for this model.
    pub generate: bool,
}

#[derive(Clone)]
pub struct AppState {
    pub pool: Arc<ClassifierPool>,
    pub engine: Option<SharedMistralRsState>,
    pub bases: Arc<Vec<BaseInfo>>,
    /// One permit per request in flight; none left means 429.
    pub limiter: Arc<Semaphore>,
    pub created: u64,
    next_id: Arc<AtomicU64>,
}

impl AppState {
    pub fn new(pool: ClassifierPool, engine: Option<SharedMistralRsState>, bases: Vec<BaseInfo>, max_concurrency: usize) -> Self {
        Self {
            pool: Arc::new(pool),
            engine,
            bases: Arc::new(bases),
            limiter: Arc::new(Semaphore::new(max_concurrency)),
            created: now(),
            next_id: Arc::new(AtomicU64::new(0)),
        }
    }
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}-{:x}{:06x}", self.created, self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn router(state: AppState) -> Router {
    let limited = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/classify", post(classify))
        .route_layer(middleware::from_fn_with_state(state.clone(), limit_concurrency));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .merge(limited)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route", "invalid_request_error") })
        .with_state(state)
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>, kind: &'static str) -> Self {
        Self { status, message: message.into(), kind, code: None }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, "invalid_request_error")
    }
    fn unknown_model(model: &str) -> Self {
        Self { code: Some("model_not_found"), ..Self::new(StatusCode::NOT_FOUND, format!("the model `{model}` does not exist"), "invalid_request_error") }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.code}});
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

async fn limit_concurrency(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match s.limiter.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many requests in flight; retry later", "rate_limit_exceeded").into_response(),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

fn model_of(v: &Value) -> Result<String, ApiError> {
    match v.get("model") {
        Some(Value::String(m)) => Ok(m.clone()),
        Some(_) => Err(ApiError::bad_request("`model` must be a string")),
        None => Err(ApiError::bad_request("missing required field `model`")),
    }
}

/// Texts from a string or an array of strings; empty ones are refused.
fn texts_of(v: Option<&Value>, field: &str) -> Result<Vec<String>, ApiError> {
    let texts = match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|x| x.as_str().map(String::from).ok_or_else(|| ApiError::bad_request(format!("`{field}` must be a string or an array of strings"))))
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => return Err(ApiError::bad_request(format!("`{field}` is empty"))),
        Some(_) => return Err(ApiError::bad_request(format!("`{field}` must be a string or an array of strings"))),
        None => return Err(ApiError::bad_request(format!("missing required field `{field}`"))),
    };
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::bad_request(format!("`{field}` {i} is empty: there is nothing to classify")));
    }
    Ok(texts)
}

/// The text of the last user message (string content, or the text parts of an array content).
fn last_user_text(v: &Value) -> Result<String, ApiError> {
    let msgs = v.get("messages").and_then(Value::as_array).ok_or_else(|| ApiError::bad_request("missing required field `messages` (an array)"))?;
    let m = msgs.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")).ok_or_else(|| ApiError::bad_request("no user message to classify"))?;
    let text = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""),
        _ => return Err(ApiError::bad_request("the user message has no text content")),
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("the user message is empty: there is nothing to classify"));
    }
    Ok(text)
}

enum Target {
    Classifier,
    Engine(SharedMistralRsState),
}

fn target(s: &AppState, model: &str) -> Result<Target, ApiError> {
    if s.pool.classifiers.contains_key(model) {
        return Ok(Target::Classifier);
    }
    match s.bases.iter().find(|b| b.name == model) {
        Some(b) if b.generate => s.engine.clone().map(Target::Engine).ok_or_else(|| ApiError::unknown_model(model)),
        Some(_) => Err(ApiError::bad_request(format!("the base model `{model}` is served for classification only (mistral.rs does not run it); use one of its classifiers"))),
        None => Err(ApiError::unknown_model(model)),
    }
}

impl From<ClassifyError> for ApiError {
    fn from(e: ClassifyError) -> Self {
        match e {
            ClassifyError::BadRequest(m) => ApiError::bad_request(m),
            ClassifyError::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m, "server_error"),
        }
    }
}

async fn run_classifier(s: &AppState, model: &str, texts: Vec<String>) -> Result<Vec<Scored>, ApiError> {
    Ok(s.pool.classify(model, texts).await?)
}

fn usage(scored: &[Scored], completion_tokens: usize) -> Usage {
    let prompt_tokens: usize = scored.iter().map(|x| x.tokens).sum();
    Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
}

/// Labels sorted by log-probability, best first, at most `k`.
fn ranked(labels: &[String], lp: &[f32], k: usize) -> Vec<(String, f32)> {
    let mut v: Vec<(String, f32)> = labels.iter().cloned().zip(lp.iter().copied()).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(k);
    v
}

async fn chat_completions(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let v = parse_body(&body)?;
    let model = model_of(&v)?;
    match target(&s, &model)? {
        Target::Engine(engine) => {
            let req = serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid chat completion request: {e}")))?;
            Ok(mistralrs_server_core::chat_completion::chatcompletions(State(engine), Json(req)).await.into_response())
        }
        Target::Classifier => {
            if v.get("stream").and_then(Value::as_bool) == Some(true) {
                return Err(ApiError::bad_request("streaming is not supported for classifiers"));
            }
            let text = last_user_text(&v)?;
            let info = &s.pool.classifiers[&model];
            let scored = run_classifier(&s, &model, vec![text]).await?;
            let r = &scored[0];
            let label = &info.labels[r.label];
            let mut choice = json!({"index": 0, "message": {"role": "assistant", "content": label}, "finish_reason": "stop", "logprobs": null});
            if v.get("logprobs").and_then(Value::as_bool) == Some(true) {
                let k = v.get("top_logprobs").and_then(Value::as_u64).map_or(info.labels.len(), |k| k as usize);
                let top: Vec<Value> = ranked(&info.labels, &r.logprobs, k)
                    .into_iter()
                    .map(|(t, lp)| json!({"token": t, "logprob": lp, "bytes": t.as_bytes()}))
                    .collect();
                choice["logprobs"] = json!({"content": [{"token": label, "logprob": r.logprobs[r.label], "bytes": label.as_bytes(), "top_logprobs": top}]});
            }
            Ok(Json(json!({
                "id": s.id("chatcmpl"), "object": "chat.completion", "created": now(), "model": model,
                "choices": [choice], "usage": usage(&scored, 1),
            }))
            .into_response())
        }
    }
}

async fn completions(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let v = parse_body(&body)?;
    let model = model_of(&v)?;
    match target(&s, &model)? {
        Target::Engine(engine) => {
            let req = serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid completion request: {e}")))?;
            Ok(mistralrs_server_core::completions::completions(State(engine), Json(req)).await.into_response())
        }
        Target::Classifier => {
            if v.get("stream").and_then(Value::as_bool) == Some(true) {
                return Err(ApiError::bad_request("streaming is not supported for classifiers"));
            }
            let texts = texts_of(v.get("prompt"), "prompt")?;
            let info = &s.pool.classifiers[&model];
            let scored = run_classifier(&s, &model, texts).await?;
            // Legacy completions: `logprobs` is the number of alternatives to list.
            let k = v.get("logprobs").and_then(Value::as_u64).map(|k| (k as usize).max(1));
            let choices: Vec<Value> = scored
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let label = &info.labels[r.label];
                    let logprobs = k.map(|k| {
                        let top: serde_json::Map<String, Value> = ranked(&info.labels, &r.logprobs, k).into_iter().map(|(t, lp)| (t, json!(lp))).collect();
                        json!({"tokens": [label], "token_logprobs": [r.logprobs[r.label]], "top_logprobs": [top], "text_offset": [0]})
                    });
                    json!({"index": i, "text": label, "logprobs": logprobs, "finish_reason": "stop"})
                })
                .collect();
            Ok(Json(json!({
                "id": s.id("cmpl"), "object": "text_completion", "created": now(), "model": model,
                "choices": choices, "usage": usage(&scored, scored.len()),
            }))
            .into_response())
        }
    }
}

async fn classify(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let v = parse_body(&body)?;
    let model = model_of(&v)?;
    let req: ClassifyRequest = serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid classify request: {e}")))?;
    let (labels, scored) = match s.pool.classifiers.get(&model) {
        Some(info) => (info.labels.clone(), run_classifier(&s, &model, req.input.texts().map_err(ApiError::bad_request)?).await?),
        None if s.bases.iter().any(|b| b.name == model) => {
            // A base model with the classifier in the request: `prompt` (optional), `template`, `verbalizers`.
            let (prompt, format) = req.ad_hoc().map_err(|m| ApiError::bad_request(format!("`{model}` is a base model: {m}")))?;
            let texts = req.input.texts().map_err(ApiError::bad_request)?;
            let labels = format.label_names.clone();
            let calibration = req.calibration.unwrap_or_default();
            (labels, s.pool.classify_ad_hoc(&model, AdHoc { prompt, format, calibration }, texts).await?)
        }
        None => return Err(ApiError::unknown_model(&model)),
    };
    let scores = |f: &dyn Fn(f32) -> f32, lp: &[f32]| LabelScores(labels.iter().cloned().zip(lp.iter().map(|&x| f(x))).collect());
    let data = scored
        .iter()
        .enumerate()
        .map(|(index, r)| Classification {
            index, label: labels[r.label].clone(), label_index: r.label, probs: scores(&f32::exp, &r.logprobs),
            logprobs: scores(&|x| x, &r.logprobs), raw_probs: r.raw_logprobs.as_ref().map(|lp| scores(&f32::exp, lp)), truncated: r.truncated,
        })
        .collect();
    let usage = usage(&scored, 0);
    Ok(Json(ClassifyResponse { object: "list".into(), model, data, usage }).into_response())
}

/// Every served model: base models, then classifiers, as `/v1/models` lists them.
fn model_cards(s: &AppState) -> Vec<Value> {
    let bases = s.bases.iter().map(|b| json!({"id": b.name, "object": "model", "created": s.created, "owned_by": "pez", "kind": "base", "generation": b.generate}));
    let classifiers = s.pool.classifiers.values().map(|c| {
        json!({
            "id": c.name, "object": "model", "created": s.created, "owned_by": "pez", "kind": "classifier",
            "base_model": c.base, "task": c.task, "prompt": c.prompt, "template": c.template, "labels": c.labels,
            "calibration": c.calibration,
        })
    });
    bases.chain(classifiers).collect()
}

async fn models(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": model_cards(&s)}))
}

/// `GET /v1/models/{id}` (the official client's `models.retrieve`).
async fn model(State(s): State<AppState>, axum::extract::Path(id): axum::extract::Path<String>) -> Result<Json<Value>, ApiError> {
    model_cards(&s).into_iter().find(|m| m["id"] == id.as_str()).map(Json).ok_or_else(|| ApiError::unknown_model(&id))
}
