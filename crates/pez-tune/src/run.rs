//! A tuning run: open (or resume) it, step, evaluate on the holdout, checkpoint, finish with the dev pass.
//!
//! ```text
//! let mut run = Run::open(cfg, checkpoint, &lm)?;
//! while !run.done() { run.step()?; if run.due() { run.evaluate()?; run.checkpoint()?; } }
//! run.finish()
//! ```

use crate::objective::BatchObjective;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use pez_classify::{evaluate, Classifier, Evaluation, LearnedPrompt, Prompted};
use pez_config::write_atomic;
use pez_config::{Init, PromptArtifact, TuneConfig};
use pez_core::{Method, Optimizer, Pez, PezState, Projector, StepReport};
use pez_hub::tokenizer;
use pez_models::{load_lm, LanguageModel, LoadedLm};
use pez_tasks::metrics::Accuracy;
use pez_tasks::{Example, RowRule, TaskSpec};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: usize,
    pub train_loss: f32,
    pub holdout_accuracy: f64,
    pub prompt: String,
    pub token_ids: Vec<u32>,
    /// Mean next-token NLL of the prompt under the model; none for a model that is not a causal decoder (T5).
    pub fluency_log_ppl: Option<f64>,
    pub best: bool,
    pub elapsed_s: f64,
    /// The dtype the model computed in.
    #[serde(default)]
    pub dtype: pez_nn::Dtype,
    /// Under `PEZ_PROFILE=1`: where the steps since the last record spent their time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<StepProfile>,
}

/// Seconds per step in each phase, averaged over `steps` (`PEZ_PROFILE=1`: each phase ends with the device
/// synchronised, so a GPU's queued work counts where it was issued, and the steps run slower for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StepProfile {
    pub steps: usize,
    /// The soft prompt projected to its nearest vocabulary rows (ids read back to the host).
    pub project_s: f64,
    /// The model's forward pass over the batch, up to the loss.
    pub forward_s: f64,
    /// The backward pass, the gradient and the loss read back.
    pub backward_s: f64,
    /// The gradient clipped and the optimizer's update (on the host).
    pub update_s: f64,
}

impl StepProfile {
    fn add(&mut self, p: &pez_core::Phases, forward_s: f64) {
        self.steps += 1;
        self.project_s += p.project_s;
        self.forward_s += forward_s;
        self.backward_s += p.loss_and_grad_s - forward_s;
        self.update_s += p.update_s;
    }

    /// The per-step means, leaving a fresh sum behind.
    fn take_means(&mut self) -> Self {
        let n = self.steps.max(1) as f64;
        let m = Self {
            steps: self.steps,
            project_s: self.project_s / n,
            forward_s: self.forward_s / n,
            backward_s: self.backward_s / n,
            update_s: self.update_s / n,
        };
        *self = Self::default();
        m
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Best {
    step: usize,
    holdout_accuracy: f64,
    ids: Vec<u32>,
    /// The continuous prompt, kept for `soft` runs (whose prompt is not a token sequence).
    soft: Option<Vec<f32>>,
    fluency_log_ppl: Option<f64>,
}

/// What a run must keep to continue exactly (`checkpoint.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    config: TuneConfig,
    pez: PezState,
    best: Option<Best>,
    metrics_lines: usize,
    loss_sum: f64,
    loss_count: usize,
    elapsed_s: f64,
    /// Written by `Run::finish`: the run is complete and its `prompt.json` final.
    #[serde(default)]
    pub finished: bool,
}

impl Checkpoint {
    /// Seconds the run has taken so far (over every process that worked on it).
    pub fn elapsed_s(&self) -> f64 {
        self.elapsed_s
    }

    /// The run's configuration.
    pub fn config(&self) -> &TuneConfig {
        &self.config
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("checkpoint.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
    }

    /// Writes `checkpoint.json` in `dir` (atomically).
    fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join("checkpoint.json"), serde_json::to_string(self)?.as_bytes())
    }
}

