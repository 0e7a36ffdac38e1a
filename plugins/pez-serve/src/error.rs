//! Errors in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`), and why a classification
//! failed (the request's fault or ours).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;

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
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, "invalid_request_error")
    }
    /// A 400 about one field of the request.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_string()),
            ..Self::bad_request(message)
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message, "server_error")
    }
    pub fn unknown_model(model: &str) -> Self {
        let shown: String = model.chars().take(100).collect();
        Self {
            code: Some("model_not_found"),
            param: Some("model".into()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                format!("the model `{shown}` does not exist"),
                "invalid_request_error",
            )
        }
    }
    /// A 404 for an object of `kind` (a file, a job) that does not exist, or is another key's.
    pub fn not_found(kind: &str, id: &str, param: &str) -> Self {
        let shown: String = id.chars().take(100).collect();
        Self {
            param: Some(param.into()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                format!("no {kind} `{shown}`"),
                "invalid_request_error",
            )
        }
    }
    /// A 401: no API key, or not a valid one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            code: Some("invalid_api_key"),
            ..Self::new(StatusCode::UNAUTHORIZED, message, "invalid_request_error")
        }
    }
    /// A 429 for work the server has no room for now.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, message, "rate_limit_exceeded")
    }
    /// The error object itself (also an event when a stream fails).
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// The request field at fault, if one is.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }
}

/// `{"error": {...}}`, the body of every error.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        let retry = match self.status {
            StatusCode::TOO_MANY_REQUESTS => Some("1"),
            StatusCode::SERVICE_UNAVAILABLE => Some("5"),
            _ => None,
        };
        if let Some(secs) = retry {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        r
    }
}

/// Why a classification failed: the request's fault (a 4xx) or ours (a 5xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifyError {
    /// The request cannot be served as asked (e.g. an ad-hoc classifier whose verbalizers share a first token).
    BadRequest(String),
    /// The worker failed or is gone.
    Internal(String),
}

impl std::fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadRequest(m) | Self::Internal(m) => f.write_str(m),
        }
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
