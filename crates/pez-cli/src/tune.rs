use anyhow::Result;
use pez_core::{Method, OptimizerKind};
use pez_tune::TuneConfig;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// sst2, amazon, agnews, or a task .toml file.
    task: Option<String>,
    /// Source model: smollm2-135m, gpt2-large, a GGUF file or a Hugging Face directory.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// Weight w of the fluency term: loss = (1 - w) * label CE + w * fluency.
    #[arg(long, default_value_t = 0.0)]
    fluency: f64,
    #[arg(long, default_value_t = 10)]
    prompt_len: usize,
    #[arg(long, default_value_t = 300)]
    steps: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Learning rate (default 0.3 for Adafactor, 0.1 for AdamW).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value = "adafactor")]
    optimizer: OptimizerKind,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    /// Training examples held out to pick the best prompt (ignored with --shots).
    #[arg(long, default_value_t = 5000)]
    holdout: usize,
    /// Few-shot: K examples per class to train on and another K per class as the holdout.
    #[arg(long)]
    shots: Option<usize>,
    /// Passes over the few-shot set.
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// pez, autoprompt-sgd, fluentprompt, soft.
    #[arg(long, default_value = "pez")]
    method: Method,
    #[arg(long, default_value_t = 0)]
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
    #[arg(long, default_value_t = 32)]
    eval_batch: usize,
    /// Run directory (default runs/<task>-<method>-s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let artifact = if let Some(dir) = &a.resume {
        pez_tune::tune(None, Some(dir))?
    } else {
        let task = a.task.clone().ok_or_else(|| anyhow::anyhow!("give a task (sst2, amazon, agnews, or a .toml file) or --resume DIR"))?;
        let out = a.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}-s{}", task.trim_end_matches(".toml"), a.method, a.seed)));
        let lr = a.lr.unwrap_or(match a.optimizer {
            OptimizerKind::Adafactor => 0.3,
            OptimizerKind::Adamw => 0.1,
        });
        let cfg = TuneConfig {
            task, model: a.model, fluency: a.fluency, prompt_len: a.prompt_len, steps: a.steps, batch_size: a.batch_size,
            lr, optimizer: a.optimizer, weight_decay: a.weight_decay, eval_every: a.eval_every, holdout: a.holdout,
            shots: a.shots, epochs: a.epochs, method: a.method, seed: a.seed, random_init: a.random_init,
            train: a.train, dev: a.dev, skip_dev: a.skip_dev, eval_batch: a.eval_batch, out,
        };
        if !(0.0..=1.0).contains(&cfg.fluency) {
            anyhow::bail!("--fluency must be in [0, 1], got {}", cfg.fluency);
        }
        pez_tune::tune(Some(cfg), None)?
    };
    println!("{}", serde_json::to_string_pretty(&artifact)?);
    Ok(())
}
