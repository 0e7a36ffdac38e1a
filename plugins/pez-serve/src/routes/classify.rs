//! `POST /v1/classify`: labels and label scores for texts, from a classifier (a model name) or from a base model
//! with the classifier in the request (`prompt`, `template`, `verbalizers`).

use super::usage;
use crate::error::ApiError;
use crate::middleware::served;
use crate::requests::parse;
use crate::state::{AppState, Target};
use crate::validate;
use crate::worker::AdHoc;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use pez_classify::api::{Classification, ClassifyRequest, ClassifyResponse, LabelScores};

pub async fn classify(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ClassifyRequest = parse(&body)?;
    let texts = validate::texts(&req.input, "input", &s.limits)?;
    let target = s.target(&req.model)?;
    let (labels, scored) = match &target {
        Target::Classifier(c) => (c.labels.clone(), s.pool.classify(c, texts).await?),
        Target::Base(base) => {
            let (prompt, format) = req
                .ad_hoc()
                .map_err(|m| ApiError::bad_request(format!("`{}` is a base model: {m}", base.name)))?;
            let labels = format.label_names.clone();
            let adhoc = AdHoc {
                prompt,
                format,
                calibration: req.calibration.unwrap_or_default(),
            };
            (labels, s.pool.classify_ad_hoc(&base.name, adhoc, texts).await?)
        }
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
    let model = target.name().to_string();
    let response = ClassifyResponse {
        object: "list".into(),
        model: model.clone(),
        data,
        usage: usage(&scored, 0),
    };
    Ok(served(Json(response).into_response(), model))
}
