//! One file per endpoint. Here what they share: usage counts, labels ranked by score, server-sent events, and
//! the memory budget plain generation runs within.

pub mod chat;
pub mod classify;
pub mod completions;
pub mod files;
pub mod fine_tuning;
pub mod health;
pub mod models;

use crate::error::ApiError;
use crate::metrics::resident_bytes;
use crate::state::AppState;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use pez_classify::api::Usage;
use pez_classify::Scored;
use serde::Serialize;
use std::convert::Infallible;

pub fn usage(scored: &[Scored], completion_tokens: usize) -> Usage {
    let prompt_tokens: usize = scored.iter().map(|x| x.tokens).sum();
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    }
}

/// Labels sorted by log-probability, best first, at most `k`.
pub fn ranked(labels: &[String], lp: &[f32], k: usize) -> Vec<(String, f32)> {
    let mut v: Vec<(String, f32)> = labels.iter().cloned().zip(lp.iter().copied()).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(k);
    v
}

/// One server-sent event in OpenAI's shape: `data: <json>`.
pub fn event<T: Serialize>(x: &T) -> Event {
    Event::default().json_data(x).expect("a response object serializes")
}

/// Server-sent events in OpenAI's shape through axum's `Sse`: each event a `data:` line, then `data: [DONE]`.
pub fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    let done = futures_util::stream::once(async { Event::default().data("[DONE]") });
    let stream = events.chain(done).map(Ok::<_, Infallible>);
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// `after`, `limit` and `order` of a list route (and `purpose` for files).
#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    pub after: Option<String>,
    pub limit: Option<usize>,
    pub order: Option<String>,
    pub purpose: Option<String>,
}

impl ListQuery {
    /// `(after, limit, ascending)`: newest first unless `order=asc`; `limit` from 1 to 10,000.
    pub fn cursor(&self, default_limit: usize) -> Result<(Option<&str>, usize, bool), ApiError> {
        let limit = self.limit.unwrap_or(default_limit);
        if !(1..=10_000).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("`limit` must be from 1 to 10000; got {limit}"),
            ));
        }
        let ascending = match self.order.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(o) => {
                return Err(ApiError::invalid(
                    "order",
                    format!("`order` must be asc or desc; got {o:?}"),
                ))
            }
        };
        Ok((self.after.as_deref(), limit, ascending))
    }
}

/// A cursor page of rows as their objects.
pub fn page_of<R, T>(
    page: crate::tuning::store::Page<R>,
    object: impl Fn(&R) -> T,
    id: impl Fn(&T) -> String,
) -> crate::openai::List<T> {
    crate::openai::List::page(page.rows.iter().map(object).collect(), page.has_more, id)
}

/// Plain generation is refused with a 503 while the resident size is over its budget.
pub fn within_memory_budget(s: &AppState) -> Result<(), ApiError> {
    let budget = s.limits.rss_budget();
    if resident_bytes().is_some_and(|r| r > budget) {
        s.metrics.memory_refusals.inc();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the server's memory is over its budget ({} MiB); generation is paused, retry later",
                budget >> 20
            ),
            "server_overloaded",
        ));
    }
    Ok(())
}
