//! `/v1/fine_tuning/jobs`: create (checked whole, then queued), list, retrieve, cancel, and a job's events and
//! checkpoints. A job belongs to the API key that made it; its classifier, once it succeeds, is any key's to call.

use super::files::tuning;
use super::{page_of, ListQuery};
use crate::auth::Owner;
use crate::error::ApiError;
use crate::openai::{FineTuningJob, JobCheckpoint, JobEvent, List};
use crate::requests::parse;
use crate::state::AppState;
use crate::tuning::jobs::{self, internal, CreateJob};
use crate::tuning::store::{JobRow, Status};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Json;
use axum::Extension;

pub async fn create(
    State(s): State<AppState>,
    Extension(owner): Extension<Owner>,
    body: Bytes,
) -> Result<Json<FineTuningJob>, ApiError> {
    let t = tuning(&s)?;
    let req: CreateJob = parse(&body)?;
    let open = t.store.open_jobs().map_err(internal)?;
    if open >= t.cfg.max_running_jobs + t.cfg.max_queued_jobs {
        return Err(ApiError::busy(format!(
            "{open} tuning jobs are queued or running: this server takes no more now"
        )));
    }
    let job = jobs::create(t.clone(), owner.0, req).await?;
    t.wake();
    Ok(Json(jobs::object(&job)))
}

pub async fn list(
    State(s): State<AppState>,
    Extension(owner): Extension<Owner>,
    Query(q): Query<ListQuery>,
) -> Result<Json<List<FineTuningJob>>, ApiError> {
    let page = tuning(&s)?.store.jobs(&owner.0, q.cursor(20)?).map_err(internal)?;
    Ok(Json(page_of(page, jobs::object, |j| j.id.clone())))
}

fn owned(s: &AppState, owner: &Owner, id: &str) -> Result<JobRow, ApiError> {
    let job = tuning(s)?.store.job(Some(&owner.0), id).map_err(internal)?;
    job.ok_or_else(|| ApiError::not_found("fine-tuning job", id, "fine_tuning_job_id"))
}

pub async fn retrieve(
    State(s): State<AppState>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
) -> Result<Json<FineTuningJob>, ApiError> {
    Ok(Json(jobs::object(&owned(&s, &owner, &id)?)))
}

/// Cancels a queued or running job (a running one stops after the step it is in).
pub async fn cancel(
    State(s): State<AppState>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
) -> Result<Json<FineTuningJob>, ApiError> {
    let t = tuning(&s)?;
    let job = owned(&s, &owner, &id)?;
    if job.status.is_final() {
        return Err(ApiError::bad_request(format!(
            "the job is {}: there is nothing to cancel",
            job.status
        )));
    }
    t.store
        .set_status(&job.id, Some(job.status), Status::Cancelled)
        .map_err(internal)?;
    t.stop_local(&job.id);
    if let Some(slurm) = job.runner_id.as_deref().and_then(|r| r.strip_prefix("slurm:")) {
        let _ = std::process::Command::new("scancel").arg(slurm).status();
    }
    t.store
        .add_event(&job.id, "info", "The job was cancelled.", None)
        .map_err(internal)?;
    t.wake();
    Ok(Json(jobs::object(&owned(&s, &owner, &id)?)))
}

pub async fn events(
    State(s): State<AppState>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<List<JobEvent>>, ApiError> {
    let job = owned(&s, &owner, &id)?;
    let page = tuning(&s)?.store.events(&job.id, q.cursor(20)?).map_err(internal)?;
    let object = |e: &crate::tuning::store::EventRow| JobEvent {
        id: e.id.clone(),
        object: "fine_tuning.job.event",
        created_at: e.created_at,
        level: e.level.clone(),
        message: e.message.clone(),
        kind: e.kind.clone(),
        data: e.data.clone(),
    };
    Ok(Json(page_of(page, object, |e| e.id.clone())))
}

pub async fn checkpoints(
    State(s): State<AppState>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<List<JobCheckpoint>>, ApiError> {
    let job = owned(&s, &owner, &id)?;
    let page = tuning(&s)?
        .store
        .checkpoints(&job.id, q.cursor(10)?)
        .map_err(internal)?;
    let name = jobs::model_name(&job);
    let object = |c: &crate::tuning::store::CheckpointRow| JobCheckpoint {
        id: c.id.clone(),
        object: "fine_tuning.job.checkpoint",
        created_at: c.created_at,
        fine_tuned_model_checkpoint: format!("{name}:ckpt-step-{}", c.step),
        fine_tuning_job_id: c.job_id.clone(),
        metrics: c.metrics.clone(),
        step_number: c.step,
    };
    Ok(Json(page_of(page, object, |c| c.id.clone())))
}