/// What a run directory holds. A run is finished by its checkpoint's word or, where the checkpoint was not kept
/// (`checkpoint.json` is git-ignored, so committed results hold only prompt.json and metrics.jsonl), by a
/// prompt.json with the dev score, which only the end of a run writes (a run on a task without a dev split is not
/// recognised that way).
pub enum RunDir {
    /// Neither a readable checkpoint nor a final prompt.json.
    Missing,
    Started(Box<Checkpoint>),
    /// `checkpoint`: known from the checkpoint, else from prompt.json alone.
    Finished {
        config: Box<TuneConfig>,
        checkpoint: bool,
    },
}

impl RunDir {
    pub fn read(dir: &Path) -> Self {
        match Checkpoint::read(dir) {
            Ok(c) if c.finished => Self::Finished {
                config: Box::new(c.config),
                checkpoint: true,
            },
            Ok(c) => Self::Started(Box::new(c)),
            Err(_) if dir.join("checkpoint.json").exists() => Self::Missing,
            Err(_) => match PromptArtifact::read(dir) {
                Ok(a) if a.dev_accuracy.is_some() => Self::Finished {
                    config: Box::new(a.config),
                    checkpoint: false,
                },
                _ => Self::Missing,
            },
        }
    }

    /// Refuses the run held in `dir` (to be kept or resumed as `ours`) if it differs from `ours` on one of the
    /// `compared` settings: its result would be reported as another setting's. `remedy` says what to do instead.
    /// `out` is never compared: the caller names the directory, and a run linked in from elsewhere keeps its own.
    pub fn check_is(&self, dir: &Path, ours: &TuneConfig, compared: &[&str], remedy: &str) -> Result<()> {
        let theirs = match self {
            Self::Started(ck) => ck.config(),
            Self::Finished { config, .. } => config,
            Self::Missing => return Ok(()),
        };
        let (theirs, ours) = (serde_json::to_value(theirs)?, serde_json::to_value(ours)?);
        let differs = |k: &&&str| **k != "out" && theirs.get(**k) != ours.get(**k);
        if let Some(k) = compared.iter().find(differs) {
            bail!(
                "{} holds a run whose `{k}` is {}, not {}: {remedy}",
                dir.display(),
                theirs[*k],
                ours[*k]
            );
        }
        Ok(())
    }
}

/// Seconds a finished run took: its checkpoint's count, else the time of its last holdout pass in metrics.jsonl
/// (the dev pass after it not counted); 0 when neither is there.
pub fn wall_seconds(dir: &Path) -> f64 {
    if let Ok(c) = Checkpoint::read(dir) {
        return c.elapsed_s();
    }
    let last = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .ok()
        .and_then(|t| t.lines().last().map(str::to_string));
    last.and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .and_then(|v| v["elapsed_s"].as_f64())
        .unwrap_or(0.0)
}

/// Runs (or resumes, from `resume`'s checkpoint) a tuning run and returns its `prompt.json`.
pub fn tune(cfg: Option<TuneConfig>, resume: Option<&Path>, device: &Device) -> Result<PromptArtifact> {
    let run = tune_observed(cfg, resume, device, &mut |_| ControlFlow::Continue(()))?;
    Ok(run.expect("a run nobody stops finishes"))
}

/// What a run reports as it goes (to a server's tuning job, say).
#[derive(Debug)]
pub enum Report<'r> {
    /// Step `step` of `steps` is done, at `loss`, `elapsed_s` into the run (over every process that worked on it).
    Step {
        step: usize,
        steps: usize,
        loss: f32,
        elapsed_s: f64,
    },
    /// The holdout was scored (after the step the record names).
    Evaluated { record: &'r EvalRecord, steps: usize },
    /// The run can be resumed from this step.
    Checkpointed { step: usize, steps: usize },
}

