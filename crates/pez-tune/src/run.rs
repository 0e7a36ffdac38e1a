//! The tuning run: data, PEZ loop, holdout selection, metrics, checkpoints and `prompt.json`.

use crate::classifier::Classifier;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use pez_core::{Method, Objective, Optimizer, OptimizerKind, Pez, PezState, Projector};
use pez_models::{load_lm, tokenizer, LanguageModel};
use pez_tasks::artifact::write_atomic;
use pez_tasks::metrics::Accuracy;
use pez_tasks::{Example, PromptArtifact, TaskSpec};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TuneConfig {
    pub task: String,
    pub model: String,
    pub fluency: f64,
    pub prompt_len: usize,
    /// Optimisation steps; with `shots`, `epochs` passes over the few-shot set instead.
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    pub weight_decay: f64,
    pub eval_every: usize,
    pub holdout: usize,
    pub shots: Option<usize>,
    pub epochs: usize,
    pub method: Method,
    pub seed: u64,
    pub random_init: bool,
    /// Train file (default: the task's train split).
    pub train: Option<PathBuf>,
    /// Dev file scored with the best prompt at the end (default: the task's dev split); `skip_dev` skips it.
    pub dev: Option<PathBuf>,
    pub skip_dev: bool,
    pub eval_batch: usize,
    pub out: PathBuf,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: usize,
    pub train_loss: f32,
    pub holdout_accuracy: f64,
    pub prompt: String,
    pub token_ids: Vec<u32>,
    pub fluency_log_ppl: f64,
    pub best: bool,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Best {
    step: usize,
    holdout_accuracy: f64,
    ids: Vec<u32>,
    /// The continuous prompt, kept for `soft` runs (whose prompt is not a token sequence).
    soft: Option<Vec<f32>>,
    fluency_log_ppl: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    config: TuneConfig,
    pez: PezState,
    best: Option<Best>,
    metrics_lines: usize,
    loss_sum: f64,
    loss_count: usize,
    elapsed_s: f64,
}

/// Tokens a prompt may use: everything but the tokenizer's special tokens and the byte-level pieces that are not
/// text on their own (they decode to U+FFFD, so the prompt's text would not re-tokenize to them for transfer).
pub fn allowed_tokens(model: &dyn LanguageModel, tok: &tokenizers::Tokenizer) -> Vec<bool> {
    pez_models::tokenizer::readable_tokens(tok, model.info().vocab_size)
}

struct Data {
    train: Vec<(Vec<u32>, usize)>,
    holdout: Vec<Example>,
    dev: Option<Vec<Example>>,
    steps: usize,
}

fn load_data(cfg: &TuneConfig, task: &TaskSpec, clf: &Classifier) -> Result<Data> {
    let train_set = task.load("train", cfg.train.as_deref())?;
    let (train, holdout) = match cfg.shots {
        Some(k) => train_set.few_shot(k, task.num_labels(), cfg.seed)?,
        None => train_set.split_holdout(cfg.holdout, cfg.seed),
    };
    let steps = match cfg.shots {
        Some(_) => cfg.epochs * train.len().div_ceil(cfg.batch_size),
        None => cfg.steps,
    };
    let dev = if cfg.skip_dev { None } else { Some(task.load("dev", cfg.dev.as_deref())?.examples) };
    let train = train.iter().map(|e| Ok((clf.encode(&e.text)?, e.label))).collect::<Result<Vec<_>>>()?;
    Ok(Data { train, holdout, dev, steps })
}

/// The batch of step `step` (1-based): epoch-wise shuffles seeded by (seed, epoch), so a resumed run sees the
/// same batches.
fn batch_indices(n: usize, bs: usize, seed: u64, step: usize) -> Vec<usize> {
    let per_epoch = n.div_ceil(bs);
    let (epoch, k) = ((step - 1) / per_epoch, (step - 1) % per_epoch);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_0000_0000 ^ epoch as u64));
    idx[k * bs..((k + 1) * bs).min(n)].to_vec()
}

struct BatchObjective<'a> {
    clf: &'a Classifier<'a>,
    batch: Vec<(Vec<u32>, usize)>,
    fluency: f64,
}

impl Objective for BatchObjective<'_> {
    fn loss_and_grad(&mut self, prompt: &Tensor, ids: &[u32]) -> Result<(f32, Tensor)> {
        self.clf.loss_and_grad(prompt, ids, &self.batch, self.fluency)
    }
}

