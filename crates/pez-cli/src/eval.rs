use anyhow::{bail, Result};
use pez_classify::{evaluate, LearnedPrompt, Prompted};
use pez_config::write_atomic;
use pez_models::load_lm;
use pez_tasks::{Calibration, TaskSpec};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// sst2, amazon, agnews, or a task .toml file (default: the prompt file's task).
    task: Option<String>,
    /// A run's prompt.json (or its directory).
    #[arg(long, conflicts_with_all = ["prompt", "empty"])]
    prompt_file: Option<PathBuf>,
    /// A prompt given as text (tokenized with the model's tokenizer).
    #[arg(long, conflicts_with = "empty")]
    prompt: Option<String>,
    /// No prompt: the template alone.
    #[arg(long)]
    empty: bool,
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// Data file (default: the task's dev split).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Label calibration: none, or content-free (estimated on this model); default: the prompt file's, else none.
    #[arg(long, value_parser = crate::args::parse::<Calibration>)]
    calibration: Option<Calibration>,
    /// Also write every example's predicted label and label probabilities (JSON lines, data order).
    #[arg(long)]
    predictions: Option<PathBuf>,
    #[command(flatten)]
    placement: crate::args::Placement,
}

pub fn run(a: Args) -> Result<()> {
    if a.prompt_file.is_none() && a.prompt.is_none() && !a.empty {
        bail!("give --prompt-file, --prompt or --empty");
    }
    let task = a.task.as_deref().map(TaskSpec::resolve).transpose()?;
    if a.prompt_file.is_none() && task.is_none() {
        bail!("give a task (sst2, amazon, agnews, or a .toml file)");
    }
    let (device, dtype) = a.placement.open()?;
    let lm = load_lm(&a.model, dtype.candle(), &device)?;
    // The prompt brings its format (template, verbalizers, labels); the task brings the data.
    let mut learned = match (&a.prompt_file, &task) {
        (Some(f), _) => LearnedPrompt::from_artifact(f, &lm)?,
        (None, Some(t)) => LearnedPrompt::from_text(t.prompt.clone(), a.prompt.as_deref().unwrap_or(""), &lm)?,
        (None, None) => unreachable!("checked above"),
    };
    let task = match task {
        Some(t) => t,
        None => {
            let name = learned.task.clone().unwrap_or_default();
            TaskSpec::resolve(&name).map_err(|e| {
                e.context(format!(
                    "the prompt was learned for task `{name}`: name that task (or its .toml) for its data"
                ))
            })?
        }
    };
    if task.num_labels() != learned.format.num_labels() {
        bail!(
            "task `{}` has {} labels, the prompt's format {}",
            task.name,
            task.num_labels(),
            learned.format.num_labels()
        );
    }
    if let Some(c) = a.calibration {
        learned.calibration = c;
    }
    let p = Prompted::new(&lm, learned)?;
    for w in &p.clf.warnings {
        eprintln!("warning: {w}");
    }
    let data = task.load("dev", a.data.as_deref())?;
    let mut progress = pez_progress::Progress::new("eval", "examples", data.examples.len() as u64);
    let e = evaluate(&p, &data.examples, task.num_labels(), a.batch_size, &mut |n| {
        progress.inc(n as u64)
    })?;
    progress.finish();
    let acc = &e.accuracy;
    let labels = &p.prompt.format.label_names;
    if let Some(path) = &a.predictions {
        let mut out = String::new();
        for (i, s) in e.scored.iter().enumerate() {
            let probs: Vec<f32> = s.logprobs.iter().map(|x| x.exp()).collect();
            out += &serde_json::to_string(
                &serde_json::json!({"index": i, "label": labels[s.label], "label_index": s.label, "probs": probs}),
            )?;
            out.push('\n');
        }
        write_atomic(path, out.as_bytes())?;
    }
    let prompt_text = &p.prompt.text;
    let log_ppl = p.log_perplexity()?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "task": task.name, "model": lm.source, "data": data.source, "prompt": prompt_text, "accuracy": acc,
                "calibration": p.prompt.calibration, "label_offsets": p.offsets, "dtype": dtype,
                "prompt_ids": p.prompt.ids, "prompt_log_ppl": log_ppl,
            }))?
        );
    } else {
        println!(
            "task {}  model {}  data {}",
            task.name,
            lm.source,
            data.source.display()
        );
        println!(
            "prompt {:?}  calibration {}  dtype {}",
            prompt_text, p.prompt.calibration, dtype
        );
        if let Some(l) = log_ppl {
            println!("prompt log-perplexity {l:.3} nats/token under this model");
        }
        println!(
            "accuracy {:.2}%  95% CI [{:.2}, {:.2}]  ({}/{})",
            acc.accuracy * 100.0,
            acc.ci95.0 * 100.0,
            acc.ci95.1 * 100.0,
            acc.correct,
            acc.total
        );
        for (c, (k, n)) in acc.per_class.iter().enumerate() {
            println!("  {:<12} {k}/{n}", labels[c]);
        }
    }
    Ok(())
}