/// `tune`, telling `observe` how it goes; when `observe` breaks, the run stops after that step (resumable from
/// its last checkpoint) and the answer is `None`.
pub fn tune_observed(
    cfg: Option<TuneConfig>,
    resume: Option<&Path>,
    device: &Device,
    observe: &mut dyn FnMut(Report) -> ControlFlow<()>,
) -> Result<Option<PromptArtifact>> {
    let (cfg, ckpt) = match (cfg, resume) {
        (_, Some(dir)) => {
            let c = Checkpoint::read(dir)?;
            let cfg = TuneConfig {
                out: dir.to_path_buf(),
                ..c.config.clone()
            };
            (cfg, Some(c))
        }
        (Some(cfg), None) => (cfg, None),
        (None, None) => bail!("nothing to run: give a configuration or --resume DIR"),
    };
    run_to_end(cfg, ckpt, device, observe)
}

/// Continues the run in `dir` (finished, or stopped at a checkpoint) to `steps` steps in all, and returns its new
/// `prompt.json`: the run a fresh `steps`-step run with its settings would have been, since nothing in PEZ's loop
/// depends on the total (tests/horizon.rs). Refused where that does not hold: FluentPrompt (its noise decays over
/// the total), few-shot runs (their length is `epochs`), and a run that ended between holdout passes (its last
/// pass is one a longer run does not make).
pub fn extend(dir: &Path, steps: usize, device: &Device) -> Result<PromptArtifact> {
    let c = Checkpoint::read(dir)?;
    let (done, cfg) = (c.pez.step, &c.config);
    if steps <= done {
        bail!("{} is at step {done} already: give --steps above it", dir.display());
    }
    if cfg.method == Method::Fluentprompt {
        bail!("FluentPrompt's noise decays over the run's total steps: a longer run is another run, from step 1");
    }
    if cfg.shots.is_some() {
        bail!("a few-shot run's length is its epochs (--epochs), not --steps: tune again with more epochs");
    }
    if !done.is_multiple_of(cfg.eval_every) {
        bail!(
            "{} ended at step {done}, between holdout passes (every {}): a longer run would not score its last \
             prompt, so it cannot be extended; tune again with --steps {steps}",
            dir.display(),
            cfg.eval_every
        );
    }
    let cfg = TuneConfig {
        out: dir.to_path_buf(),
        steps,
        ..c.config.clone()
    };
    // First the checkpoint becomes the longer run's, unfinished, so that a kill from here on leaves a run that
    // `--resume` takes on; then the shorter run's dev predictions go (its answer comes at the new end).
    let c = Checkpoint {
        config: cfg.clone(),
        finished: false,
        ..c
    };
    c.write(dir)?;
    match std::fs::remove_file(dir.join("dev_predictions.jsonl")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let run = run_to_end(cfg, Some(c), device, &mut |_| ControlFlow::Continue(()))?;
    Ok(run.expect("a run nobody stops finishes"))
}

/// The tuning loop from `ckpt` (or from the start) to the configured number of steps.
fn run_to_end(
    cfg: TuneConfig,
    ckpt: Option<Checkpoint>,
    device: &Device,
    observe: &mut dyn FnMut(Report) -> ControlFlow<()>,
) -> Result<Option<PromptArtifact>> {
    cfg.validate()?;
    let lm = load_lm(&cfg.model, cfg.dtype.candle(), device)?;
    let mut run = Run::open(cfg, ckpt, &lm)?;
    let steps = run.data.steps;
    while !run.done() {
        let r = run.step()?;
        let step = run.pez.state.step;
        let mut stop = observe(Report::Step {
            step,
            steps,
            loss: r.loss,
            elapsed_s: run.elapsed(),
        })
        .is_break();
        if run.due() {
            let record = run.evaluate()?;
            run.checkpoint()?;
            stop |= observe(Report::Evaluated { record: &record, steps }).is_break();
            stop |= observe(Report::Checkpointed { step, steps }).is_break();
        }
        if stop {
            return Ok(None);
        }
    }
    run.finish().map(Some)
}

/// Train rows (encoded, with labels), the holdout that picks the best prompt, and the dev split scored at the end.
struct Data {
    train: Vec<(Vec<u32>, usize)>,
    holdout: Vec<Example>,
    dev: Option<Vec<Example>>,
    steps: usize,
}

impl Data {
    fn load(cfg: &TuneConfig, task: &TaskSpec, clf: &Classifier) -> Result<Self> {
        let train_set = task.load("train", cfg.train.as_deref())?;
        let (train, holdout) = match cfg.shots {
            Some(k) => train_set.few_shot(k, task.num_labels(), cfg.seed)?,
            None => train_set.split_holdout(cfg.holdout, cfg.seed, cfg.holdout_rule, cfg.train_rule),
        };
        let src = train_set.source.display();
        for (rows, what, flag, rule) in [
            (&holdout, "holdout", "--holdout-rule", cfg.holdout_rule),
            (&train, "training", "--train-rule", cfg.train_rule),
        ] {
            match (rows.is_empty(), rule) {
                (false, _) => {}
                (true, RowRule::Long) => bail!(
                    "{src}: no {what} rows: `long` admits rows of {}+ words; give {flag} random",
                    pez_tasks::data::LONG_WORDS
                ),
                (true, RowRule::Random) => bail!(
                    "{src}: {} rows are too few for a holdout and training",
                    train_set.examples.len()
                ),
            }
        }
        let steps = match cfg.shots {
            Some(_) => cfg.epochs * train.len().div_ceil(cfg.batch_size),
            None => cfg.steps,
        };
        let dev = if cfg.skip_dev {
            None
        } else {
            Some(task.load("dev", cfg.dev.as_deref())?.examples)
        };
        let train = train
            .iter()
            .map(|e| Ok((clf.encode(&e.text)?, e.label)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            train,
            holdout,
            dev,
            steps,
        })
    }

    /// The batch of step `step` (1-based): epoch-wise shuffles seeded by (seed, epoch), so a resumed run sees the
    /// same batches.
    fn batch(&self, bs: usize, seed: u64, step: usize) -> Vec<(Vec<u32>, usize)> {
        let n = self.train.len();
        let per_epoch = n.div_ceil(bs);
        let (epoch, k) = ((step - 1) / per_epoch, (step - 1) % per_epoch);
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_0000_0000 ^ epoch as u64));
        idx[k * bs..((k + 1) * bs).min(n)]
            .iter()
            .map(|&i| self.train[i].clone())
            .collect()
    }
}

