//! `POST /v1/chat/completions`: a classifier answers the last user message with its label (label log-probs with
//! `logprobs`, one chunk when streamed); a base model's chat goes to mistral.rs.

use super::{generate, ranked, run_classifier, sse, target, usage, Target};
use crate::engine::Kind;
use crate::error::ApiError;
use crate::middleware::served;
use crate::requests::{parse, to_object, ChatRequest};
use crate::state::{now, AppState};
use crate::validate;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{json, Value};

pub async fn chat_completions(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let mut r: ChatRequest = parse(&body)?;
    match target(&s, &r.model)? {
        Target::Engine(engine) => {
            validate::chat_request(&mut r, &s.limits)?;
            generate(&s, engine, to_object(&r), Kind::Chat, r.model).await
        }
        Target::Classifier => classify(&s, r).await,
    }
}

async fn classify(s: &AppState, r: ChatRequest) -> Result<Response, ApiError> {
    let text = validate::last_user_text(&r, &s.limits)?;
    let model = r.model.clone();
    let info = &s.pool.classifiers[&model];
    let scored = run_classifier(s, &model, vec![text]).await?;
    let x = &scored[0];
    let label = &info.labels[x.label];
    let logprobs = match r.logprobs {
        Some(true) => {
            let k = r.top_logprobs.map_or(info.labels.len(), |k| k as usize);
            let top: Vec<Value> = ranked(&info.labels, &x.logprobs, k)
                .into_iter()
                .map(|(t, lp)| json!({"token": t, "logprob": lp, "bytes": t.as_bytes()}))
                .collect();
            json!({"content": [{"token": label, "logprob": x.logprobs[x.label], "bytes": label.as_bytes(), "top_logprobs": top}]})
        }
        _ => Value::Null,
    };
    let (id, created) = (s.id("chatcmpl"), now());
    let resp = if r.stream == Some(true) {
        // One chunk with the whole label, then [DONE] (and a usage chunk first if asked for).
        let mut events = vec![json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": label}, "logprobs": logprobs, "finish_reason": "stop"}],
        })];
        if r.stream_options.is_some_and(|o| o.include_usage) {
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
