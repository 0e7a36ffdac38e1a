//! What operators and orchestrators read: readiness (`/health`), liveness (`/health/live`) and `/metrics`.

use crate::openai::Health;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Json, Response};

/// Ready: every classifier worker alive and mistral.rs answering for each generating model (it restarts a
/// dead engine when asked). 503 with the problems otherwise.
pub async fn ready(State(s): State<AppState>) -> Response {
    let mut problems: Vec<String> = s
        .pool
        .dead_workers()
        .into_iter()
        .map(|b| format!("the classifier worker of `{b}` has stopped"))
        .collect();
    if let Some(engine) = &s.engine {
        for b in s.bases.iter().filter(|b| b.generate) {
            if let Err(e) = engine.get_sender(Some(&b.name)) {
                problems.push(format!("mistral.rs engine for `{}`: {e:?}", b.name));
            }
        }
    }
    if problems.is_empty() {
        Json(Health { status: "ok", problems }).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unhealthy",
                problems,
            }),
        )
            .into_response()
    }
}

/// Alive: the process answers.
pub async fn live() -> Json<Health> {
    Json(Health {
        status: "ok",
        problems: vec![],
    })
}

pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
        .into_response()
}
