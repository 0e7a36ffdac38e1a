//! What every handler shares: the classifier pool, the mistral.rs engine, the served models, the limits and the
//! metrics.

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::pool::ClassifierPool;
use mistralrs_server_core::types::SharedMistralRsState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// A base model as the API lists it.
#[derive(Debug, Clone)]
pub struct BaseInfo {
    pub name: String,
    /// Plain chat/completions run on mistral.rs for this model.
    pub generate: bool,
}

#[derive(Clone)]
pub struct AppState {
    pub pool: Arc<ClassifierPool>,
    pub engine: Option<SharedMistralRsState>,
    pub bases: Arc<Vec<BaseInfo>>,
    /// One permit per request in flight; none left means 429.
    pub limiter: Arc<Semaphore>,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub created: u64,
    next_id: Arc<AtomicU64>,
}

impl AppState {
    pub fn new(
        pool: ClassifierPool,
        engine: Option<SharedMistralRsState>,
        bases: Vec<BaseInfo>,
        max_concurrency: usize,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool: Arc::new(pool),
            engine,
            bases: Arc::new(bases),
            limiter: Arc::new(Semaphore::new(max_concurrency)),
            limits: Arc::new(limits),
            metrics,
            created: now(),
            next_id: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A fresh id such as `chatcmpl-...`.
    pub fn id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{:x}{:06x}",
            self.created,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `model` if it is served, else "-": what metrics and logs name (request text never becomes a label).
    pub fn known(&self, model: &str) -> String {
        let served = self.pool.classifiers.contains_key(model) || self.bases.iter().any(|b| b.name == model);
        if served {
            model.to_string()
        } else {
            "-".into()
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
