//! Classification workers: one thread per base model owns its weights and the prefix caches of its
//! classifiers, and scores queued texts in batches.

use crate::config::{classifier_name, ServeConfig};
use crate::metrics::Metrics;
use anyhow::{anyhow, Result};
use candle_core::{DType, Device};
use pez_models::{load_lm, LoadedLm};
use pez_classify::{best_label, calibrated, LearnedPrompt, Prompted};
use pez_tasks::{Calibration, PromptFormat};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
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
    /// Text tokens read before truncation (the serving limit, within the context beside prompt and template).
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
    workers: BTreeMap<String, Worker>,
}

struct Worker {
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
            let bounds = Bounds { max_batch: cfg.max_batch, max_text_tokens: cfg.limits.max_text_tokens };
            let (path, name, metrics) = (base.path().to_string(), base.name.clone(), metrics.clone());
            let thread = std::thread::Builder::new()
                .name(format!("classify-{name}"))
                .spawn(move || worker_main(&path, &name, entries, bounds, &metrics, rx, ready_tx))?;
            let infos = ready_rx.recv().map_err(|_| anyhow!("the worker for `{}` died while loading", base.name))??;
            for i in infos {
                classifiers.insert(i.name.clone(), i);
            }
            workers.insert(base.name.clone(), Worker { jobs: tx, thread });
        }
        Ok(Self { classifiers, workers })
    }

    /// Base models whose worker thread has ended (it never should: the server is then unhealthy).
    pub fn dead_workers(&self) -> Vec<String> {
        self.workers.iter().filter(|(_, w)| w.thread.is_finished()).map(|(n, _)| n.clone()).collect()
    }

    /// Scores `texts` with classifier `name`; results in input order. Dropping the future (the client went away)
    /// withdraws the texts not yet scored.
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
        worker.jobs.send(Job { slot, texts, reply }).map_err(|_| ClassifyError::Internal("the classifier worker has stopped".into()))?;
        rx.await.map_err(|_| ClassifyError::Internal("the classifier worker dropped the request".into()))?
    }
}

/// How much one batch may hold.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// Texts per batch.
    max_batch: usize,
    /// Tokens read per text (the serving limit; the context bounds it too).
    max_text_tokens: usize,
}

/// A job being worked on: its texts encoded, the results so far.
struct Active {
    slot: Result<usize, AdHoc>,
    rows: Vec<(Vec<u32>, bool)>,
    done: Vec<Option<Scored>>,
    /// Rows before `next` are scored or in the current batch.
    next: usize,
    reply: oneshot::Sender<Result<Vec<Scored>, ClassifyError>>,
}

fn worker_main(
    path: &str,
    base: &str,
    entries: Vec<(String, std::path::PathBuf)>,
    bounds: Bounds,
    metrics: &Metrics,
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
                max_text_tokens: p.clf.max_text_tokens.min(bounds.max_text_tokens),
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
    let mut active: Vec<Active> = vec![];
    // Each round: take in new jobs, drop those whose client has gone, score one batch drawn round-robin from the
    // jobs (so a 10,000-text request does not hold up a one-text one), answer the jobs that are complete.
    loop {
        if active.is_empty() {
            metrics.queue_depth(base, 0);
            match rx.recv() {
                Ok(j) => admit(j, &lm, &built, &mut adhoc, bounds, &mut active),
                Err(_) => return,
            }
        }
        while let Ok(j) = rx.try_recv() {
            admit(j, &lm, &built, &mut adhoc, bounds, &mut active);
        }
        active.retain(|a| {
            let gone = a.reply.is_closed();
            if gone {
                metrics.cancelled_texts.fetch_add((a.rows.len() - a.next) as u64, Ordering::Relaxed);
            }
            !gone
        });
        metrics.queue_depth(base, active.iter().map(|a| a.rows.len() - a.next).sum());
        if active.is_empty() {
            continue;
        }
        let picks = pick_batch(&active, bounds.max_batch);
        metrics.batch(picks.iter().map(|p| p.1.len()).sum());
        let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| score_batch(&lm, &built, &mut adhoc, &active, &picks)))
            .unwrap_or_else(|_| Err(anyhow!("the classifier panicked")));
        match scored {
            Ok(results) => {
                for ((ai, range), r) in picks.iter().zip(results) {
                    for (i, s) in range.clone().zip(r) {
                        active[*ai].done[i] = Some(s);
                    }
                    active[*ai].next = range.end;
                }
            }
            Err(e) => {
                // Every job in this batch fails; the others go on.
                let mut failed: Vec<usize> = picks.iter().map(|p| p.0).collect();
                failed.sort_unstable();
                failed.dedup();
                for i in failed.into_iter().rev() {
                    let _ = active.remove(i).reply.send(Err(ClassifyError::Internal(format!("{e:#}"))));
                }
                continue;
            }
        }
        let mut i = 0;
        while i < active.len() {
            if active[i].next == active[i].rows.len() {
                let a = active.remove(i);
                let _ = a.reply.send(Ok(a.done.into_iter().map(|s| s.expect("every text scored")).collect()));
            } else {
                i += 1;
            }
        }
    }
}

const MAX_AD_HOC: usize = 16;

