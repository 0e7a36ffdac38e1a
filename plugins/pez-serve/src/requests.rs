//! Request bodies as types, each parsed once from the body's bytes: the fields this server reads, and (for base
//! models) everything else kept in a map that goes to mistral.rs unchanged once `validate` has bounded it. A
//! field of the wrong type is refused with a 400 naming it.

use crate::error::ApiError;
use pez_classify::api::Input;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Each checked by `validate` (role, content), which names the message at fault.
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Every other field: sampling parameters and the like, for mistral.rs.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One message; `role` and `content` are checked by `validate` (so that it can name the message at fault),
/// the rest (`name`, tool calls) goes to mistral.rs as it came.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A message's content: a string, or content parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged, expecting = "a string or an array of content parts")]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A content part: text, or something this server refuses (images, audio, files).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/completions`: one prompt for a base model, one or several texts for a classifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    pub prompt: Input,
    /// Legacy completions: how many alternatives to list per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u64>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The body as `T`, parsed once; a malformed one is a 400 naming the field at fault.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde reads a struct from an array too (field by position): only an object is a request.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => ApiError::bad_request("the body must be a JSON object"),
            Err(e) => ApiError::bad_request(format!("invalid JSON body: {e}")),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let t = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let (path, inner) = (e.path().to_string(), e.inner());
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!("invalid JSON body: {inner}"));
        }
        let message = inner.to_string();
        // A missing field is reported at the object that lacks it: name the field itself.
        match message.strip_prefix("missing field `").and_then(|r| r.split_once('`')) {
            Some((field, _)) => ApiError::invalid(field, format!("missing required field `{field}`")),
            None => ApiError::invalid(&path, format!("`{path}`: {message}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(t)
}

/// A checked request as the request type of mistral.rs's own handlers (whose fields are a superset of ours).
pub fn for_engine<T: Serialize, U: DeserializeOwned>(r: &T) -> Result<U, ApiError> {
    let v = serde_json::to_value(r).map_err(|e| ApiError::internal(format!("a request did not serialize: {e}")))?;
    serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("mistral.rs cannot read this request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_fields_are_named() {
        let e = parse::<ChatRequest>(br#"{"model": "m", "stream": "yes", "messages": []}"#).unwrap_err();
        assert_eq!(e.param(), Some("stream"));
        let e = parse::<ChatRequest>(br#"{"messages": []}"#).unwrap_err();
        assert_eq!(e.param(), Some("model"));
        let e = parse::<CompletionRequest>(br#"{"model": "m", "prompt": [1]}"#).unwrap_err();
        assert_eq!(e.param(), Some("prompt"));
        let e = parse::<ChatRequest>(br#"["m"]"#).unwrap_err();
        assert!(e.message().contains("JSON object"), "{}", e.message());
        let e = parse::<ChatRequest>(br#"{"model": "m", "messages": []} x"#).unwrap_err();
        assert!(e.message().contains("invalid JSON"), "{}", e.message());
        let r = parse::<ChatRequest>(
            br#"{"model": "m", "messages": [{"role": "user", "content": "hi", "name": "a"}], "temperature": 0.5}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi", "name": "a"}], "temperature": 0.5})
        );
    }
}
