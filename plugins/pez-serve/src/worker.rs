//! One base model's classification worker: a thread that owns the model and its classifiers (each an `Ensemble`
//! of one prompt or more, each prompt's prefix run once) and scores queued texts in batches drawn round-robin
//! from the waiting requests.

use crate::error::ClassifyError;
use crate::metrics::Metrics;
use anyhow::{anyhow, Result};
use candle_core::Device;
use pez_classify::{Encoded, Ensemble, LearnedPrompt, Scored};
use pez_models::{load_lm, LoadedLm};
use pez_tasks::{Calibration, PromptFormat};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// What the API knows about a classifier.
#[derive(Debug, Clone)]
pub struct ClassifierInfo {
    pub name: String,
    pub base: String,
    pub task: String,
    /// The prompts it scores each text under, best first: one, or an ensemble's members (what a text costs:
    /// one forward pass each).
    pub prompts: Vec<String>,
    pub template: String,
    pub labels: Vec<String>,
    pub calibration: Calibration,
    /// Text tokens read before truncation (the serving limit, within the context beside prompt and template).
    pub max_text_tokens: usize,
    pub(crate) slot: usize,
}

/// A classifier given in the request itself (for scoring arbitrary prompts, e.g. `pez transfer --endpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdHoc {
    pub prompt: String,
    pub format: PromptFormat,
    pub calibration: Calibration,
}

/// What a worker is asked: to score texts, or to add a classifier (a finished tuning job's) while serving.
pub enum Message {
    Score(Job),
    Add {
        name: String,
        prompt: PathBuf,
        reply: oneshot::Sender<Result<ClassifierInfo, ClassifyError>>,
    },
    /// Whether a prompt format works on this model (its verbalizers' first tokens differ): what a tuning job
    /// checks before it is queued.
    Check {
        format: PromptFormat,
        prompt_len: usize,
        reply: oneshot::Sender<Result<(), ClassifyError>>,
    },
}

/// Texts for a worker to score, and where the answer goes.
pub struct Job {
    /// A configured classifier (its index on the worker), or an ad-hoc one.
    pub slot: Result<usize, AdHoc>,
    pub texts: Vec<String>,
    pub reply: oneshot::Sender<Result<Vec<Scored>, ClassifyError>>,
}

/// How much one batch may hold.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Texts per batch.
    pub max_batch: usize,
    /// Tokens read per text (the serving limit; the context bounds it too).
    pub max_text_tokens: usize,
}

/// Ad-hoc classifiers kept at most (a transfer run sends one prompt many times).
const MAX_AD_HOC: usize = 16;

/// A job being worked on: its texts encoded, the results so far.
struct Active {
    slot: Result<usize, AdHoc>,
    rows: Vec<Encoded>,
    done: Vec<Option<Scored>>,
    /// Rows before `next` are scored or in the current batch.
    next: usize,
    reply: oneshot::Sender<Result<Vec<Scored>, ClassifyError>>,
}

/// The thread's body: load the model and the classifiers, say so on `ready`, then serve rounds until the pool
/// is gone.
#[allow(clippy::too_many_arguments)]
pub fn run(
    path: &str,
    base: &str,
    (device, dtype): (&Device, pez_nn::Dtype),
    entries: &[(String, PathBuf)],
    bounds: Bounds,
    metrics: &Metrics,
    rx: &mpsc::Receiver<Message>,
    ready: &mpsc::Sender<Result<Vec<ClassifierInfo>>>,
) {
    let lm = match load_lm(path, dtype.candle(), device) {
        Ok(lm) => lm,
        Err(e) => {
            let _ = ready.send(Err(e.context(format!("loading base model `{base}` ({path})"))));
            return;
        }
    };
    let mut w = match Worker::load(&lm, base, entries, bounds, metrics) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(w.infos())).is_ok() {
        while w.round(rx) {}
    }
}

