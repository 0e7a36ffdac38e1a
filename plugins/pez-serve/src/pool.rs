//! The classifier pool: one worker thread per base model (`worker`), and what the handlers ask of it: score
//! texts with a named classifier or with one given in the request.

use crate::config::{classifier_name, ServeConfig};
use crate::error::ClassifyError;
use crate::metrics::Metrics;
use crate::worker::{self, AdHoc, Bounds, ClassifierInfo, Job};
use anyhow::{anyhow, Result};
use pez_classify::Scored;
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

pub struct ClassifierPool {
    pub classifiers: BTreeMap<String, ClassifierInfo>,
    /// The worker of each base model (by name).
    workers: BTreeMap<String, Handle>,
}

struct Handle {
    jobs: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl ClassifierPool {
    /// Loads every base model that has classifiers and prepares their prefixes (blocking: minutes for big models).
    pub fn start(cfg: &ServeConfig, metrics: Arc<Metrics>) -> Result<Self> {
        let mut classifiers = BTreeMap::new();
        let mut workers = BTreeMap::new();
        for base in &cfg.models {
            let entries: Vec<(String, std::path::PathBuf)> = cfg
                .classifiers
                .iter()
                .filter(|c| c.base.as_deref().unwrap_or(&cfg.models[0].name) == base.name)
                .map(|c| (classifier_name(c), c.prompt.clone()))
                .collect();
            let (tx, rx) = mpsc::channel::<Job>();
            let (ready_tx, ready_rx) = mpsc::channel::<Result<Vec<ClassifierInfo>>>();
            let bounds = Bounds {
                max_batch: cfg.max_batch,
                max_text_tokens: cfg.limits.max_text_tokens,
            };
            let (path, name, metrics, (device, dtype)) = (
                base.path().to_string(),
                base.name.clone(),
                metrics.clone(),
                base.placement()?,
            );
            let thread = std::thread::Builder::new()
                .name(format!("classify-{name}"))
                .spawn(move || {
                    worker::run(
                        &path,
                        &name,
                        (&device, dtype),
                        &entries,
                        bounds,
                        &metrics,
                        &rx,
                        &ready_tx,
                    )
                })?;
            let infos = ready_rx
                .recv()
                .map_err(|_| anyhow!("the worker for `{}` died while loading", base.name))??;
            for i in infos {
                classifiers.insert(i.name.clone(), i);
            }
            workers.insert(base.name.clone(), Handle { jobs: tx, thread });
        }
        Ok(Self { classifiers, workers })
    }

    /// Base models whose worker thread has ended (it never should: the server is then unhealthy).
    pub fn dead_workers(&self) -> Vec<String> {
        self.workers
            .iter()
            .filter(|(_, w)| w.thread.is_finished())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Scores `texts` with classifier `name`; results in input order. Dropping the future (the client went away)
    /// withdraws the texts not yet scored.
    pub async fn classify(&self, name: &str, texts: Vec<String>) -> Result<Vec<Scored>, ClassifyError> {
        let info = self
            .classifiers
            .get(name)
            .ok_or_else(|| ClassifyError::BadRequest(format!("unknown classifier `{name}`")))?;
        self.submit(&info.base, Ok(info.slot), texts).await
    }

    /// Scores `texts` on base model `base` with a classifier given in the request.
    pub async fn classify_ad_hoc(
        &self,
        base: &str,
        adhoc: AdHoc,
        texts: Vec<String>,
    ) -> Result<Vec<Scored>, ClassifyError> {
        self.submit(base, Err(adhoc), texts).await
    }

    async fn submit(
        &self,
        base: &str,
        slot: Result<usize, AdHoc>,
        texts: Vec<String>,
    ) -> Result<Vec<Scored>, ClassifyError> {
        let worker = self
            .workers
            .get(base)
            .ok_or_else(|| ClassifyError::BadRequest(format!("unknown base model `{base}`")))?;
        let (reply, rx) = oneshot::channel();
        worker
            .jobs
            .send(Job { slot, texts, reply })
            .map_err(|_| ClassifyError::Internal("the classifier worker has stopped".into()))?;
        rx.await
            .map_err(|_| ClassifyError::Internal("the classifier worker dropped the request".into()))?
    }
}
