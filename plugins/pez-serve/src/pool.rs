//! Classification workers: one thread per base model owns its weights and the prefix caches of its
//! classifiers, and scores queued texts in batches.

use crate::config::{classifier_name, ServeConfig};
use anyhow::{anyhow, Result};
use candle_core::{DType, Device};
use pez_models::load_lm;
use pez_classify::{best_label, calibrated, LearnedPrompt, Prompted};
use pez_tasks::{Calibration, PromptFormat};
use std::collections::BTreeMap;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// What the API knows about a classifier.
#[derive(Debug, Clone)]
pub struct ClassifierInfo {
    pub name: String,
    pub base: String,
    pub task: String,
    pub prompt: String,
    pub template: String,
    pub labels: Vec<String>,
    pub calibration: Calibration,
    /// Text tokens kept before truncation (prompt and template always fit).
    pub max_text_tokens: usize,
    slot: usize,
}

/// One text's result: the label, log-probabilities over the labels (normalised over the verbalizers, as
/// `pez eval`), and the tokens the model read for it (prompt, text after truncation, template).
#[derive(Debug, Clone)]
pub struct Scored {
    pub label: usize,
    /// Calibrated, for a calibrated classifier.
    pub logprobs: Vec<f32>,
    /// The uncalibrated ones, for a calibrated classifier.
    pub raw_logprobs: Option<Vec<f32>>,
    pub tokens: usize,
    pub truncated: bool,
}

/// A classifier given in the request itself (for scoring arbitrary prompts, e.g. `pez transfer --endpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdHoc {
    pub prompt: String,
    pub format: PromptFormat,
    pub calibration: Calibration,
}

/// Why a classification failed: the request's fault (a 4xx) or ours (a 5xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifyError {
    /// The request cannot be served as asked (e.g. an ad-hoc classifier whose verbalizers share a first token).
    BadRequest(String),
    /// The worker failed or is gone.
    Internal(String),
}

impl std::fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadRequest(m) | Self::Internal(m) => f.write_str(m),
        }
    }
}

struct Job {
    /// A configured classifier, or an ad-hoc one.
    slot: Result<usize, AdHoc>,
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Scored>, ClassifyError>>,
}

pub struct ClassifierPool {
    pub classifiers: BTreeMap<String, ClassifierInfo>,
    /// The worker of each base model (by name).
    workers: BTreeMap<String, mpsc::Sender<Job>>,
}

impl ClassifierPool {
    /// Loads every base model that has classifiers and prepares their prefixes (blocking: minutes for big models).
    pub fn start(cfg: &ServeConfig) -> Result<Self> {
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
            let (path, name, max_batch, _) = (base.path().to_string(), base.name.clone(), cfg.max_batch, base.name.clone());
            std::thread::Builder::new().name(format!("classify-{name}")).spawn(move || {
                worker_main(&path, &name, entries, max_batch, rx, ready_tx)
            })?;
            let infos = ready_rx.recv().map_err(|_| anyhow!("the worker for `{}` died while loading", base.name))??;
            for i in infos {
                classifiers.insert(i.name.clone(), i);
            }
            workers.insert(base.name.clone(), tx);
        }
        Ok(Self { classifiers, workers })
    }

    /// Scores `texts` with classifier `name`; results in input order.
    pub async fn classify(&self, name: &str, texts: Vec<String>) -> Result<Vec<Scored>, ClassifyError> {
        let info = self.classifiers.get(name).ok_or_else(|| ClassifyError::BadRequest(format!("unknown classifier `{name}`")))?;
        self.submit(&info.base, Ok(info.slot), texts).await
    }

    /// Scores `texts` on base model `base` with a classifier given in the request.
    pub async fn classify_ad_hoc(&self, base: &str, adhoc: AdHoc, texts: Vec<String>) -> Result<Vec<Scored>, ClassifyError> {
        self.submit(base, Err(adhoc), texts).await
    }

    async fn submit(&self, base: &str, slot: Result<usize, AdHoc>, texts: Vec<String>) -> Result<Vec<Scored>, ClassifyError> {
        let worker = self.workers.get(base).ok_or_else(|| ClassifyError::BadRequest(format!("unknown base model `{base}`")))?;
        let (reply, rx) = oneshot::channel();
        worker.send(Job { slot, texts, reply }).map_err(|_| ClassifyError::Internal("the classifier worker has stopped".into()))?;
        rx.await.map_err(|_| ClassifyError::Internal("the classifier worker dropped the request".into()))?
    }
}