pub struct Worker<'a> {
    lm: &'a LoadedLm,
    base: String,
    bounds: Bounds,
    metrics: &'a Metrics,
    built: Vec<(ClassifierInfo, Ensemble<'a>)>,
    adhoc: Vec<(AdHoc, Ensemble<'a>)>,
    active: Vec<Active>,
}

impl<'a> Worker<'a> {
    /// Builds the configured classifiers (`(name, prompt.json)`) on the loaded model.
    pub fn load(
        lm: &'a LoadedLm,
        base: &str,
        entries: &[(String, PathBuf)],
        bounds: Bounds,
        metrics: &'a Metrics,
    ) -> Result<Self> {
        let mut w = Self {
            lm,
            base: base.to_string(),
            bounds,
            metrics,
            built: vec![],
            adhoc: vec![],
            active: vec![],
        };
        for (name, prompt) in entries {
            w.add(name, prompt)?;
        }
        Ok(w)
    }

    /// Builds classifier `name` from its prompt.json or ensemble.json and serves it from now on.
    pub fn add(&mut self, name: &str, prompt_path: &std::path::Path) -> Result<ClassifierInfo> {
        let p = Ensemble::load(prompt_path, self.lm, None).map_err(|e| e.context(format!("classifier `{name}`")))?;
        for w in &p.first().clf.warnings {
            tracing::warn!(classifier = %name, "{w}");
        }
        let info = ClassifierInfo {
            name: name.to_string(),
            base: self.base.clone(),
            task: p.first().prompt.task.clone().unwrap_or_default(),
            prompts: p.prompts(),
            template: p.format().template.clone(),
            labels: p.format().label_names.clone(),
            calibration: p.calibration(),
            max_text_tokens: p.max_text_tokens.min(self.bounds.max_text_tokens),
            slot: self.built.len(),
        };
        self.built.push((info.clone(), p));
        Ok(info)
    }

    pub fn infos(&self) -> Vec<ClassifierInfo> {
        self.built.iter().map(|b| b.0.clone()).collect()
    }

    /// One round: take in new jobs (waiting for one when idle), drop those whose client has gone, score one batch
    /// drawn round-robin from the jobs (so a 10,000-text request does not hold up a one-text one), answer the
    /// jobs that are complete. False once the pool has gone.
    pub fn round(&mut self, rx: &mpsc::Receiver<Message>) -> bool {
        if self.active.is_empty() {
            self.metrics.queue_depth(&self.base, 0);
            match rx.recv() {
                Ok(m) => self.take(m),
                Err(_) => return false,
            }
        }
        while let Ok(m) = rx.try_recv() {
            self.take(m);
        }
        self.drop_abandoned();
        if self.active.is_empty() {
            return true;
        }
        let picks = pick_batch(&self.active, self.bounds.max_batch);
        self.metrics.batch(picks.iter().map(|p| p.1.len()).sum());
        let (lm, built, adhoc, active) = (self.lm, &self.built, &mut self.adhoc, &self.active);
        let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            score_batch(lm, built, adhoc, active, &picks)
        }))
        .unwrap_or_else(|_| Err(anyhow!("the classifier panicked")));
        match scored {
            Ok(results) => {
                for ((ai, range), r) in picks.iter().zip(results) {
                    for (i, s) in range.clone().zip(r) {
                        self.active[*ai].done[i] = Some(s);
                    }
                    self.active[*ai].next = range.end;
                }
                self.answer_finished();
            }
            Err(e) => self.fail(&picks, &format!("{e:#}")),
        }
        true
    }

    fn take(&mut self, m: Message) {
        match m {
            Message::Score(j) => self.admit(j),
            Message::Add { name, prompt, reply } => {
                let _ = reply.send(
                    self.add(&name, &prompt)
                        .map_err(|e| ClassifyError::Internal(format!("{e:#}"))),
                );
            }
            Message::Check {
                format,
                prompt_len,
                reply,
            } => {
                let built = pez_classify::Classifier::new(self.lm, &format, prompt_len);
                let _ = reply.send(
                    built
                        .map(|_| ())
                        .map_err(|e| ClassifyError::BadRequest(format!("{e:#}"))),
                );
            }
        }
    }

    /// Takes a job in: its classifier (an ad-hoc one is built now; failing that, the job gets a 400) and its texts
    /// encoded (each cut to the serving limit before tokenizing).
    fn admit(&mut self, j: Job) {
        let cap = self.bounds.max_text_tokens;
        let prompted = match &j.slot {
            Ok(slot) => Ok(&self.built[*slot].1),
            Err(a) => adhoc_index(self.lm, &mut self.adhoc, a).map(|i| &self.adhoc[i].1),
        };
        let encoded = prompted.and_then(|p| {
            j.texts
                .iter()
                .map(|t| p.encode(t, cap))
                .collect::<Result<Vec<_>>>()
                .map_err(|e| ClassifyError::Internal(format!("{e:#}")))
        });
        match encoded {
            Ok(rows) => {
                let n = rows.len();
                self.active.push(Active {
                    slot: j.slot,
                    rows,
                    done: vec![None; n],
                    next: 0,
                    reply: j.reply,
                });
            }
            Err(e) => {
                let _ = j.reply.send(Err(e));
            }
        }
    }

    /// Drops the jobs whose client has gone (their texts are not scored).
    fn drop_abandoned(&mut self) {
        let metrics = self.metrics;
        self.active.retain(|a| {
            let gone = a.reply.is_closed();
            if gone {
                metrics.cancelled_texts.inc_by((a.rows.len() - a.next) as u64);
            }
            !gone
        });
        self.metrics
            .queue_depth(&self.base, self.active.iter().map(|a| a.rows.len() - a.next).sum());
    }

    fn answer_finished(&mut self) {
        let (finished, waiting): (Vec<Active>, Vec<Active>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|a| a.next == a.rows.len());
        self.active = waiting;
        for a in finished {
            let _ = a
                .reply
                .send(Ok(a.done.into_iter().map(|s| s.expect("every text scored")).collect()));
        }
    }

    /// Every job in a failed batch fails; the others go on.
    fn fail(&mut self, picks: &[(usize, Range<usize>)], why: &str) {
        let mut failed: Vec<usize> = picks.iter().map(|p| p.0).collect();
        failed.sort_unstable();
        failed.dedup();
        for i in failed.into_iter().rev() {
            let _ = self
                .active
                .remove(i)
                .reply
                .send(Err(ClassifyError::Internal(why.to_string())));
        }
    }
}