pub struct Run<'a> {
    cfg: TuneConfig,
    task: TaskSpec,
    lm: &'a LoadedLm,
    clf: Classifier<'a>,
    data: Data,
    pez: Pez,
    best: Option<Best>,
    metrics_lines: usize,
    /// Training loss since the last evaluation.
    loss_sum: f64,
    loss_count: usize,
    /// Time spent before this process (a resumed run), and since it started.
    elapsed0: f64,
    t0: Instant,
    progress: pez_progress::Progress,
    /// Under `PEZ_PROFILE=1`, the phases' seconds since the last evaluation.
    profile: Option<StepProfile>,
}

impl<'a> Run<'a> {
    /// A new run in `cfg.out`, or, with its checkpoint, the run that wrote it, continued exactly.
    pub fn open(cfg: TuneConfig, ckpt: Option<Checkpoint>, lm: &'a LoadedLm) -> Result<Self> {
        let task = TaskSpec::resolve(&cfg.task)?;
        let model = lm.model.as_ref();
        if cfg.fluency > 0.0 && model.as_decoder().is_none() {
            bail!(
                "fluency needs a causal decoder; {} ({}) is not one",
                cfg.model,
                model.info().arch
            );
        }
        let clf = Classifier::new(lm, &task.prompt, cfg.prompt_len)?;
        for w in &clf.warnings {
            eprintln!("warning: {w}");
        }
        let data = Data::load(&cfg, &task, &clf)?;
        std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
        if ckpt.is_none() && cfg.out.join("checkpoint.json").exists() {
            bail!(
                "{} already holds a run: use --resume {} or another --out",
                cfg.out.display(),
                cfg.out.display()
            );
        }
        if ckpt.is_none() && cfg.out.join("prompt.json").exists() {
            bail!("{} already holds a run's prompt.json (without its checkpoint, so it cannot be resumed): give another --out",
                  cfg.out.display());
        }
        let allowed = tokenizer::token_set(&lm.tokenizer, model.info().vocab_size, cfg.tokens);
        let n = allowed.iter().filter(|&&a| a).count();
        eprintln!("tokens {}: {n} of {} may be used", cfg.tokens, allowed.len());
        if n == 0 {
            bail!("--tokens {}: no token of {} is in the set", cfg.tokens, cfg.model);
        }
        let projector = Projector::new(model.token_embeddings(), &allowed)?;
        let tiled = |ids: &[u32]| -> Vec<u32> { ids.iter().cycle().take(cfg.prompt_len).copied().collect() };
        let init_ids = match cfg.init {
            // As the reference: the verbalizer tokens tiled to the prompt length.
            Init::Label => tiled(&clf.verbalizer_ids),
            Init::Template if clf.template_ids.is_empty() => bail!("--init template: the template has no tokens"),
            Init::Template => tiled(&clf.template_ids),
            Init::Random => random_prompt(&projector, model, cfg.prompt_len, cfg.seed)?,
        };
        let optimizer = Optimizer::new(cfg.optimizer, cfg.weight_decay);
        let mut pez = Pez::new(
            cfg.method,
            projector,
            &model.embed_ids(&init_ids)?,
            optimizer,
            data.steps,
            cfg.lr,
            cfg.seed,
        )?;
        let profile = (std::env::var("PEZ_PROFILE").as_deref() == Ok("1")).then(StepProfile::default);
        pez.profile = profile.is_some();
        let progress = pez_progress::Progress::new(&format!("tune {}", cfg.out.display()), "steps", data.steps as u64);
        let mut run = Self {
            cfg,
            task,
            lm,
            clf,
            data,
            pez,
            best: None,
            metrics_lines: 0,
            loss_sum: 0.0,
            loss_count: 0,
            elapsed0: 0.0,
            t0: Instant::now(),
            progress,
            profile,
        };
        let metrics = run.metrics_path();
        match ckpt {
            Some(c) => {
                run.pez.state = c.pez;
                (run.best, run.metrics_lines, run.loss_sum, run.loss_count, run.elapsed0) =
                    (c.best, c.metrics_lines, c.loss_sum, c.loss_count, c.elapsed_s);
                // Drop evaluations written after the checkpoint: they will be redone identically.
                let kept: Vec<String> = std::fs::read_to_string(&metrics)
                    .unwrap_or_default()
                    .lines()
                    .take(run.metrics_lines)
                    .map(String::from)
                    .collect();
                write_atomic(
                    &metrics,
                    (kept.join("\n") + if kept.is_empty() { "" } else { "\n" }).as_bytes(),
                )?;
            }
            None => write_atomic(&metrics, b"")?,
        }
        run.progress.set_position(run.pez.state.step as u64);
        Ok(run)
    }

