//! Checks on requests before any work: the texts a classifier reads, and base-model generation requests
//! checked (and made plain) before mistral.rs sees them. Every refusal is an `ApiError` (a 4xx in OpenAI's
//! shape) naming the field.

use crate::config::Limits;
use crate::error::ApiError;
use crate::requests::{ChatMessage, ChatRequest, CompletionRequest, Content};
use pez_classify::api::Input;
use serde_json::{Map, Value};

/// The texts of `field` for a classifier: empty ones, and more than `max_inputs`, are refused.
pub fn texts(input: &Input, field: &str, limits: &Limits) -> Result<Vec<String>, ApiError> {
    let texts = match input {
        Input::One(s) => vec![s.clone()],
        Input::Many(a) if a.is_empty() => return Err(ApiError::invalid(field, format!("`{field}` is empty"))),
        Input::Many(a) if a.len() > limits.max_inputs => {
            return Err(ApiError::invalid(
                field,
                format!(
                    "`{field}` has {} texts; at most {} per request",
                    a.len(),
                    limits.max_inputs
                ),
            ))
        }
        Input::Many(a) => a.clone(),
    };
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` {i} is empty: there is nothing to classify"),
        ));
    }
    Ok(texts)
}

/// The text of a message's content: a string, or a list of text parts (joined). Parts of other kinds (images,
/// audio, files) are refused: the models here read text only, and nothing named in a request is ever fetched
/// or opened.
pub fn content_text(content: Option<&Content>, limits: &Limits, at: &str) -> Result<String, ApiError> {
    let parts = match content {
        Some(Content::Text(s)) => return Ok(s.clone()),
        Some(Content::Parts(parts)) => parts,
        None => {
            return Err(ApiError::invalid(
                at,
                format!("`{at}` is missing or null: give a string or text parts"),
            ))
        }
    };
    if parts.len() > limits.max_content_parts {
        let n = parts.len();
        return Err(ApiError::invalid(
            at,
            format!("`{at}` has {n} content parts; at most {}", limits.max_content_parts),
        ));
    }
    let mut text = String::new();
    for (i, p) in parts.iter().enumerate() {
        match (p.kind.as_deref(), &p.text) {
            (Some("text"), Some(t)) => text.push_str(t),
            (Some("text"), None) => {
                return Err(ApiError::invalid(
                    at,
                    format!("`{at}[{i}]` is a text part without a string `text`"),
                ))
            }
            (Some(kind), _) => {
                let why = "this model reads text only (nothing named in a request is fetched)";
                return Err(ApiError::invalid(at, format!("`{at}[{i}]` is a `{kind}` part: {why}")));
            }
            (None, _) => return Err(ApiError::invalid(at, format!("`{at}[{i}]` has no string `type`"))),
        }
    }
    Ok(text)
}

fn messages<'v>(msgs: &'v [ChatMessage], limits: &Limits) -> Result<&'v [ChatMessage], ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` is empty"));
    }
    if msgs.len() > limits.max_messages {
        let n = msgs.len();
        return Err(ApiError::invalid(
            "messages",
            format!("`messages` has {n} messages; at most {}", limits.max_messages),
        ));
    }
    Ok(msgs)
}

/// The text of the last user message, for a classifier.
pub fn last_user_text(r: &ChatRequest, limits: &Limits) -> Result<String, ApiError> {
    let msgs = messages(&r.messages, limits)?;
    let (i, m) = msgs
        .iter()
        .enumerate()
        .rev()
        .find(|(_, m)| m.role.as_deref() == Some("user"))
        .ok_or_else(|| ApiError::invalid("messages", "no user message to classify"))?;
    let text = content_text(m.content.as_ref(), limits, &format!("messages[{i}].content"))?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "the user message is empty: there is nothing to classify",
        ));
    }
    Ok(text)
}

/// A number field within `[lo, hi]` (inclusive unless `open_lo`), if present.
fn number(o: &Map<String, Value>, field: &str, lo: f64, hi: f64, open_lo: bool) -> Result<(), ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let below = if open_lo { x <= lo } else { x < lo };
            if below || x > hi || !x.is_finite() {
                let lo_br = if open_lo { "(" } else { "[" };
                Err(ApiError::invalid(
                    field,
                    format!("`{field}` must be in {lo_br}{lo}, {hi}]; got {x}"),
                ))
            } else {
                Ok(())
            }
        }
        Some(_) => Err(ApiError::invalid(field, format!("`{field}` must be a number"))),
    }
}

