//! What every handler shares: the classifier pool, the mistral.rs engine, the served models, the API keys, the
//! tuning service, the limits and the metrics.

use crate::auth::Keys;
use crate::config::{BaseInfo, Limits};
use crate::error::ApiError;
use crate::metrics::Metrics;
pub use crate::openai::now;
use crate::pool::ClassifierPool;
use crate::tuning::Tuning;
use crate::worker::ClassifierInfo;
use mistralrs_server_core::types::SharedMistralRsState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct AppState {
    pub pool: Arc<ClassifierPool>,
    pub engine: Option<SharedMistralRsState>,
    pub bases: Arc<Vec<BaseInfo>>,
    /// One permit per request in flight; none left means 429.
    pub limiter: Arc<Semaphore>,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    /// The API keys (none: every request is anonymous).
    pub keys: Arc<Keys>,
    /// Files and fine-tuning jobs (none: those routes answer 404).
    pub tuning: Option<Arc<Tuning>>,
    pub created: u64,
    next_id: Arc<AtomicU64>,
}

impl AppState {
    pub fn new(
        pool: Arc<ClassifierPool>,
        engine: Option<SharedMistralRsState>,
        bases: Vec<BaseInfo>,
        max_concurrency: usize,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            engine,
            bases: Arc::new(bases),
            limiter: Arc::new(Semaphore::new(max_concurrency)),
            limits: Arc::new(limits),
            metrics,
            keys: Arc::new(Keys::default()),
            tuning: None,
            created: now(),
            next_id: Arc::new(AtomicU64::new(0)),
        }
    }

    /// With API keys: every route but the health ones (and public metrics) needs one.
    pub fn with_keys(self, keys: Keys) -> Self {
        Self {
            keys: Arc::new(keys),
            ..self
        }
    }

    /// With files and fine-tuning jobs.
    pub fn with_tuning(self, tuning: Arc<Tuning>) -> Self {
        Self {
            tuning: Some(tuning),
            ..self
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

    /// Who answers requests for `model`: looked up once per request.
    pub fn target(&self, model: &str) -> Result<Target, ApiError> {
        if let Some(c) = self.pool.get(model) {
            return Ok(Target::Classifier(c));
        }
        match self.bases.iter().find(|b| b.name == model) {
            Some(b) => Ok(Target::Base(b.clone())),
            None => Err(ApiError::unknown_model(model)),
        }
    }

    /// The mistral.rs engine of a base model, for plain generation.
    pub fn engine(&self, base: &BaseInfo) -> Result<SharedMistralRsState, ApiError> {
        match (&self.engine, base.generate) {
            (Some(engine), true) => Ok(engine.clone()),
            _ => Err(ApiError::bad_request(format!(
                "the base model `{}` is served for classification only (mistral.rs does not run it); use one of its \
                 classifiers",
                base.name
            ))),
        }
    }
}

/// Who answers a request for a model name.
pub enum Target {
    /// A learned classifier (pez's forward pass).
    Classifier(Arc<ClassifierInfo>),
    /// A base model: plain generation (mistral.rs), or classification with the classifier in the request.
    Base(BaseInfo),
}

impl Target {
    /// The served model's name (what metrics and logs name: never text from a request that names no model).
    pub fn name(&self) -> &str {
        match self {
            Self::Classifier(c) => &c.name,
            Self::Base(b) => &b.name,
        }
    }
}
