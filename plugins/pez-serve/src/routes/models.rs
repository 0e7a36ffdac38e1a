//! `GET /v1/models` and `GET /v1/models/{id}` (the official client's `models.retrieve`): base models, then
//! classifiers with their task, prompt, template and labels.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::Json;
use serde_json::{json, Value};

/// Every served model's card, as `/v1/models` lists them.
fn cards(s: &AppState) -> Vec<Value> {
    let bases = s.bases.iter().map(|b| json!({"id": b.name, "object": "model", "created": s.created, "owned_by": "pez", "kind": "base", "generation": b.generate}));
    let classifiers = s.pool.classifiers.values().map(|c| {
        json!({
            "id": c.name, "object": "model", "created": s.created, "owned_by": "pez", "kind": "classifier",
            "base_model": c.base, "task": c.task, "prompt": c.prompt, "template": c.template, "labels": c.labels,
            "calibration": c.calibration,
        })
    });
    bases.chain(classifiers).collect()
}

pub async fn list(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": cards(&s)}))
}

pub async fn retrieve(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    cards(&s)
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::unknown_model(&id))
}
