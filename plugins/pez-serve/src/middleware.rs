//! What wraps every request: its id, one log line and the metrics (`observe`); its API key, as its owner
//! (`authorize`); the whole body read within size and time (`read_body`); a permit among the requests in flight
//! (`limit_concurrency`).

use crate::auth::Owner;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};

/// The served model a response was for (read by `observe` for metrics and logs): set by a route once it has
/// looked the model up, so it is always a served model's name.
#[derive(Clone)]
struct ServedModel(String);

/// Marks `r` as an answer of `model`.
pub fn served(mut r: Response, model: String) -> Response {
    r.extensions_mut().insert(ServedModel(model));
    r
}

/// Logs and counts a request once it ends, also one that ends without a response (its client went away: status
/// 499, as nginx writes it).
struct Observed {
    s: AppState,
    id: String,
    method: String,
    route: String,
    t0: Instant,
    done: bool,
}

impl Observed {
    fn finish(&mut self, status: u16, model: &str) {
        self.done = true;
        let secs = self.t0.elapsed().as_secs_f64();
        self.s.metrics.request(&self.route, model, status, secs);
        let ms = (secs * 1e3).round();
        let ts = crate::openai::now();
        tracing::info!(target: "pez_serve::request", ts, request_id = %self.id, method = %self.method, route = %self.route, model, status, ms, "request");
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.s.metrics.in_flight.dec();
        if !self.done {
            self.finish(499, "-");
        }
    }
}

/// Request id (the client's `x-request-id` if sane, else ours; echoed), one log line and metrics per request.
pub async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(|| s.id("req"));
    s.metrics.in_flight.inc();
    // The route's pattern (e.g. `/v1/models/{id}`), never the raw path, so labels stay few; "other" for none.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_string();
    let mut seen = Observed {
        s: s.clone(),
        id: id.clone(),
        method: req.method().to_string(),
        route,
        t0: Instant::now(),
        done: false,
    };
    let sent_body = !axum::body::HttpBody::is_end_stream(req.body());
    let mut resp = next.run(req).await;
    // A request refused (too large, too slow, unauthorised...) may leave its body unread, and then the connection
    // cannot carry another request: say so, or a pooling client sends its next request into a closing socket.
    if sent_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let model = resp
        .extensions()
        .get::<ServedModel>()
        .map_or("-".to_string(), |m| m.0.clone());
    seen.finish(resp.status().as_u16(), &model);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Reads the whole body within `max_body_bytes` and `body_timeout_s`: too large is a 413 (from Content-Length
/// before reading, when it says so), too slow or shorter than announced a 408.
pub async fn read_body(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let max = s.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {max} bytes"),
            "invalid_request_error",
        )
        .into_response()
    };
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let secs = s.limits.body_timeout_s;
    match tokio::time::timeout(
        Duration::from_secs(secs),
        http_body_util::BodyExt::collect(http_body_util::Limited::new(body, max)),
    )
    .await
    {
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive in full within {secs} s"),
            "invalid_request_error",
        )
        .into_response(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => too_large(),
        Ok(Err(e)) => ApiError::bad_request(format!("could not read the request body: {e}")).into_response(),
        Ok(Ok(c)) => next.run(Request::from_parts(parts, Body::from(c.to_bytes()))).await,
    }
}

/// A permit among the requests in flight, or a 429 with Retry-After.
pub async fn limit_concurrency(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match s.limiter.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests in flight; retry later",
            "rate_limit_exceeded",
        )
        .into_response(),
    }
}

/// The request's owner, or a 401 in OpenAI's shape. Health routes and (when public) `/metrics` need no key.
pub async fn authorize(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open = path == "/health" || path.starts_with("/health/") || path == "/metrics" && s.keys.public_metrics();
    if s.keys.is_empty() || open {
        req.extensions_mut().insert(Owner(String::new()));
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token.map(|t| s.keys.owner(t)) {
        Some(Some(owner)) => {
            req.extensions_mut().insert(owner);
            next.run(req).await
        }
        Some(None) => ApiError::unauthorized("Incorrect API key provided.").into_response(),
        None => ApiError::unauthorized("You didn't provide an API key: send it as `Authorization: Bearer <key>`.")
            .into_response(),
    }
}
