//! `POST /v1/completions`: a classifier labels each prompt text (legacy `logprobs`: the top labels); a base
//! model's completion goes to mistral.rs.

use super::{generate, ranked, run_classifier, sse, target, usage, Target};
use crate::engine::Kind;
use crate::error::ApiError;
use crate::middleware::served;
use crate::requests::{parse, to_object, CompletionRequest};
use crate::state::{now, AppState};
use crate::validate;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{json, Value};

pub async fn completions(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let mut r: CompletionRequest = parse(&body)?;
    match target(&s, &r.model)? {
        Target::Engine(engine) => {
            validate::completion_request(&mut r, &s.limits)?;
            generate(&s, engine, to_object(&r), Kind::Completion, r.model).await
        }
        Target::Classifier => classify(&s, r).await,
    }
}

async fn classify(s: &AppState, r: CompletionRequest) -> Result<Response, ApiError> {
    let texts = validate::texts(&r.prompt, "prompt", &s.limits)?;
    let model = r.model.clone();
    let info = &s.pool.classifiers[&model];
    let scored = run_classifier(s, &model, texts).await?;
    let k = r.logprobs.map(|k| (k as usize).max(1));
    let choices: Vec<Value> = scored
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let label = &info.labels[x.label];
            let logprobs = k.map(|k| {
                let top: serde_json::Map<String, Value> = ranked(&info.labels, &x.logprobs, k).into_iter().map(|(t, lp)| (t, json!(lp))).collect();
                json!({"tokens": [label], "token_logprobs": [x.logprobs[x.label]], "top_logprobs": [top], "text_offset": [0]})
            });
            json!({"index": i, "text": label, "logprobs": logprobs, "finish_reason": "stop"})
        })
        .collect();
    let (id, created) = (s.id("cmpl"), now());
    let resp = if r.stream == Some(true) {
        let events: Vec<Value> = choices
            .into_iter()
            .map(|c| json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": [c]}))
            .collect();
        sse(&events)
    } else {
        Json(json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices, "usage": usage(&scored, scored.len())})).into_response()
    };
    Ok(served(resp, model))
}