/// The ad-hoc classifier `a`, built (and kept) if it is not yet; a failure (e.g. verbalizers sharing a first
/// token) is the request's fault.
fn adhoc_index<'a>(
    lm: &'a LoadedLm,
    adhoc: &mut Vec<(AdHoc, Ensemble<'a>)>,
    a: &AdHoc,
) -> Result<usize, ClassifyError> {
    if let Some(i) = adhoc.iter().position(|x| &x.0 == a) {
        return Ok(i);
    }
    let learned = LearnedPrompt::from_text(a.format.clone(), &a.prompt, lm).map(|l| LearnedPrompt {
        calibration: a.calibration,
        ..l
    });
    let p = learned
        .and_then(|l| Ensemble::new(lm, vec![l]))
        .map_err(|e| ClassifyError::BadRequest(format!("{e:#}")))?;
    if adhoc.len() >= MAX_AD_HOC {
        adhoc.remove(0);
    }
    adhoc.push((a.clone(), p));
    Ok(adhoc.len() - 1)
}

/// Up to `max_batch` rows, one from each job in turn: `(job, rows)` per job that gets any.
fn pick_batch(active: &[Active], max_batch: usize) -> Vec<(usize, Range<usize>)> {
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
    take.iter()
        .enumerate()
        .filter(|(_, &t)| t > 0)
        .map(|(i, &t)| (i, active[i].next..active[i].next + t))
        .collect()
}

/// Scores the picked rows: those of one classifier sorted by length and scored together after its cached prefix
/// (`Ensemble::score_rows`).
fn score_batch<'a>(
    lm: &'a LoadedLm,
    built: &[(ClassifierInfo, Ensemble<'a>)],
    adhoc: &mut Vec<(AdHoc, Ensemble<'a>)>,
    active: &[Active],
    picks: &[(usize, Range<usize>)],
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
        let mut rows: Vec<(usize, usize, &Encoded)> = vec![];
        for (pi, (ai, range)) in picks.iter().enumerate().filter(|(_, (ai, _))| &active[*ai].slot == key) {
            for (k, i) in range.clone().enumerate() {
                rows.push((pi, k, &active[*ai].rows[i]));
            }
        }
        rows.sort_by_key(|r| r.2 .0.len());
        let picked: Vec<Encoded> = rows.iter().map(|r| r.2.clone()).collect();
        for (r, s) in rows.iter().zip(p.score_rows(&picked)?) {
            out[r.0][r.1] = Some(s);
        }
    }
    Ok(out
        .into_iter()
        .map(|v| v.into_iter().map(|s| s.expect("every picked text scored")).collect())
        .collect())
}
