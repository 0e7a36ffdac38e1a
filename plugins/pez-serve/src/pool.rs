//! The classifier pool: one worker thread per base model (`worker`), and what the handlers ask of it: score
//! texts with a classifier (looked up once per request, by `get`) or with one given in the request, and add a
//! classifier while serving (a finished tuning job's).

use crate::config::{classifier_name, ServeConfig};
use crate::error::ClassifyError;
use crate::metrics::Metrics;
use crate::worker::{self, AdHoc, Bounds, ClassifierInfo, Job, Message};
use anyhow::{anyhow, Result};
use pez_classify::Scored;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, RwLock};
use tokio::sync::oneshot;

pub struct ClassifierPool {
    classifiers: RwLock<BTreeMap<String, Arc<ClassifierInfo>>>,
    /// The worker of each base model (by name).
    workers: BTreeMap<String, Handle>,
}

struct Handle {
    jobs: mpsc::Sender<Message>,
    thread: std::thread::JoinHandle<()>,
}

impl ClassifierPool {
    /// Loads every base model that has classifiers and prepares their prefixes (blocking: minutes for big
    /// models). A base model without classifiers gets its worker too (it may get a tuned one later).
    pub fn start(cfg: &ServeConfig, metrics: Arc<Metrics>) -> Result<Self> {
        let mut classifiers = BTreeMap::new();
        let mut workers = BTreeMap::new();
        for base in &cfg.models {
            let entries: Vec<(String, PathBuf)> = cfg
                .classifiers
                .iter()
                .filter(|c| c.base.as_deref().unwrap_or(&cfg.models[0].name) == base.name)
                .map(|c| (classifier_name(c), c.prompt.clone()))
                .collect();
            let (tx, rx) = mpsc::channel::<Message>();
            let (ready_tx, ready_rx) = mpsc::channel::<Result<Vec<ClassifierInfo>>>();
            let bounds = Bounds {
                max_batch: cfg.max_batch,
                max_text_tokens: cfg.limits.max_text_tokens,
            };
            let (path, name, metrics) = (base.path().to_string(), base.name.clone(), metrics.clone());
            let (device, dtype) = base.placement()?;
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
                classifiers.insert(i.name.clone(), Arc::new(i));
            }
            workers.insert(base.name.clone(), Handle { jobs: tx, thread });
        }
        Ok(Self {
            classifiers: RwLock::new(classifiers),
            workers,
        })
    }

    /// The classifier named `name`, if one is served.
    pub fn get(&self, name: &str) -> Option<Arc<ClassifierInfo>> {
        self.classifiers
            .read()
            .expect("the classifier map is never poisoned")
            .get(name)
            .cloned()
    }

    /// Every served classifier, by name.
    pub fn all(&self) -> Vec<Arc<ClassifierInfo>> {
        self.classifiers
            .read()
            .expect("the classifier map is never poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Base models whose worker thread has ended (it never should: the server is then unhealthy).
    pub fn dead_workers(&self) -> Vec<String> {
        self.workers
            .iter()
            .filter(|(_, w)| w.thread.is_finished())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Builds classifier `name` from `prompt` on base model `base` and serves it from now on (kept if a
    /// classifier of that name is there already).
    pub async fn add(&self, name: &str, prompt: PathBuf, base: &str) -> Result<Arc<ClassifierInfo>, ClassifyError> {
        if let Some(c) = self.get(name) {
            return Ok(c);
        }
        let worker = self.worker(base)?;
        let (reply, rx) = oneshot::channel();
        worker
            .jobs
            .send(Message::Add {
                name: name.to_string(),
                prompt,
                reply,
            })
            .map_err(|_| stopped())?;
        let info = Arc::new(rx.await.map_err(|_| stopped())??);
        let mut map = self.classifiers.write().expect("the classifier map is never poisoned");
        Ok(map.entry(name.to_string()).or_insert(info).clone())
    }

    /// Whether `format` works on base model `base` (a 400 saying why not).
    pub async fn check_format(
        &self,
        base: &str,
        format: &pez_tasks::PromptFormat,
        prompt_len: usize,
    ) -> Result<(), ClassifyError> {
        let (reply, rx) = oneshot::channel();
        let m = Message::Check {
            format: format.clone(),
            prompt_len,
            reply,
        };
        self.worker(base)?.jobs.send(m).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Scores `texts` with classifier `c`; results in input order. Dropping the future (the client went away)
    /// withdraws the texts not yet scored.
    pub async fn classify(&self, c: &ClassifierInfo, texts: Vec<String>) -> Result<Vec<Scored>, ClassifyError> {
        self.submit(&c.base, Ok(c.slot), texts).await
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

    fn worker(&self, base: &str) -> Result<&Handle, ClassifyError> {
        self.workers
            .get(base)
            .ok_or_else(|| ClassifyError::BadRequest(format!("unknown base model `{base}`")))
    }

    async fn submit(
        &self,
        base: &str,
        slot: Result<usize, AdHoc>,
        texts: Vec<String>,
    ) -> Result<Vec<Scored>, ClassifyError> {
        let (reply, rx) = oneshot::channel();
        self.worker(base)?
            .jobs
            .send(Message::Score(Job { slot, texts, reply }))
            .map_err(|_| stopped())?;
        rx.await
            .map_err(|_| ClassifyError::Internal("the classifier worker dropped the request".into()))?
    }
}

fn stopped() -> ClassifyError {
    ClassifyError::Internal("the classifier worker has stopped".into())
}