    fn metrics_path(&self) -> PathBuf {
        self.cfg.out.join("metrics.jsonl")
    }

    pub fn done(&self) -> bool {
        self.pez.state.step >= self.data.steps
    }

    /// Whether the step just taken is one to evaluate after (every `eval_every` steps, and the last).
    pub fn due(&self) -> bool {
        let step = self.pez.state.step;
        step.is_multiple_of(self.cfg.eval_every) || step == self.data.steps
    }

    /// One PEZ step on the next batch.
    pub fn step(&mut self) -> Result<StepReport> {
        let batch = self
            .data
            .batch(self.cfg.batch_size, self.cfg.seed, self.pez.state.step + 1);
        let mut objective = BatchObjective {
            clf: &self.clf,
            batch,
            fluency: self.cfg.fluency,
            forward_s: self.profile.map(|_| 0.0),
        };
        let r = self.pez.step(&mut objective)?;
        if let (Some(sum), Some(p)) = (&mut self.profile, &r.phases) {
            sum.add(p, objective.forward_s.unwrap_or(0.0));
        }
        self.loss_sum += r.loss as f64;
        self.loss_count += 1;
        self.progress.set_message(format!("loss {:.3}", r.loss));
        self.progress.inc(1);
        Ok(r)
    }

    /// The prompt's input rows in the model's dtype: a hard prompt's embedding rows, or a soft prompt's vectors.
    fn prompt_tensor(&self, ids: &[u32], soft: Option<&[f32]>) -> Result<Tensor> {
        Ok(match soft {
            Some(s) => self.soft_f32(s)?.to_dtype(self.pez.projector.dtype())?,
            None => self.pez.projector.rows(ids)?,
        })
    }

