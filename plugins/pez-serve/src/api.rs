//! The HTTP API: OpenAI-shaped routes where a classifier is a model name; base models go to mistral.rs.

use crate::config::Limits;
use crate::engine::{self, Kind};
use crate::metrics::{resident_bytes, Metrics};
use crate::pool::{AdHoc, ClassifierPool, ClassifyError, Scored};
use crate::validate::{self, last_user_text, texts_of};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use mistralrs_server_core::types::SharedMistralRsState;
use pez_classify::api::{Classification, ClassifyRequest, ClassifyResponse, LabelScores, Usage};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub created: u64,
    next_id: Arc<AtomicU64>,
}

impl AppState {
    pub fn new(pool: ClassifierPool, engine: Option<SharedMistralRsState>, bases: Vec<BaseInfo>, max_concurrency: usize, limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            pool: Arc::new(pool),
            engine,
            bases: Arc::new(bases),
            limiter: Arc::new(Semaphore::new(max_concurrency)),
            limits: Arc::new(limits),
            metrics,
            created: now(),
            next_id: Arc::new(AtomicU64::new(0)),
        }
    }
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}-{:x}{:06x}", self.created, self.next_id.fetch_add(1, Ordering::Relaxed))
    }
    /// `model` if it is served, else "-": what metrics and logs name (request text never becomes a label).
    fn known(&self, model: &str) -> String {
        let served = self.pool.classifiers.contains_key(model) || self.bases.iter().any(|b| b.name == model);
        if served { model.to_string() } else { "-".into() }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn router(state: AppState) -> Router {
    // Bodies are read in full (bounded in size and time) before a request takes one of the in-flight permits.
    let limited = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/classify", post(classify))
        .route_layer(middleware::from_fn_with_state(state.clone(), limit_concurrency))
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body));
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .merge(limited)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route", "invalid_request_error") })
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this route does not take that method", "invalid_request_error") })
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>, kind: &'static str) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, "invalid_request_error")
    }
    /// A 400 about one field of the request.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self { param: Some(param.to_string()), ..Self::bad_request(message) }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message, "server_error")
    }
    fn unknown_model(model: &str) -> Self {
        let shown: String = model.chars().take(100).collect();
        Self { code: Some("model_not_found"), param: Some("model".into()), ..Self::new(StatusCode::NOT_FOUND, format!("the model `{shown}` does not exist"), "invalid_request_error") }
    }
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// The request field at fault, if one is.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}});
        let mut r = (self.status, Json(body)).into_response();
        let retry = match self.status {
            StatusCode::TOO_MANY_REQUESTS => Some("1"),
            StatusCode::SERVICE_UNAVAILABLE => Some("5"),
            _ => None,
        };
        if let Some(secs) = retry {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        r
    }
}

/// The served model a response was for (read by `observe` for metrics and logs).
#[derive(Clone)]
struct ServedModel(String);

fn served(mut r: Response, model: String) -> Response {
    r.extensions_mut().insert(ServedModel(model));
    r
}

/// Logs and counts a request that ends without a response (its client went away): status 499 as nginx does.
struct Observed {
    s: AppState,
    id: String,
    method: String,
    route: String,
    t0: Instant,
    done: bool,
}

impl Observed {
    fn finish(&mut self, status: u16, model: &str) {
        self.done = true;
        let secs = self.t0.elapsed().as_secs_f64();
        self.s.metrics.request(&self.route, model, status, secs);
        let line = json!({"ts": now(), "request_id": self.id, "method": self.method, "route": self.route, "model": model, "status": status, "ms": (secs * 1e3).round()});
        eprintln!("{line}");
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.s.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.done {
            self.finish(499, "-");
        }
    }
}

/// Request id (the client's `x-request-id` if sane, else ours; echoed), one JSON log line and metrics per request.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(|| s.id("req"));
    s.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    // The route's pattern (e.g. `/v1/models/{id}`), never the raw path, so labels stay few; "other" for none.
    let route = req.extensions().get::<MatchedPath>().map_or("other", MatchedPath::as_str).to_string();
    let mut seen = Observed { s: s.clone(), id: id.clone(), method: req.method().to_string(), route, t0: Instant::now(), done: false };
    let mut resp = next.run(req).await;
    let model = resp.extensions().get::<ServedModel>().map_or("-".to_string(), |m| s.known(&m.0));
    seen.finish(resp.status().as_u16(), &model);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Reads the whole body within `max_body_bytes` and `body_timeout_s`: too large is a 413 (from Content-Length
/// before reading, when it says so), too slow or shorter than announced a 408.
async fn read_body(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let max = s.limits.max_body_bytes;
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {max} bytes"), "invalid_request_error").into_response();
    let announced = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let secs = s.limits.body_timeout_s;
    match tokio::time::timeout(Duration::from_secs(secs), http_body_util::Limited::new(body, max).collect()).await {
        Err(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, format!("the request body did not arrive in full within {secs} s"), "invalid_request_error").into_response(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => too_large(),
        Ok(Err(e)) => ApiError::bad_request(format!("could not read the request body: {e}")).into_response(),
        Ok(Ok(c)) => next.run(Request::from_parts(parts, Body::from(c.to_bytes()))).await,
    }
}

async fn limit_concurrency(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match s.limiter.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many requests in flight; retry later", "rate_limit_exceeded").into_response(),
    }
}

/// Ready: every classifier worker alive and mistral.rs answering for each generating model (it restarts a
/// dead engine when asked). 503 with the problems otherwise. `/health/live` only says the process answers.
async fn health(State(s): State<AppState>) -> Response {
    let mut problems: Vec<String> = s.pool.dead_workers().into_iter().map(|b| format!("the classifier worker of `{b}` has stopped")).collect();
    if let Some(engine) = &s.engine {
        for b in s.bases.iter().filter(|b| b.generate) {
            if let Err(e) = engine.get_sender(Some(&b.name)) {
                problems.push(format!("mistral.rs engine for `{}`: {e:?}", b.name));
            }
        }
    }
    if problems.is_empty() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unhealthy", "problems": problems}))).into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render()).into_response()
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
        Some(_) => Err(ApiError::invalid("model", "`model` must be a string")),
        None => Err(ApiError::invalid("model", "missing required field `model`")),
    }
}

