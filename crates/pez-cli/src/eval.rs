use anyhow::{bail, Result};
use pez_classify::{evaluate, Ensemble, LearnedPrompt};
use pez_models::load_lm;
use pez_tasks::{Calibration, TaskSpec};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// sst2, amazon, agnews, or a task .toml file (default: the prompt file's task).
    task: Option<String>,
    /// A run's prompt.json (or its directory), or an ensemble.json (or the sweep folder holding it).
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
    let p = match (&a.prompt_file, &task) {
        (Some(f), _) => Ensemble::load(f, &lm, a.calibration)?,
        (None, Some(t)) => {
            let mut learned = LearnedPrompt::from_text(t.prompt.clone(), a.prompt.as_deref().unwrap_or(""), &lm)?;
            if let Some(c) = a.calibration {
                learned.calibration = c;
            }
            Ensemble::new(&lm, vec![learned])?
        }
        (None, None) => unreachable!("checked above"),
    };
    let task = match task {
        Some(t) => t,
        None => {
            let name = p.first().prompt.task.clone().unwrap_or_default();
            TaskSpec::resolve(&name).map_err(|e| {
                e.context(format!(
                    "the prompt was learned for task `{name}`: name that task (or its .toml) for its data"
                ))
            })?
        }
    };
    if task.num_labels() != p.format().num_labels() {
        bail!(
            "task `{}` has {} labels, the prompt's format {}",
            task.name,
            task.num_labels(),
            p.format().num_labels()
        );
    }
    for w in &p.first().clf.warnings {
        eprintln!("warning: {w}");
    }
    let data = task.load("dev", a.data.as_deref())?;
    let mut progress = pez_progress::Progress::new("eval", "examples", data.examples.len() as u64);
    let e = evaluate(&p, &data.examples, task.num_labels(), a.batch_size, &mut |n| {
        progress.inc(n as u64)
    })?;
    progress.finish();
    let acc = &e.accuracy;
    let labels = &p.format().label_names;
    if let Some(path) = &a.predictions {
        e.write_predictions(path, labels)?;
    }
    report(a.json, &task, &lm, &data.source, &p, dtype, acc)
}

/// What `pez eval` prints: JSON, or lines for a person.
fn report(
    json: bool,
    task: &TaskSpec,
    lm: &pez_models::LoadedLm,
    data_source: &std::path::Path,
    p: &Ensemble,
    dtype: pez_nn::Dtype,
    acc: &pez_tasks::metrics::Accuracy,
) -> Result<()> {
    let labels = &p.format().label_names;
    // An ensemble's best member stands for it in the prompt fields; `members` lists them all.
    let best = p.first();
    let log_ppl = best.log_perplexity()?;
    if json {
        let members: Vec<_> = p
            .members
            .iter()
            .map(|m| {
                let (prompt, ids, offsets) = (&m.prompt.text, &m.prompt.ids, &m.offsets);
                serde_json::json!({"prompt": prompt, "prompt_ids": ids, "label_offsets": offsets})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "task": task.name, "model": lm.source, "data": data_source, "prompt": best.prompt.text, "accuracy": acc,
                "calibration": p.calibration(), "label_offsets": best.offsets, "dtype": dtype,
                "prompt_ids": best.prompt.ids, "prompt_log_ppl": log_ppl, "members": members,
            }))?
        );
    } else {
        println!(
            "task {}  model {}  data {}",
            task.name,
            lm.source,
            data_source.display()
        );
        println!(
            "prompt {:?}  calibration {}  dtype {}",
            best.prompt.text,
            p.calibration(),
            dtype
        );
        for m in &p.members[1..] {
            println!(
                "  and   {:?}  (ensemble of {}: mean label log-probabilities)",
                m.prompt.text,
                p.members.len()
            );
        }
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
