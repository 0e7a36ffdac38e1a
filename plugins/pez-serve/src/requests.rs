//! Request bodies as types: the fields this server reads, and (for base models) everything else kept in a map
//! that goes to mistral.rs unchanged once `validate` has bounded it. A field of the wrong type is refused with
//! a 400 naming it.

use crate::error::ApiError;
use axum::body::Bytes;
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
    pub messages: Vec<Value>,
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

/// The body as `T`; a malformed one is a 400 naming the field at fault.
pub fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.inner().to_string();
        // A missing field is reported at the object that lacks it: name the field itself.
        match inner.strip_prefix("missing field `").and_then(|r| r.split_once('`')) {
            Some((field, _)) => ApiError::invalid(field, format!("missing required field `{field}`")),
            None => {
                let param = e.path().to_string();
                ApiError::invalid(&param, format!("`{param}`: {inner}"))
            }
        }
    })
}

/// A request as the JSON object mistral.rs reads.
pub fn to_object<T: Serialize>(r: &T) -> Value {
    serde_json::to_value(r).expect("a request serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_fields_are_named() {
        let e = parse::<ChatRequest>(&Bytes::from(r#"{"model": "m", "stream": "yes", "messages": []}"#)).unwrap_err();
        assert_eq!(e.param(), Some("stream"));
        let e = parse::<ChatRequest>(&Bytes::from(r#"{"messages": []}"#)).unwrap_err();
        assert_eq!(e.param(), Some("model"));
        let e = parse::<CompletionRequest>(&Bytes::from(r#"{"model": "m", "prompt": [1]}"#)).unwrap_err();
        assert_eq!(e.param(), Some("prompt"));
        let r = parse::<ChatRequest>(&Bytes::from(r#"{"model": "m", "messages": [], "temperature": 0.5}"#)).unwrap();
        assert_eq!(
            to_object(&r),
            serde_json::json!({"model": "m", "messages": [], "temperature": 0.5})
        );
    }
}
