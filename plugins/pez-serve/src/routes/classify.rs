//! `POST /v1/classify`: labels and label scores for texts, from a classifier (a model name) or from a base model
//! with the classifier in the request (`prompt`, `template`, `verbalizers`).

use super::{run_classifier, usage};
use crate::error::ApiError;
use crate::middleware::served;
use crate::requests::parse;
use crate::state::AppState;
use crate::validate;
use crate::worker::AdHoc;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use pez_classify::api::{Classification, ClassifyRequest, ClassifyResponse, LabelScores};

pub async fn classify(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ClassifyRequest = parse(&body)?;
    let texts = validate::texts(&req.input, "input", &s.limits)?;
    let model = req.model.clone();
    let (labels, scored) = match s.pool.classifiers.get(&model) {
        Some(info) => (info.labels.clone(), run_classifier(&s, &model, texts).await?),
        None if s.bases.iter().any(|b| b.name == model) => {
            let (prompt, format) = req
                .ad_hoc()
                .map_err(|m| ApiError::bad_request(format!("`{model}` is a base model: {m}")))?;
            let labels = format.label_names.clone();
            let calibration = req.calibration.unwrap_or_default();
            (
                labels,
                s.pool
                    .classify_ad_hoc(
                        &model,
                        AdHoc {
                            prompt,
                            format,
                            calibration,
                        },
                        texts,
                    )
                    .await?,
            )
        }
        None => return Err(ApiError::unknown_model(&model)),
    };
    let scores = |f: &dyn Fn(f32) -> f32, lp: &[f32]| {
        LabelScores(labels.iter().cloned().zip(lp.iter().map(|&x| f(x))).collect())
    };
    let data = scored
        .iter()
        .enumerate()
        .map(|(index, r)| Classification {
            index,
            label: labels[r.label].clone(),
            label_index: r.label,
            probs: scores(&f32::exp, &r.logprobs),
            logprobs: scores(&|x| x, &r.logprobs),
            raw_probs: r.raw_logprobs.as_ref().map(|lp| scores(&f32::exp, lp)),
            truncated: r.truncated,
        })
        .collect();
    let usage = usage(&scored, 0);
    Ok(served(
        Json(ClassifyResponse {
            object: "list".into(),
            model: model.clone(),
            data,
            usage,
        })
        .into_response(),
        model,
    ))
}