/// A whole-number field within `[lo, hi]`, if present.
fn count(o: &Map<String, Value>, field: &str, lo: u64, hi: u64, why: &str) -> Result<Option<u64>, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(k) if (lo..=hi).contains(&k) => Ok(Some(k)),
            _ => Err(ApiError::invalid(
                field,
                format!("`{field}` must be a whole number from {lo} to {hi}{why}; got {v}"),
            )),
        },
    }
}

/// Checks what every generation request shares and bounds its work: `max_tokens` (set to the limit when
/// absent), `n`, sampling parameters in their valid ranges, no web search.
fn sampling(o: &mut Map<String, Value>, limits: &Limits) -> Result<(), ApiError> {
    let max = limits.max_tokens as u64;
    let why = " (this server's limit)";
    let asked = match count(o, "max_completion_tokens", 1, max, why)? {
        Some(k) => Some(k),
        None => count(o, "max_tokens", 1, max, why)?,
    };
    o.remove("max_completion_tokens");
    o.insert("max_tokens".into(), asked.unwrap_or(max).into());
    count(o, "n", 1, limits.max_n as u64, why)?;
    count(o, "best_of", 1, limits.max_n as u64, why)?;
    number(o, "temperature", 0.0, 2.0, false)?;
    number(o, "top_p", 0.0, 1.0, true)?;
    number(o, "min_p", 0.0, 1.0, false)?;
    number(o, "frequency_penalty", -2.0, 2.0, false)?;
    number(o, "presence_penalty", -2.0, 2.0, false)?;
    number(o, "repetition_penalty", 0.0, 10.0, true)?;
    count(o, "top_k", 0, 100_000, "")?;
    if let Some(Value::Array(stops)) = o.get("stop") {
        if stops.len() > 4 || stops.iter().any(|s| !s.is_string()) {
            return Err(ApiError::invalid("stop", "`stop` must be a string or up to 4 strings"));
        }
    }
    for field in ["web_search_options", "grammar"] {
        if o.get(field).is_some_and(|x| !x.is_null()) {
            return Err(ApiError::invalid(
                field,
                format!("`{field}` is not supported by this server"),
            ));
        }
    }
    Ok(())
}

/// A chat completion request for a base model, checked and made plain for mistral.rs: every message's content
/// becomes a string (text parts joined), `max_tokens` bounded.
pub fn chat_request(r: &mut ChatRequest, limits: &Limits) -> Result<(), ApiError> {
    messages(&r.messages, limits)?;
    for (i, m) in r.messages.iter_mut().enumerate() {
        match m.role.as_deref() {
            Some("system" | "user" | "assistant" | "developer") => {}
            Some(r) => {
                let why = "is not supported (system, user, assistant, developer)";
                return Err(ApiError::invalid(
                    "messages",
                    format!("`messages[{i}].role` {r:?} {why}"),
                ));
            }
            None => {
                return Err(ApiError::invalid(
                    "messages",
                    format!("`messages[{i}]` has no string `role`"),
                ))
            }
        }
        let text = content_text(m.content.as_ref(), limits, &format!("messages[{i}].content"))?;
        m.content = Some(Content::Text(text));
    }
    if r.top_logprobs.is_some_and(|k| k > 20) {
        return Err(ApiError::invalid(
            "top_logprobs",
            "`top_logprobs` must be a whole number from 0 to 20",
        ));
    }
    sampling(&mut r.rest, limits)
}

/// A (legacy) completion request for a base model: one prompt string, bounded as chat is.
pub fn completion_request(r: &mut CompletionRequest, limits: &Limits) -> Result<(), ApiError> {
    match &r.prompt {
        Input::One(p) if !p.is_empty() => {}
        Input::One(_) => return Err(ApiError::invalid("prompt", "`prompt` is empty")),
        Input::Many(_) => {
            return Err(ApiError::invalid(
                "prompt",
                "`prompt` must be one string for a base model",
            ))
        }
    }
    if r.logprobs.is_some_and(|k| k > 5) {
        return Err(ApiError::invalid(
            "logprobs",
            "`logprobs` must be a whole number from 0 to 5",
        ));
    }
    sampling(&mut r.rest, limits)
}
