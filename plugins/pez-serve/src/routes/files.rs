//! `/v1/files`: upload (multipart, `purpose = "fine-tune"`), list, retrieve, delete and read back the files
//! tuning jobs train on. A file is checked whole before it is kept (its size, its name, every line an example:
//! a bad line is refused by its number) and belongs to the API key that uploaded it.

use super::{page_of, ListQuery};
use crate::auth::Owner;
use crate::error::ApiError;
use crate::openai::{FileDeleted, FileObject, List};
use crate::state::{now, AppState};
use crate::tuning::jobs::{file_path, internal};
use crate::tuning::store::{new_id, FileRow};
use crate::tuning::{dataset, Tuning};
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::Extension;
use std::sync::Arc;

fn object(f: &FileRow) -> FileObject {
    FileObject {
        id: f.id.clone(),
        object: "file",
        bytes: f.bytes,
        created_at: f.created_at,
        filename: f.filename.clone(),
        purpose: f.purpose.clone(),
        status: "processed",
        expires_at: None,
    }
}

pub fn tuning(s: &AppState) -> Result<&Arc<Tuning>, ApiError> {
    s.tuning.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "tuning is off on this server",
            "invalid_request_error",
        )
    })
}

/// A file name without a path: no separators, not `.` or `..`, printable, at most 255 bytes.
fn plain_name(name: &str) -> Result<(), ApiError> {
    let bad = name.is_empty()
        || name.len() > 255
        || name.contains(['/', '\\'])
        || name == "."
        || name == ".."
        || name.chars().any(char::is_control);
    match bad {
        true => Err(ApiError::invalid(
            "file",
            format!("the file name {name:?} must be a plain name, without a path"),
        )),
        false => Ok(()),
    }
}

/// The upload's `purpose` and `file` parts; the file at most `max` bytes.
async fn parts(mut mp: Multipart, max: u64) -> Result<(String, String, Vec<u8>), ApiError> {
    let (mut purpose, mut file) = (None, None);
    // A body past the route's limit is the form's error too: a 413.
    let bad_form = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(
            e.status(),
            format!("the form: {}", e.body_text()),
            "invalid_request_error",
        )
    };
    while let Some(mut field) = mp.next_field().await.map_err(bad_form)? {
        match field.name() {
            Some("purpose") => purpose = Some(field.text().await.map_err(bad_form)?),
            Some("file") => {
                let name = field.file_name().unwrap_or_default().to_string();
                let mut bytes = vec![];
                while let Some(chunk) = field.chunk().await.map_err(bad_form)? {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() as u64 > max {
                        let msg = format!("the file is larger than this server's limit of {max} bytes");
                        return Err(ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            msg,
                            "invalid_request_error",
                        ));
                    }
                }
                file = Some((name, bytes));
            }
            _ => {}
        }
    }
    let purpose = purpose.ok_or_else(|| ApiError::invalid("purpose", "missing required field `purpose`"))?;
    let (name, bytes) = file.ok_or_else(|| ApiError::invalid("file", "missing required field `file`"))?;
    Ok((purpose, name, bytes))
}

pub async fn upload(
    State(s): State<AppState>,
    Extension(owner): Extension<Owner>,
    mp: Multipart,
) -> Result<Json<FileObject>, ApiError> {
    let t = tuning(&s)?;
    let (purpose, filename, bytes) = parts(mp, t.cfg.max_file_bytes).await?;
    if purpose != "fine-tune" {
        return Err(ApiError::invalid(
            "purpose",
            format!("`purpose` {purpose:?}: this server keeps `fine-tune` files only"),
        ));
    }
    plain_name(&filename)?;
    if bytes.is_empty() {
        return Err(ApiError::invalid("file", "the file is empty"));
    }
    let (t, owner) = (t.clone(), owner.0);
    let kept = tokio::task::spawn_blocking(move || keep(&t, owner, filename, purpose, &bytes)).await;
    let (row, n) = kept.map_err(internal)??;
    tracing::info!(file = %row.id, examples = n, bytes = row.bytes, "file uploaded");
    Ok(Json(object(&row)))
}

/// A file checked (every line an example) and kept: its bytes under the state directory, then its row.
fn keep(
    t: &Tuning,
    owner: String,
    filename: String,
    purpose: String,
    bytes: &[u8],
) -> Result<(FileRow, usize), ApiError> {
    let n = dataset::parse(bytes)
        .map_err(|e| ApiError::invalid("file", format!("{filename}: {e}")))?
        .len();
    let row = FileRow {
        id: new_id("file"),
        owner,
        filename,
        purpose,
        bytes: bytes.len() as u64,
        created_at: now(),
    };
    let path = file_path(&t.dir, &row.id);
    let tmp = path.with_extension("tmp");
    std::fs::create_dir_all(t.dir.join("files")).map_err(internal)?;
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(internal)?;
    if let Err(e) = t.store.insert_file(&row) {
        let _ = std::fs::remove_file(&path);
        return Err(internal(e));
    }
    Ok((row, n))
}

pub async fn list(
    State(s): State<AppState>,
    Extension(owner): Extension<Owner>,
    Query(q): Query<ListQuery>,
) -> Result<Json<List<FileObject>>, ApiError> {
    let t = tuning(&s)?;
    let cursor = q.cursor(10_000)?;
    let page = t
        .store
        .files(&owner.0, q.purpose.as_deref(), cursor)
        .map_err(internal)?;
    Ok(Json(page_of(page, object, |f| f.id.clone())))
}

fn owned(s: &AppState, owner: &Owner, id: &str) -> Result<FileRow, ApiError> {
    tuning(s)?
        .store
        .file(&owner.0, id)
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("file", id, "file_id"))
}

pub async fn retrieve(
    State(s): State<AppState>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
) -> Result<Json<FileObject>, ApiError> {
    Ok(Json(object(&owned(&s, &owner, &id)?)))
}

pub async fn content(
    State(s): State<AppState>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = owned(&s, &owner, &id)?;
    let bytes = tokio::fs::read(file_path(&tuning(&s)?.dir, &row.id))
        .await
        .map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Deletes a file; a job made from it keeps its own copy of the examples.
pub async fn delete(
    State(s): State<AppState>,
    Extension(owner): Extension<Owner>,
    Path(id): Path<String>,
) -> Result<Json<FileDeleted>, ApiError> {
    let t = tuning(&s)?;
    let row = owned(&s, &owner, &id)?;
    t.store.delete_file(&owner.0, &row.id).map_err(internal)?;
    let _ = std::fs::remove_file(file_path(&t.dir, &row.id));
    Ok(Json(FileDeleted {
        id: row.id,
        object: "file",
        deleted: true,
    }))
}
