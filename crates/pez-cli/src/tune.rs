use anyhow::Result;
use pez_core::{Method, OptimizerKind};
use pez_tasks::{Calibration, PromptArtifact, RowRule, TuneConfig};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The defaults every flag shows and takes.
static D: LazyLock<TuneConfig> = LazyLock::new(TuneConfig::default);

#[derive(clap::Args)]
pub struct Args {
    /// sst2, amazon, agnews, or a task .toml file.
    task: Option<String>,
    /// Source model: smollm2-135m, gpt2-large, a GGUF file or a Hugging Face directory.
    #[arg(long, default_value_t = D.model.clone())]
    model: String,
    /// Weight w of the fluency term: loss = (1 - w) * label CE + w * fluency.
    #[arg(long, default_value_t = D.fluency)]
    fluency: f64,
    #[arg(long, default_value_t = D.prompt_len)]
    prompt_len: usize,
    #[arg(long, default_value_t = D.steps)]
    steps: usize,
    #[arg(long, default_value_t = D.batch_size)]
    batch_size: usize,
    /// Learning rate (default 0.3 for Adafactor, 0.1 for AdamW).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = D.optimizer)]
    optimizer: OptimizerKind,
    /// AdamW weight decay.
    #[arg(long, default_value_t = D.weight_decay)]
    weight_decay: f64,
    /// Steps between holdout evaluations. PEZ's hard prompt wanders rather than climbs (in 10 of 15 SST-2 runs the
    /// best holdout accuracy came at or before step 100 of 150-300), so the best prompt is found by looking often.
    #[arg(long, default_value_t = D.eval_every)]
    eval_every: usize,
    /// Training examples held out to pick the best prompt (ignored with --shots).
    #[arg(long, default_value_t = D.holdout)]
    holdout: usize,
    /// Which train rows the holdout is drawn from: random (the paper), or long (rows of 10+ words, like the
    /// whole sentences of SST-2's dev and test; see pez_tasks::data::RowRule). Default: the task's `rows`
    /// (SST-2: long; the other tasks and --shots: random).
    #[arg(long)]
    holdout_rule: Option<RowRule>,
    /// Which of the other train rows the batches are drawn from: random (any row, the paper) or long.
    /// Default: the task's `rows`, as for --holdout-rule.
    #[arg(long)]
    train_rule: Option<RowRule>,
    /// Label calibration for the holdout, the dev pass and the prompt's later use: none, or content-free
    /// (Zhao et al. 2021; recorded in prompt.json).
    #[arg(long, default_value_t = D.calibration)]
    calibration: Calibration,
    /// Best-of-N: run N seeds (from --seed) one after another, each in <out>/s<seed>, and write
    /// <out>/summary.{json,md} (default out: runs/<task>-<method>).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Seeds ranked in the summary's top list (by holdout accuracy).
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// The paper's protocol: batch 32, 5,000 steps, a random 5,000-example holdout scored every 100 steps, no
    /// calibration (overrides those flags).
    #[arg(long)]
    paper: bool,
    /// Few-shot: K examples per class to train on and another K per class as the holdout.
    #[arg(long)]
    shots: Option<usize>,
    /// Passes over the few-shot set.
    #[arg(long, default_value_t = D.epochs)]
    epochs: usize,
    /// pez, autoprompt-sgd, fluentprompt, soft.
    #[arg(long, default_value_t = D.method)]
    method: Method,
    #[arg(long, default_value_t = D.seed)]
    seed: u64,
    /// Start from random tokens instead of the verbalizers tiled to the prompt length.
    #[arg(long)]
    random_init: bool,
    /// Training data file (default: the task's train split).
    #[arg(long)]
    train: Option<PathBuf>,
    /// Dev data file scored at the end (default: the task's dev split).
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Do not score the dev set at the end.
    #[arg(long)]
    skip_dev: bool,
    #[arg(long, default_value_t = D.eval_batch)]
    eval_batch: usize,
    /// Run directory (default runs/<task>-<method>-s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print the final prompt.json instead of the summary.
    #[arg(long)]
    json: bool,
    /// The tokens a prompt may be made of: all (readable, not special), printable (also no control characters,
    /// no whitespace-only or byte-fallback pieces) or words (printable, a space-led run of letters).
    #[arg(long, value_enum, default_value_t = D.tokens)]
    tokens: pez_hub::tokenizer::TokenSet,
    /// f32, bf16 (bf16 products with f32 accumulation; norms, softmax, losses, the projection and the optimizer
    /// stay f32), or auto: bf16 where the CPU has bf16 units (AVX512-BF16), else f32. Recorded in the run.
    #[arg(long, default_value_t = pez_nn::Dtype::Auto)]
    dtype: pez_nn::Dtype,
    /// cpu, cuda or cuda:N (a binary built with the `cuda` feature; `auto` dtype is f32 there).
    #[arg(long, default_value_t = pez_nn::DeviceArg::Cpu)]
    device: pez_nn::DeviceArg,
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.open()?;
    let Some(task) = a.task.clone() else {
        let Some(dir) = &a.resume else {
            anyhow::bail!("give a task (sst2, amazon, agnews, or a .toml file) or --resume DIR")
        };
        return report(&pez_tune::tune(None, Some(dir), &device)?, dir, a.json);
    };
    // By default the task's rows that look like its evaluation data (SST-2: long rows; evals/sst2/holdout-study);
    // few-shot sets are drawn from all rows.
    let default_rule = TuneConfig::default_rule(&task, a.shots)?;
    let mut cfg = TuneConfig {
        out: a
            .out
            .clone()
            .unwrap_or_else(|| TuneConfig::default_out(&task, a.method, a.seed)),
        task,
        model: a.model,
        fluency: a.fluency,
        prompt_len: a.prompt_len,
        steps: a.steps,
        batch_size: a.batch_size,
        lr: a.lr.unwrap_or(TuneConfig::default_lr(a.optimizer)),
        optimizer: a.optimizer,
        weight_decay: a.weight_decay,
        eval_every: a.eval_every,
        holdout: a.holdout,
        holdout_rule: a.holdout_rule.unwrap_or(default_rule),
        train_rule: a.train_rule.unwrap_or(default_rule),
        calibration: a.calibration,
        shots: a.shots,
        epochs: a.epochs,
        method: a.method,
        seed: a.seed,
        random_init: a.random_init,
        train: a.train,
        dev: a.dev,
        skip_dev: a.skip_dev,
        eval_batch: a.eval_batch,
        tokens: a.tokens,
        dtype: a.dtype.resolve_on(&device),
    };
    if a.paper {
        (cfg.batch_size, cfg.steps, cfg.holdout, cfg.eval_every) = (32, 5000, 5000, 100);
        (cfg.holdout_rule, cfg.train_rule, cfg.calibration) = (RowRule::Random, RowRule::Random, Calibration::None);
    }
    if a.resume.is_some() {
        anyhow::bail!("--resume DIR continues a run with its own configuration: give no task with it");
    }
    if a.seeds > 1 {
        cfg.validate()?;
        let root = a
            .out
            .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", cfg.task.trim_end_matches(".toml"), cfg.method)));
        let s = pez_tune::sweep(&cfg, a.seeds, &root, a.top, &device)?;
        print!("{}", pez_tune::sweep::markdown(&s));
        eprintln!("wrote {}/summary.json and summary.md", root.display());
        return Ok(());
    }
    let out = cfg.out.clone();
    report(&pez_tune::tune(Some(cfg), None, &device)?, &out, a.json)
}

/// What a person reads at the end of a run (or, with `json`, the run's prompt.json).
fn report(a: &PromptArtifact, dir: &Path, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(a)?);
        return Ok(());
    }
    let pct = |x: Option<f64>| x.map_or("–".into(), |v| format!("{:.2}%", v * 100.0));
    println!("prompt   {:?}", a.prompt);
    println!("holdout  {}  (best at step {})", pct(a.holdout_accuracy), a.step);
    let per_class: Vec<String> = a
        .dev_per_class
        .iter()
        .flatten()
        .zip(&a.prompt_format.label_names)
        .map(|((k, n), l)| format!("{l} {:.1}%", 100.0 * *k as f64 / (*n).max(1) as f64))
        .collect();
    match a.dev_accuracy {
        Some(_) => println!("dev      {}  ({})", pct(a.dev_accuracy), per_class.join(", ")),
        None => println!("dev      not scored (--skip-dev)"),
    }
    println!("run      {}", dir.display());
    println!(
        "evaluate pez eval {} --prompt-file {} --model {}",
        a.task,
        dir.join("prompt.json").display(),
        a.config.model
    );
    println!(
        "serve    pez-serve --model {} --classifiers {}",
        a.config.model,
        dir.display()
    );
    Ok(())
}
