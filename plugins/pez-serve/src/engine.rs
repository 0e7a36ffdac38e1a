//! Plain generation on mistral.rs: a checked request goes to mistral.rs's own handler, in a task of its own.
//!
//! Why a task: mistral.rs 0.8.1's engine unwraps its send of a finished sequence to the request's channel
//! (`handle_pipeline_forward_error`), so a client that hangs up mid-generation would panic the engine thread.
//! The task keeps the channel open until the sequence ends (bounded by `max_tokens`), reading a stream to its
//! end whether or not the client still listens. Answers come back with the requested model name and errors in
//! OpenAI's shape.

use crate::api::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, response::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use mistralrs_server_core::types::SharedMistralRsState;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

enum Out {
    Full(Parts, Bytes),
    Stream(Parts, mpsc::UnboundedReceiver<Bytes>),
}

/// Runs a checked request (see `validate`) on mistral.rs.
pub async fn generate(engine: SharedMistralRsState, v: Value, kind: Kind, model: String) -> Result<Response, ApiError> {
    let resp = match kind {
        Kind::Chat => {
            let req = serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid chat completion request: {e}")))?;
            tokio::spawn(async move { mistralrs_server_core::chat_completion::chatcompletions(State(engine), Json(req)).await.into_response() })
        }
        Kind::Completion => {
            let req = serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid completion request: {e}")))?;
            tokio::spawn(async move { mistralrs_server_core::completions::completions(State(engine), Json(req)).await.into_response() })
        }
    };
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let Ok(resp) = resp.await else { return };
        let (parts, mut body) = resp.into_parts();
        let sse = parts.headers.get(header::CONTENT_TYPE).and_then(|c| c.to_str().ok()).is_some_and(|c| c.starts_with("text/event-stream"));
        if !sse {
            let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let _ = tx.send(Out::Full(parts, bytes));
            return;
        }
        let (chunks, stream) = mpsc::unbounded_channel();
        let _ = tx.send(Out::Stream(parts, stream));
        // To the end, even when nobody reads `stream` any more.
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                let _ = chunks.send(data);
            }
        }
    });
    match rx.await.map_err(|_| ApiError::internal("the generation task failed"))? {
        Out::Full(parts, bytes) => full_response(parts, &bytes, &model),
        Out::Stream(parts, stream) => {
            let events = futures_util::stream::unfold((stream, model), |(mut rx, model)| async move {
                let b = rx.recv().await?;
                Some((Ok::<_, std::convert::Infallible>(rename_in_events(&b, &model)), (rx, model)))
            });
            Ok(Response::from_parts(parts, Body::from_stream(events)))
        }
    }
}

/// A whole answer: the model named as requested, or an error in OpenAI's shape (mistral.rs answers
/// `{"message": ...}` with 422 for what it cannot run, e.g. a prompt longer than the context).
fn full_response(parts: Parts, bytes: &[u8], model: &str) -> Result<Response, ApiError> {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    if parts.status.is_success() {
        let mut v = parsed.ok_or_else(|| ApiError::internal("mistral.rs answered with a body that is not JSON"))?;
        if v.get("model").is_some() {
            v["model"] = Value::String(model.to_string());
        }
        return Ok((parts.status, Json(v)).into_response());
    }
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.pointer("/error/message")).and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).chars().take(500).collect());
    Err(match parts.status {
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => ApiError::bad_request(format!("mistral.rs cannot run this request: {message}")),
        s if s.is_client_error() => ApiError::new(s, message, "invalid_request_error"),
        _ => ApiError::internal(format!("mistral.rs failed: {message}")),
    })
}

/// `data: {...}` events with the model named as requested.
fn rename_in_events(chunk: &[u8], model: &str) -> Bytes {
    let Ok(text) = std::str::from_utf8(chunk) else { return Bytes::copy_from_slice(chunk) };
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let renamed = line.strip_prefix("data: ").and_then(|rest| {
            let mut v: Value = serde_json::from_str(rest.trim_end()).ok()?;
            v.get("model")?;
            v["model"] = Value::String(model.to_string());
            Some(format!("data: {v}{}", &rest[rest.trim_end().len()..]))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
    }
    Bytes::from(out)
}