/// The ad-hoc classifier `a`, built (and kept) if it is not yet; a failure (e.g. verbalizers sharing a first
/// token) is the request's fault.
fn adhoc_index<'a>(lm: &'a LoadedLm, adhoc: &mut Vec<(AdHoc, Prompted<'a>)>, a: &AdHoc) -> Result<usize, ClassifyError> {
    if let Some(i) = adhoc.iter().position(|x| &x.0 == a) {
        return Ok(i);
    }
    let learned = LearnedPrompt::from_text(a.format.clone(), &a.prompt, lm).map(|l| LearnedPrompt { calibration: a.calibration, ..l });
    let p = learned.and_then(|l| Prompted::new(lm, l)).map_err(|e| ClassifyError::BadRequest(format!("{e:#}")))?;
    if adhoc.len() >= MAX_AD_HOC {
        adhoc.remove(0);
    }
    adhoc.push((a.clone(), p));
    Ok(adhoc.len() - 1)
}

/// Takes a job in: its classifier (an ad-hoc one is built now; failing that, the job gets a 400) and its texts
/// encoded (each cut to the serving limit before tokenizing).
fn admit<'a>(j: Job, lm: &'a LoadedLm, built: &[(ClassifierInfo, Prompted<'a>)], adhoc: &mut Vec<(AdHoc, Prompted<'a>)>, bounds: Bounds, active: &mut Vec<Active>) {
    let encoded = match &j.slot {
        Ok(slot) => Ok(&built[*slot].1),
        Err(a) => adhoc_index(lm, adhoc, a).map(|i| &adhoc[i].1),
    }
    .and_then(|p| {
        j.texts.iter().map(|t| p.clf.encode_within(t, bounds.max_text_tokens)).collect::<Result<Vec<_>>>().map_err(|e| ClassifyError::Internal(format!("{e:#}")))
    });
    match encoded {
        Ok(rows) => {
            let n = rows.len();
            active.push(Active { slot: j.slot, rows, done: vec![None; n], next: 0, reply: j.reply });
        }
        Err(e) => {
            let _ = j.reply.send(Err(e));
        }
    }
}

/// Up to `max_batch` rows, one from each job in turn: `(job, rows)` per job that gets any.
fn pick_batch(active: &[Active], max_batch: usize) -> Vec<(usize, std::ops::Range<usize>)> {
    let mut take = vec![0usize; active.len()];
    let mut n = 0;
    loop {
        let before = n;
        for (i, a) in active.iter().enumerate() {
            if n < max_batch && a.next + take[i] < a.rows.len() {
                take[i] += 1;
                n += 1;
            }
        }
        if n == before || n >= max_batch {
            break;
        }
    }
    take.iter().enumerate().filter(|(_, &t)| t > 0).map(|(i, &t)| (i, active[i].next..active[i].next + t)).collect()
}

/// Scores the picked rows. Rows of the same classifier are sorted by length and scored together after its cached
/// prefix (`Classifier::label_logprobs` packs them without padding, or pads chunks of similar length for T5).
fn score_batch<'a>(
    lm: &'a LoadedLm,
    built: &[(ClassifierInfo, Prompted<'a>)],
    adhoc: &mut Vec<(AdHoc, Prompted<'a>)>,
    active: &[Active],
    picks: &[(usize, std::ops::Range<usize>)],
) -> Result<Vec<Vec<Scored>>> {
    let mut out: Vec<Vec<Option<Scored>>> = picks.iter().map(|p| vec![None; p.1.len()]).collect();
    let mut keys: Vec<&Result<usize, AdHoc>> = vec![];
    for (ai, _) in picks {
        if !keys.contains(&&active[*ai].slot) {
            keys.push(&active[*ai].slot);
        }
    }
    for key in keys {
        let p = match key {
            Ok(slot) => &built[*slot].1,
            // Rebuilt if sixteen others pushed it out since the job came in.
            Err(a) => {
                let i = adhoc_index(lm, adhoc, a).map_err(|e| anyhow!("{e}"))?;
                &adhoc[i].1
            }
        };
        let mut rows: Vec<(usize, usize, &(Vec<u32>, bool))> = vec![];
        for (pi, (ai, range)) in picks.iter().enumerate().filter(|(_, (ai, _))| &active[*ai].slot == key) {
            for (k, i) in range.clone().enumerate() {
                rows.push((pi, k, &active[*ai].rows[i]));
            }
        }
        rows.sort_by_key(|r| r.2 .0.len());
        let fixed = p.prefix.embeds.as_ref().map_or(0, |e| e.dim(0).unwrap_or(0));
        let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.2 .0.clone()).collect();
        for (r, raw) in rows.iter().zip(p.raw_label_logprobs(&ids)?) {
            let (logprobs, raw_logprobs) = match &p.offsets {
                Some(off) => (calibrated(&raw, off), Some(raw)),
                None => (raw, None),
            };
            let label = best_label(&logprobs);
            out[r.0][r.1] = Some(Scored { label, logprobs, raw_logprobs, tokens: fixed + r.2 .0.len(), truncated: r.2 .1 });
        }
    }
    Ok(out.into_iter().map(|v| v.into_iter().map(|s| s.expect("every picked text scored")).collect()).collect())
}
