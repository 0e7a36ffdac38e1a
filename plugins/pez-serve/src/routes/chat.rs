//! `POST /v1/chat/completions`: a classifier answers the last user message with its label (label log-probs with
//! `logprobs`, one chunk when streamed); a base model's chat goes to mistral.rs.

use super::{event, ranked, sse, usage, within_memory_budget};
use crate::engine;
use crate::error::ApiError;
use crate::middleware::served;
use crate::openai::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChatLogprobs, ChunkChoice, Message, TokenLogprob, TopLogprob,
};
use crate::requests::{parse, ChatRequest};
use crate::state::{now, AppState, Target};
use crate::validate;
use crate::worker::ClassifierInfo;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};

pub async fn chat_completions(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let mut r: ChatRequest = parse(&body)?;
    match s.target(&r.model)? {
        Target::Base(base) => {
            let engine = s.engine(&base)?;
            validate::chat_request(&mut r, &s.limits)?;
            within_memory_budget(&s)?;
            Ok(served(engine::chat(engine, r).await?, base.name))
        }
        Target::Classifier(c) => classify(&s, &c, r).await,
    }
}

async fn classify(s: &AppState, c: &ClassifierInfo, r: ChatRequest) -> Result<Response, ApiError> {
    let text = validate::last_user_text(&r, &s.limits)?;
    let scored = s.pool.classify(c, vec![text]).await?;
    let x = &scored[0];
    let label = &c.labels[x.label];
    let logprobs = (r.logprobs == Some(true)).then(|| {
        let k = r.top_logprobs.map_or(c.labels.len(), |k| k as usize);
        label_logprobs(label, x.logprobs[x.label], ranked(&c.labels, &x.logprobs, k))
    });
    let (id, created, model) = (s.id("chatcmpl"), now(), c.name.clone());
    let answer = Message {
        role: "assistant".into(),
        content: Some(label.clone()),
        ..Default::default()
    };
    let resp = if r.stream == Some(true) {
        // One chunk with the whole label, then [DONE] (and a usage chunk first if asked for).
        let chunk = |choices, usage| ChatCompletionChunk {
            id: id.clone(),
            object: "chat.completion.chunk",
            created,
            model: model.clone(),
            choices,
            usage,
            system_fingerprint: None,
        };
        let choice = ChunkChoice {
            index: 0,
            delta: answer,
            logprobs,
            finish_reason: Some("stop".into()),
        };
        let mut events = vec![event(&chunk(vec![choice], None))];
        if r.stream_options.is_some_and(|o| o.include_usage) {
            events.push(event(&chunk(vec![], Some(usage(&scored, 1)))));
        }
        sse(futures_util::stream::iter(events))
    } else {
        let choice = ChatChoice {
            index: 0,
            message: answer,
            finish_reason: "stop".into(),
            logprobs,
        };
        let whole = ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model: model.clone(),
            choices: vec![choice],
            usage: usage(&scored, 1),
            system_fingerprint: None,
        };
        Json(whole).into_response()
    };
    Ok(served(resp, model))
}

/// The label as the one "token" answered, with the labels ranked as its alternatives.
fn label_logprobs(label: &str, logprob: f32, top: Vec<(String, f32)>) -> ChatLogprobs {
    let top_logprobs = top.into_iter().map(|(t, lp)| TopLogprob::new(&t, lp as f64)).collect();
    let entry = TopLogprob::new(label, logprob as f64);
    ChatLogprobs {
        content: vec![TokenLogprob {
            token: entry.token,
            logprob: entry.logprob,
            bytes: entry.bytes,
            top_logprobs,
        }],
    }
}