fn streaming(v: &Value) -> Result<bool, ApiError> {
    match v.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid("stream", "`stream` must be a boolean")),
    }
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
            ClassifyError::Internal(m) => ApiError::internal(m),
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

/// Server-sent events in OpenAI's shape: each event a `data:` line, then `data: [DONE]`.
fn sse(events: &[Value]) -> Response {
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Plain generation on mistral.rs: refused with a 503 while the resident size is over its budget.
async fn generate(s: &AppState, engine: SharedMistralRsState, v: Value, kind: Kind, model: String) -> Result<Response, ApiError> {
    let budget = s.limits.rss_budget();
    if resident_bytes().is_some_and(|r| r > budget) {
        s.metrics.memory_refusals.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the server's memory is over its budget ({} MiB); generation is paused, retry later", budget >> 20),
            "server_overloaded",
        ));
    }
    Ok(served(engine::generate(engine, v, kind, model.clone()).await?, model))
}

async fn chat_completions(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let mut v = parse_body(&body)?;
    let model = model_of(&v)?;
    let stream = streaming(&v)?;
    match target(&s, &model)? {
        Target::Engine(engine) => {
            validate::chat_request(&mut v, &s.limits)?;
            generate(&s, engine, v, Kind::Chat, model).await
        }
        Target::Classifier => {
            let text = last_user_text(&v, &s.limits)?;
            let info = &s.pool.classifiers[&model];
            let scored = run_classifier(&s, &model, vec![text]).await?;
            let r = &scored[0];
            let label = &info.labels[r.label];
            let logprobs = match v.get("logprobs").and_then(Value::as_bool) {
                Some(true) => {
                    let k = v.get("top_logprobs").and_then(Value::as_u64).map_or(info.labels.len(), |k| k as usize);
                    let top: Vec<Value> = ranked(&info.labels, &r.logprobs, k)
                        .into_iter()
                        .map(|(t, lp)| json!({"token": t, "logprob": lp, "bytes": t.as_bytes()}))
                        .collect();
                    json!({"content": [{"token": label, "logprob": r.logprobs[r.label], "bytes": label.as_bytes(), "top_logprobs": top}]})
                }
                _ => Value::Null,
            };
            let (id, created) = (s.id("chatcmpl"), now());
            let resp = if stream {
                // One chunk with the whole label, then [DONE] (and a usage chunk first if asked for).
                let mut events = vec![json!({
                    "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": label}, "logprobs": logprobs, "finish_reason": "stop"}],
                })];
                if v.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true) {
                    events.push(json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage(&scored, 1)}));
                }
                sse(&events)
            } else {
                Json(json!({
                    "id": id, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": label}, "finish_reason": "stop", "logprobs": logprobs}],
                    "usage": usage(&scored, 1),
                }))
                .into_response()
            };
            Ok(served(resp, model))
        }
    }
}

async fn completions(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let mut v = parse_body(&body)?;
    let model = model_of(&v)?;
    let stream = streaming(&v)?;
    match target(&s, &model)? {
        Target::Engine(engine) => {
            validate::completion_request(&mut v, &s.limits)?;
            generate(&s, engine, v, Kind::Completion, model).await
        }
        Target::Classifier => {
            let texts = texts_of(v.get("prompt"), "prompt", &s.limits)?;
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
            let (id, created) = (s.id("cmpl"), now());
            let resp = if stream {
                let events: Vec<Value> = choices.into_iter().map(|c| json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": [c]})).collect();
                sse(&events)
            } else {
                Json(json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices, "usage": usage(&scored, scored.len())})).into_response()
            };
            Ok(served(resp, model))
        }
    }
}

async fn classify(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let v = parse_body(&body)?;
    let model = model_of(&v)?;
    // The texts are checked (count, emptiness) before the request is taken apart.
    let texts = texts_of(v.get("input"), "input", &s.limits)?;
    let req: ClassifyRequest = serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid classify request: {e}")))?;
    let (labels, scored) = match s.pool.classifiers.get(&model) {
        Some(info) => (info.labels.clone(), run_classifier(&s, &model, texts).await?),
        None if s.bases.iter().any(|b| b.name == model) => {
            // A base model with the classifier in the request: `prompt` (optional), `template`, `verbalizers`.
            let (prompt, format) = req.ad_hoc().map_err(|m| ApiError::bad_request(format!("`{model}` is a base model: {m}")))?;
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
    Ok(served(Json(ClassifyResponse { object: "list".into(), model: model.clone(), data, usage }).into_response(), model))
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
