//! `POST /v1/completions`: a classifier labels each prompt text (legacy `logprobs`: the top labels); a base
//! model's completion goes to mistral.rs.

use super::{event, ranked, sse, usage, within_memory_budget};
use crate::engine;
use crate::error::ApiError;
use crate::middleware::served;
use crate::openai::{Completion, CompletionChoice, CompletionLogprobs};
use crate::requests::{parse, CompletionRequest};
use crate::state::{now, AppState, Target};
use crate::validate;
use crate::worker::ClassifierInfo;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use pez_classify::api::LabelScores;

pub async fn completions(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let mut r: CompletionRequest = parse(&body)?;
    match s.target(&r.model)? {
        Target::Base(base) => {
            let engine = s.engine(&base)?;
            validate::completion_request(&mut r, &s.limits)?;
            within_memory_budget(&s)?;
            Ok(served(engine::completion(engine, r).await?, base.name))
        }
        Target::Classifier(c) => classify(&s, &c, r).await,
    }
}

async fn classify(s: &AppState, c: &ClassifierInfo, r: CompletionRequest) -> Result<Response, ApiError> {
    let texts = validate::texts(&r.prompt, "prompt", &s.limits)?;
    let scored = s.pool.classify(c, texts).await?;
    let k = r.logprobs.map(|k| (k as usize).max(1));
    let choices: Vec<CompletionChoice> = scored
        .iter()
        .enumerate()
        .map(|(index, x)| {
            let label = &c.labels[x.label];
            let logprobs = k.map(|k| CompletionLogprobs {
                tokens: vec![label.clone()],
                token_logprobs: vec![x.logprobs[x.label] as f64],
                top_logprobs: vec![LabelScores(ranked(&c.labels, &x.logprobs, k))],
                text_offset: vec![0],
            });
            CompletionChoice {
                index,
                text: label.clone(),
                logprobs,
                finish_reason: Some("stop".into()),
            }
        })
        .collect();
    let (id, created, model) = (s.id("cmpl"), now(), c.name.clone());
    let completion = |choices, usage| Completion {
        id: id.clone(),
        object: "text_completion",
        created,
        model: model.clone(),
        choices,
        usage,
        system_fingerprint: None,
    };
    let resp = if r.stream == Some(true) {
        let events: Vec<_> = choices
            .into_iter()
            .map(|ch| event(&completion(vec![ch], None)))
            .collect();
        sse(futures_util::stream::iter(events))
    } else {
        Json(completion(choices, Some(usage(&scored, scored.len())))).into_response()
    };
    Ok(served(resp, model))
}
