//! `GET /v1/models` and `GET /v1/models/{id}` (the official client's `models.retrieve`): base models, then
//! classifiers (configured and tuned) with their task, prompt, template and labels.

use crate::error::ApiError;
use crate::openai::{List, ModelCard, ModelKind};
use crate::state::{AppState, Target};
use crate::worker::ClassifierInfo;
use axum::extract::{Path, State};
use axum::response::Json;

fn base_card(s: &AppState, name: &str, generation: bool) -> ModelCard {
    ModelCard {
        id: name.to_string(),
        object: "model",
        created: s.created,
        owned_by: "pez".into(),
        kind: ModelKind::Base { generation },
    }
}

fn classifier_card(s: &AppState, c: &ClassifierInfo) -> ModelCard {
    ModelCard {
        id: c.name.clone(),
        object: "model",
        created: s.created,
        owned_by: "pez".into(),
        kind: ModelKind::Classifier {
            base_model: c.base.clone(),
            task: c.task.clone(),
            prompt: c.prompts[0].clone(),
            prompts: c.prompts.clone(),
            template: c.template.clone(),
            labels: c.labels.clone(),
            calibration: c.calibration,
        },
    }
}

pub async fn list(State(s): State<AppState>) -> Json<List<ModelCard>> {
    let bases = s.bases.iter().map(|b| base_card(&s, &b.name, b.generate));
    let classifiers = s.pool.all().into_iter().map(|c| classifier_card(&s, &c));
    Json(List::of(bases.chain(classifiers).collect()))
}

pub async fn retrieve(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<ModelCard>, ApiError> {
    Ok(Json(match s.target(&id)? {
        Target::Classifier(c) => classifier_card(&s, &c),
        Target::Base(b) => base_card(&s, &b.name, b.generate),
    }))
}