    /// A soft prompt's vectors as kept (f32), whatever the model computes in.
    fn soft_f32(&self, s: &[f32]) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            s,
            (self.cfg.prompt_len, self.lm.model.info().hidden_size),
            self.pez.projector.device(),
        )?)
    }

    /// Accuracy of a prompt (its token ids and input rows) on examples, scored as `pez eval` scores it.
    fn evaluation(&self, ids: &[u32], rows: Tensor, examples: &[Example]) -> Result<Evaluation> {
        let prompt = LearnedPrompt {
            task: Some(self.task.name.clone()),
            format: self.task.prompt.clone(),
            text: tokenizer::decode(&self.lm.tokenizer, ids)?,
            ids: ids.to_vec(),
            embeds: Some(rows),
            calibration: self.cfg.calibration,
        };
        let p = Prompted::new(self.lm, prompt)?;
        evaluate(&p, examples, self.task.num_labels(), self.cfg.eval_batch, &mut |_| {})
    }

    /// Scores the current prompt on the holdout, keeps it if it is the best so far (ties keep the later prompt),
    /// and appends a line to `metrics.jsonl`.
    pub fn evaluate(&mut self) -> Result<EvalRecord> {
        let step = self.pez.state.step;
        let ids = self.pez.hard_ids()?;
        let soft = (self.cfg.method == Method::Soft).then(|| self.pez.state.soft.clone());
        let acc = self
            .evaluation(&ids, self.prompt_tensor(&ids, soft.as_deref())?, &self.data.holdout)?
            .accuracy
            .accuracy;
        let hard = self.pez.projector.rows(&ids)?;
        let flu = match self.lm.model.as_decoder() {
            Some(_) => Some(
                self.clf
                    .fluency(&self.clf.prefix(Some(&hard))?, &ids)?
                    .to_scalar::<f32>()? as f64,
            ),
            None => None,
        };
        let is_best = self.best.as_ref().is_none_or(|b| acc >= b.holdout_accuracy);
        if is_best {
            self.best = Some(Best {
                step,
                holdout_accuracy: acc,
                ids: ids.clone(),
                soft,
                fluency_log_ppl: flu,
            });
        }
        let rec = EvalRecord {
            step,
            train_loss: (self.loss_sum / self.loss_count.max(1) as f64) as f32,
            holdout_accuracy: acc,
            prompt: tokenizer::decode(&self.lm.tokenizer, &ids)?,
            token_ids: ids,
            fluency_log_ppl: flu,
            best: is_best,
            elapsed_s: self.elapsed(),
            dtype: self.cfg.dtype,
            profile: self.profile.as_mut().map(StepProfile::take_means),
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.metrics_path())?;
        writeln!(f, "{}", serde_json::to_string(&rec)?)?;
        self.metrics_lines += 1;
        (self.loss_sum, self.loss_count) = (0.0, 0);
        let best = self.best.as_ref().map_or(0.0, |b| b.holdout_accuracy);
        self.progress.set_message(format!(
            "loss {:.3}  holdout {:.1}%  best {:.1}%",
            rec.train_loss,
            acc * 100.0,
            best * 100.0
        ));
        self.progress.line();
        Ok(rec)
    }

    fn elapsed(&self) -> f64 {
        self.elapsed0 + self.t0.elapsed().as_secs_f64()
    }

    /// Writes `checkpoint.json` and the best prompt so far as `prompt.json` (each atomically).
    pub fn checkpoint(&self) -> Result<()> {
        if let Some(b) = &self.best {
            self.artifact(b, None)?.write(&self.cfg.out.join("prompt.json"))?;
        }
        self.write_checkpoint(false)
    }

    fn write_checkpoint(&self, finished: bool) -> Result<()> {
        Checkpoint {
            config: self.cfg.clone(),
            pez: self.pez.state.clone(),
            best: self.best.clone(),
            metrics_lines: self.metrics_lines,
            loss_sum: self.loss_sum,
            loss_count: self.loss_count,
            elapsed_s: self.elapsed(),
            finished,
        }
        .write(&self.cfg.out)
    }

    /// Scores the best prompt on the dev split (every prediction kept in `dev_predictions.jsonl`, for paired
    /// tests between runs), saves a soft prompt's vectors, and writes the final `prompt.json`.
    pub fn finish(self) -> Result<PromptArtifact> {
        let b = self.best.as_ref().context("no evaluation happened")?;
        let best = self.prompt_tensor(&b.ids, b.soft.as_deref())?;
        let dev = self
            .data
            .dev
            .as_ref()
            .map(|dev| self.evaluation(&b.ids, best, dev))
            .transpose()?;
        if let Some(e) = &dev {
            e.write_predictions(
                &self.cfg.out.join("dev_predictions.jsonl"),
                &self.task.prompt.label_names,
            )?;
        }
        let dev = dev.map(|e| e.accuracy);
        if let Some(s) = &b.soft {
            candle_core::safetensors::save(
                &[("soft_prompt", self.soft_f32(s)?)].into_iter().collect(),
                self.cfg.out.join("soft_prompt.safetensors"),
            )?;
        }
        let a = self.artifact(b, dev.as_ref())?;
        a.write(&self.cfg.out.join("prompt.json"))?;
        self.write_checkpoint(true)?;
        self.progress.finish();
        Ok(a)
    }

    fn artifact(&self, b: &Best, dev: Option<&Accuracy>) -> Result<PromptArtifact> {
        Ok(PromptArtifact {
            format: pez_config::artifact::FORMAT,
            prompt: tokenizer::decode(&self.lm.tokenizer, &b.ids)?,
            token_ids: b.ids.clone(),
            method: self.cfg.method,
            source_model: self.lm.source.clone(),
            task: self.task.name.clone(),
            prompt_format: self.task.prompt.clone(),
            calibration: self.cfg.calibration,
            holdout_accuracy: Some(b.holdout_accuracy),
            dev_accuracy: dev.map(|d| d.accuracy),
            dev_per_class: dev.map(|d| d.per_class.clone()),
            fluency_log_ppl: b.fluency_log_ppl,
            step: b.step,
            seed: self.cfg.seed,
            config: self.cfg.clone(),
        })
    }
}

/// `len` random allowed tokens, each one that projects onto itself (a token whose embedding row duplicates an
/// earlier one's would be replaced by it at the first projection). Bounded: a vocabulary where no drawn token
/// projects onto itself is an error, not an endless loop.
fn random_prompt(projector: &Projector, model: &dyn LanguageModel, len: usize, seed: u64) -> Result<Vec<u32>> {
    const TRIES_PER_TOKEN: usize = 1000;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vocab = model.info().vocab_size;
    (0..len)
        .map(|_| {
            for _ in 0..TRIES_PER_TOKEN {
                let i = rng.gen_range(0..vocab) as u32;
                if projector.nearest(&model.embed_ids(&[i])?)?[0] == i {
                    return Ok(i);
                }
            }
            bail!(
                "no random token that projects onto itself in {TRIES_PER_TOKEN} draws: use the default initialisation"
            )
        })
        .collect()
}