/// Runs (or resumes) a tuning run and returns its `prompt.json`.
pub fn tune(cfg: Option<TuneConfig>, resume: Option<&Path>) -> Result<PromptArtifact> {
    let (cfg, ckpt) = match (cfg, resume) {
        (_, Some(dir)) => {
            let p = dir.join("checkpoint.json");
            let c: Checkpoint = serde_json::from_str(&std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?)
                .with_context(|| format!("parsing {}", p.display()))?;
            let mut cfg = c.config.clone();
            cfg.out = dir.to_path_buf();
            (cfg, Some(c))
        }
        (Some(cfg), None) => (cfg, None),
        (None, None) => bail!("nothing to run: give a configuration or --resume DIR"),
    };
    if cfg.prompt_len == 0 || cfg.batch_size == 0 || cfg.eval_every == 0 {
        bail!("--prompt-len, --batch-size and --eval-every must be positive");
    }
    let task = TaskSpec::resolve(&cfg.task)?;
    let lm = load_lm(&cfg.model, DType::F32, &Device::Cpu)?;
    let model = lm.model.as_ref();
    if cfg.fluency > 0.0 && model.info().arch == "t5" {
        bail!("fluency needs a causal LM; {} is an encoder-decoder", cfg.model);
    }
    let clf = Classifier::new(model, &lm.tokenizer, lm.bos, &task, cfg.prompt_len)?;
    for w in &clf.warnings {
        eprintln!("warning: {w}");
    }
    let data = load_data(&cfg, &task, &clf)?;
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    if ckpt.is_none() && cfg.out.join("checkpoint.json").exists() {
        bail!("{} already holds a run: use --resume {} or another --out", cfg.out.display(), cfg.out.display());
    }

    let projector = Projector::new(model.token_embeddings(), &allowed_tokens(model, &lm.tokenizer))?;
    let init = if cfg.random_init {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let ids: Vec<u32> = (0..cfg.prompt_len).map(|_| loop {
            let i = rng.gen_range(0..model.info().vocab_size) as u32;
            if projector.nearest(&model.embed_ids(&[i]).unwrap()).map(|n| n[0] == i).unwrap_or(false) { break i; }
        }).collect();
        model.embed_ids(&ids)?
    } else {
        // As the reference: the verbalizer tokens tiled to the prompt length.
        let ids: Vec<u32> = clf.verbalizer_ids.iter().cycle().take(cfg.prompt_len).copied().collect();
        model.embed_ids(&ids)?
    };
    let optimizer = Optimizer::new(cfg.optimizer, cfg.weight_decay);
    let mut pez = Pez::new(cfg.method, projector, &init, optimizer, data.steps, cfg.lr, cfg.seed)?;

    let metrics_path = cfg.out.join("metrics.jsonl");
    let (mut best, mut metrics_lines, mut loss_sum, mut loss_count, mut elapsed0) = (None::<Best>, 0usize, 0f64, 0usize, 0f64);
    if let Some(c) = ckpt {
        pez.state = c.pez;
        best = c.best;
        metrics_lines = c.metrics_lines;
        loss_sum = c.loss_sum;
        loss_count = c.loss_count;
        elapsed0 = c.elapsed_s;
        // Drop evaluations written after the checkpoint: they will be redone identically.
        let kept: Vec<String> = std::fs::read_to_string(&metrics_path).unwrap_or_default().lines().take(metrics_lines).map(String::from).collect();
        write_atomic(&metrics_path, (kept.join("\n") + if kept.is_empty() { "" } else { "\n" }).as_bytes())?;
    } else {
        write_atomic(&metrics_path, b"")?;
    }

    let bar = indicatif::ProgressBar::new(data.steps as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]")?);
    bar.set_position(pez.state.step as u64);
    let t0 = Instant::now();
    let prompt_of = |pez: &Pez, ids: &[u32]| -> Result<Tensor> {
        Ok(match cfg.method {
            Method::Soft => pez.soft_tensor()?,
            _ => pez.projector.rows(ids)?,
        })
    };
    while pez.state.step < data.steps {
        let step = pez.state.step + 1;
        let batch = batch_indices(data.train.len(), cfg.batch_size, cfg.seed, step).into_iter().map(|i| data.train[i].clone()).collect();
        let mut obj = BatchObjective { clf: &clf, batch, fluency: cfg.fluency };
        let r = pez.step(&mut obj)?;
        loss_sum += r.loss as f64;
        loss_count += 1;
        if step % cfg.eval_every == 0 || step == data.steps {
            let ids = pez.hard_ids()?;
            let p = prompt_of(&pez, &ids)?;
            let (pred, _) = clf.predict(Some(&p), &data.holdout, cfg.eval_batch)?;
            let gold: Vec<usize> = data.holdout.iter().map(|e| e.label).collect();
            let acc = Accuracy::from_predictions(&pred, &gold, task.num_labels()).accuracy;
            let flu = clf.fluency(&clf.prefix(Some(&pez.projector.rows(&ids)?))?, &ids)?.to_scalar::<f32>()? as f64;
            let is_best = best.as_ref().is_none_or(|b| acc >= b.holdout_accuracy); // ties keep the later prompt
            if is_best {
                let soft = (cfg.method == Method::Soft).then(|| pez.state.soft.clone());
                best = Some(Best { step, holdout_accuracy: acc, ids: ids.clone(), soft, fluency_log_ppl: flu });
            }
            let rec = EvalRecord {
                step,
                train_loss: (loss_sum / loss_count.max(1) as f64) as f32,
                holdout_accuracy: acc,
                prompt: tokenizer::decode(&lm.tokenizer, &ids)?,
                token_ids: ids,
                fluency_log_ppl: flu,
                best: is_best,
                elapsed_s: elapsed0 + t0.elapsed().as_secs_f64(),
            };
            let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&metrics_path)?;
            writeln!(f, "{}", serde_json::to_string(&rec)?)?;
            metrics_lines += 1;
            loss_sum = 0.0;
            loss_count = 0;
            let b = best.as_ref().unwrap();
            let ck = Checkpoint { config: cfg.clone(), pez: pez.state.clone(), best: best.clone(), metrics_lines, loss_sum, loss_count, elapsed_s: rec.elapsed_s };
            write_atomic(&cfg.out.join("checkpoint.json"), serde_json::to_string(&ck)?.as_bytes())?;
            artifact(&cfg, &task, &lm.tokenizer, &lm.source, b, None)?.write(&cfg.out.join("prompt.json"))?;
            bar.set_message(format!("loss {:.3}  holdout {:.1}%  best {:.1}%", rec.train_loss, acc * 100.0, b.holdout_accuracy * 100.0));
        } else {
            bar.set_message(format!("loss {:.3}", r.loss));
        }
        bar.inc(1);
    }
    bar.finish();
    let b = best.context("no evaluation happened")?;
    let dev_acc = match &data.dev {
        Some(dev) => {
            let p = match &b.soft {
                Some(s) => Tensor::from_slice(s, (cfg.prompt_len, model.info().hidden_size), &Device::Cpu)?,
                None => pez.projector.rows(&b.ids)?,
            };
            let (pred, _) = clf.predict(Some(&p), dev, cfg.eval_batch)?;
            let gold: Vec<usize> = dev.iter().map(|e| e.label).collect();
            Some(Accuracy::from_predictions(&pred, &gold, task.num_labels()).accuracy)
        }
        None => None,
    };
    if let Some(s) = &b.soft {
        let t = Tensor::from_slice(s, (cfg.prompt_len, model.info().hidden_size), &Device::Cpu)?;
        candle_core::safetensors::save(&[("soft_prompt", t)].into_iter().collect(), cfg.out.join("soft_prompt.safetensors"))?;
    }
    let a = artifact(&cfg, &task, &lm.tokenizer, &lm.source, &b, dev_acc)?;
    a.write(&cfg.out.join("prompt.json"))?;
    Ok(a)
}

fn artifact(cfg: &TuneConfig, task: &TaskSpec, tok: &tokenizers::Tokenizer, source: &str, b: &Best, dev: Option<f64>) -> Result<PromptArtifact> {
    Ok(PromptArtifact {
        format: pez_tasks::artifact::FORMAT,
        prompt: tokenizer::decode(tok, &b.ids)?,
        token_ids: b.ids.clone(),
        method: cfg.method.to_string(),
        source_model: source.to_string(),
        task: task.name.clone(),
        template: task.template.clone(),
        verbalizers: task.verbalizers.clone(),
        label_names: task.label_names.clone(),
        holdout_accuracy: Some(b.holdout_accuracy),
        dev_accuracy: dev,
        fluency_log_ppl: Some(b.fluency_log_ppl),
        step: b.step,
        seed: cfg.seed,
        config: serde_json::to_value(cfg)?,
    })
}
