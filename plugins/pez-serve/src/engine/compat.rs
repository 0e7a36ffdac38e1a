//! Where mistral.rs 0.8.1 differs from OpenAI (or would take the server down), made right in one place. Each item
//! says why it exists; remove it when mistral.rs no longer needs it.
//!
//! 1. **The response channel is read to its end** (`drain`): the engine unwraps its send of a finished sequence
//!    to the request's channel (`handle_pipeline_forward_error`), so a client that hangs up mid-generation would
//!    panic the engine thread. A task of its own keeps the channel open until the engine drops it (bounded by
//!    `max_tokens`), whether or not the client still listens.
//! 2. **`top_logprobs` entries** carry the token's id as `token` and its text as `bytes`; OpenAI's shape (what the
//!    official client parses) is the text as `token` and its UTF-8 bytes as `bytes` (`top`).
//! 3. **Completions' logprobs** come in chat's layout (`content: [{token, logprob, top_logprobs}]`); OpenAI's
//!    completions layout is `{tokens, token_logprobs, top_logprobs: [{text: logprob}], text_offset}`, offsets in
//!    characters from the completion's start, carried across a stream's chunks (`completion_logprobs`).
//! 4. **A chat stream's chunk** carries its one logprob entry as `logprobs` itself, not as `{content: [entry]}`.
//! 5. **The model** is named as the engine knows it; answers name the model as requested.
//! 6. **Errors**: what it cannot run (e.g. a prompt longer than the context) is a validation error, a 400 here, in
//!    OpenAI's error shape; a model error mid-stream becomes an `error` event before `[DONE]`.

use crate::error::ApiError;
use crate::openai::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChatLogprobs, ChunkChoice, Completion, CompletionChoice,
    CompletionLogprobs, Message, TokenLogprob, TopLogprob,
};
use mistralrs_core::{Response, ResponseLogprob};
use pez_classify::api::{LabelScores, Usage};
use tokio::sync::mpsc;

/// Item 1: every response of the engine's channel, forwarded until the engine drops it.
pub fn drain(mut rx: mpsc::Receiver<Response>) -> mpsc::UnboundedReceiver<Response> {
    let (tx, out) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            let _ = tx.send(r); // the reader may be gone: keep reading anyway
        }
    });
    out
}

/// Item 6: a response that is not an answer, as the error it is.
pub fn error(r: Response) -> ApiError {
    match r {
        Response::ValidationError(e) => ApiError::bad_request(format!("mistral.rs cannot run this request: {e}")),
        Response::InternalError(e) => ApiError::internal(format!("mistral.rs failed: {e}")),
        Response::ModelError(m, _) | Response::CompletionModelError(m, _) => {
            ApiError::internal(format!("mistral.rs failed: {m}"))
        }
        _ => ApiError::internal("mistral.rs answered with a response of another kind"),
    }
}

fn usage(u: &mistralrs_core::Usage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
    }
}

/// Item 2.
fn top(e: &mistralrs_core::TopLogprob) -> TopLogprob {
    TopLogprob::new(e.bytes.as_deref().unwrap_or_default(), e.logprob as f64)
}

fn token_logprob(e: &ResponseLogprob) -> TokenLogprob {
    TokenLogprob {
        token: e.token.clone(),
        logprob: e.logprob as f64,
        bytes: e.token.as_bytes().to_vec(),
        top_logprobs: e.top_logprobs.iter().map(top).collect(),
    }
}

/// Items 2 and 5: a whole chat answer.
pub fn chat(r: mistralrs_core::ChatCompletionResponse, model: &str) -> ChatCompletion {
    let choices = r.choices.into_iter().map(|c| ChatChoice {
        index: c.index,
        message: Message {
            role: c.message.role,
            content: c.message.content,
            tool_calls: c.message.tool_calls,
            reasoning_content: c.message.reasoning_content,
        },
        finish_reason: c.finish_reason,
        logprobs: c.logprobs.and_then(|l| l.content).map(|c| ChatLogprobs {
            content: c.iter().map(token_logprob).collect(),
        }),
    });
    ChatCompletion {
        id: r.id,
        object: "chat.completion",
        created: r.created,
        model: model.to_string(),
        choices: choices.collect(),
        usage: usage(&r.usage),
        system_fingerprint: Some(r.system_fingerprint),
    }
}

/// Items 2, 4 and 5: one chunk of a chat stream.
pub fn chat_chunk(r: mistralrs_core::ChatCompletionChunkResponse, model: &str) -> ChatCompletionChunk {
    let choices = r.choices.into_iter().map(|c| ChunkChoice {
        index: c.index,
        delta: Message {
            role: c.delta.role,
            content: c.delta.content,
            tool_calls: c.delta.tool_calls,
            reasoning_content: c.delta.reasoning_content,
        },
        logprobs: c.logprobs.map(|e| ChatLogprobs {
            content: vec![token_logprob(&e)],
        }),
        finish_reason: c.finish_reason,
    });
    ChatCompletionChunk {
        id: r.id,
        object: "chat.completion.chunk",
        created: r.created as u64,
        model: model.to_string(),
        choices: choices.collect(),
        usage: r.usage.as_ref().map(usage),
        system_fingerprint: Some(r.system_fingerprint),
    }
}

/// Item 3: entries in OpenAI's completions layout; `offset`: the choice's characters so far.
pub fn completion_logprobs(entries: &[ResponseLogprob], offset: &mut usize) -> CompletionLogprobs {
    let mut l = CompletionLogprobs::default();
    for e in entries {
        l.text_offset.push(*offset);
        *offset += e.token.chars().count();
        l.tokens.push(e.token.clone());
        l.token_logprobs.push(e.logprob as f64);
        l.top_logprobs.push(LabelScores(
            e.top_logprobs.iter().map(|t| (top(t).token, t.logprob)).collect(),
        ));
    }
    l
}

/// Items 3 and 5: a whole completion.
pub fn completion(r: mistralrs_core::CompletionResponse, model: &str) -> Completion {
    let choices = r.choices.into_iter().map(|c| CompletionChoice {
        index: c.index,
        logprobs: c
            .logprobs
            .and_then(|l| l.content)
            .map(|e| completion_logprobs(&e, &mut 0)),
        text: c.text,
        finish_reason: Some(c.finish_reason),
    });
    Completion {
        id: r.id,
        object: "text_completion",
        created: r.created,
        model: model.to_string(),
        choices: choices.collect(),
        usage: Some(usage(&r.usage)),
        system_fingerprint: Some(r.system_fingerprint),
    }
}

/// Items 3 and 5: one chunk of a completion stream; `offsets[i]`: choice `i`'s characters so far.
pub fn completion_chunk(
    r: mistralrs_core::CompletionChunkResponse,
    model: &str,
    offsets: &mut Vec<usize>,
) -> Completion {
    let choices = r.choices.into_iter().map(|c| {
        if offsets.len() <= c.index {
            offsets.resize(c.index + 1, 0);
        }
        let logprobs = c
            .logprobs
            .map(|e| completion_logprobs(std::slice::from_ref(&e), &mut offsets[c.index]));
        CompletionChoice {
            index: c.index,
            text: c.text,
            logprobs,
            finish_reason: c.finish_reason,
        }
    });
    Completion {
        id: r.id,
        object: "text_completion",
        created: r.created as u64,
        model: model.to_string(),
        choices: choices.collect(),
        usage: None,
        system_fingerprint: Some(r.system_fingerprint),
    }
}