fn worker_main(
    path: &str,
    base: &str,
    entries: Vec<(String, std::path::PathBuf)>,
    max_batch: usize,
    rx: mpsc::Receiver<Job>,
    ready: mpsc::Sender<Result<Vec<ClassifierInfo>>>,
) {
    let lm = match load_lm(path, DType::F32, &Device::Cpu) {
        Ok(lm) => lm,
        Err(e) => {
            let _ = ready.send(Err(e.context(format!("loading base model `{base}` ({path})"))));
            return;
        }
    };
    // Built inside the thread: a classifier borrows the model and tokenizer that live here.
    let built: Result<Vec<(ClassifierInfo, Prompted)>> = entries
        .iter()
        .enumerate()
        .map(|(slot, (name, prompt_path))| {
            let learned = LearnedPrompt::from_artifact(prompt_path, &lm).map_err(|e| e.context(format!("classifier `{name}`")))?;
            let p = Prompted::new(&lm, learned)?;
            for w in &p.clf.warnings {
                eprintln!("classifier `{name}`: warning: {w}");
            }
            let info = ClassifierInfo {
                name: name.clone(),
                base: base.to_string(),
                task: p.prompt.task.clone().unwrap_or_default(),
                prompt: p.prompt.text.clone(),
                template: p.prompt.format.template.clone(),
                labels: p.prompt.format.label_names.clone(),
                calibration: p.prompt.calibration,
                max_text_tokens: p.clf.max_text_tokens,
                slot,
            };
            Ok((info, p))
        })
        .collect();
    let built = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(built.iter().map(|b| b.0.clone()).collect())).is_err() {
        return;
    }
    // Ad-hoc classifiers, built on first use and kept (a transfer run sends one prompt many times).
    let mut adhoc: Vec<(AdHoc, Prompted)> = vec![];
    // Wait for one job, then take whatever else is queued (up to `max_batch` texts) and score it together.
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut n = jobs[0].texts.len();
        while n < max_batch {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.texts.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        // An ad-hoc classifier that cannot be built (e.g. verbalizers sharing a first token) fails its own jobs
        // with a 400; the other jobs are scored.
        let mut refused = vec![None; jobs.len()];
        for (i, j) in jobs.iter().enumerate() {
            if let Err(a) = &j.slot {
                if !adhoc.iter().any(|x| &x.0 == a) {
                    let learned = LearnedPrompt::from_text(a.format.clone(), &a.prompt, &lm).map(|l| LearnedPrompt { calibration: a.calibration, ..l });
                    match learned.and_then(|l| Prompted::new(&lm, l)) {
                        Ok(p) => {
                            if adhoc.len() >= MAX_AD_HOC {
                                adhoc.remove(0);
                            }
                            adhoc.push((a.clone(), p));
                        }
                        Err(e) => refused[i] = Some(ClassifyError::BadRequest(format!("{e:#}"))),
                    }
                }
            }
        }
        let (jobs, failed): (Vec<_>, Vec<_>) = jobs.into_iter().zip(refused).partition(|(_, r)| r.is_none());
        for (j, e) in failed {
            let _ = j.reply.send(Err(e.expect("a refusal")));
        }
        let jobs: Vec<Job> = jobs.into_iter().map(|(j, _)| j).collect();
        let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| score_jobs(&built, &adhoc, &jobs)))
            .unwrap_or_else(|_| Err(anyhow!("the classifier panicked")));
        match results {
            Ok(per_job) => {
                for (j, r) in jobs.into_iter().zip(per_job) {
                    let _ = j.reply.send(Ok(r));
                }
            }
            Err(e) => {
                for j in jobs {
                    let _ = j.reply.send(Err(ClassifyError::Internal(format!("{e:#}"))));
                }
            }
        }
    }
}

const MAX_AD_HOC: usize = 16;

/// Rows of the same classifier are sorted by length and scored together after its cached prefix
/// (`Classifier::label_logprobs` packs them without padding, or pads chunks of similar length for T5).
fn score_jobs(built: &[(ClassifierInfo, Prompted)], adhoc: &[(AdHoc, Prompted)], jobs: &[Job]) -> Result<Vec<Vec<Scored>>> {
    const CHUNK: usize = 32;
    let mut out: Vec<Vec<Option<Scored>>> = jobs.iter().map(|j| vec![None; j.texts.len()]).collect();
    let configured = built.iter().enumerate().map(|(slot, (_, p))| (Ok(slot), p));
    let given = adhoc.iter().map(|(a, p)| (Err(a.clone()), p));
    for (key, p) in configured.chain(given) {
        let mut rows = vec![];
        for (ji, j) in jobs.iter().enumerate().filter(|(_, j)| j.slot == key) {
            for (ti, t) in j.texts.iter().enumerate() {
                let (ids, truncated) = p.clf.encode_noting_truncation(t)?;
                rows.push((ji, ti, ids, truncated));
            }
        }
        rows.sort_by_key(|r| r.2.len());
        let fixed = p.prefix.embeds.as_ref().map_or(0, |e| e.dim(0).unwrap_or(0));
        for chunk in rows.chunks(CHUNK) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|r| r.2.clone()).collect();
            for (r, raw) in chunk.iter().zip(p.raw_label_logprobs(&ids)?) {
                let (logprobs, raw_logprobs) = match &p.offsets {
                    Some(off) => (calibrated(&raw, off), Some(raw)),
                    None => (raw, None),
                };
                let label = best_label(&logprobs);
                out[r.0][r.1] = Some(Scored { label, logprobs, raw_logprobs, tokens: fixed + r.2.len(), truncated: r.3 });
            }
        }
    }
    Ok(out.into_iter().map(|v| v.into_iter().map(|s| s.expect("every text scored")).collect()).collect())
}
