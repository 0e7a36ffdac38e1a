use anyhow::{bail, Result};
use candle_core::{DType, Device};
use pez_models::load_lm;
use pez_tasks::artifact::write_atomic;
use pez_tasks::metrics::Accuracy;
use pez_tasks::TaskSpec;
use pez_tune::{Classifier, LearnedPrompt};
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
    /// Also write every example's predicted label and label probabilities (JSON lines, data order).
    #[arg(long)]
    predictions: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if a.prompt_file.is_none() && a.prompt.is_none() && !a.empty {
        bail!("give --prompt-file, --prompt or --empty");
    }
    let task = a.task.as_deref().map(TaskSpec::resolve).transpose()?;
    let lm = load_lm(&a.model, DType::F32, &Device::Cpu)?;
    let learned = match (&a.prompt_file, &a.prompt) {
        (Some(f), _) => LearnedPrompt::from_artifact(f, task, &lm)?,
        (None, p) => {
            let Some(task) = task else { bail!("give a task (sst2, amazon, agnews, or a .toml file)") };
            LearnedPrompt::from_text(task, p.as_deref().unwrap_or(""), &lm)?
        }
    };
    let task = &learned.task;
    let clf = Classifier::new(lm.model.as_ref(), &lm.tokenizer, lm.bos, task, learned.len())?;
    for w in &clf.warnings {
        eprintln!("warning: {w}");
    }
    let data = task.load("dev", a.data.as_deref())?;
    let (pred, probs) = clf.predict(learned.embeds.as_ref(), &data.examples, a.batch_size)?;
    let gold: Vec<usize> = data.examples.iter().map(|e| e.label).collect();
    let acc = Accuracy::from_predictions(&pred, &gold, task.num_labels());
    if let Some(path) = &a.predictions {
        let mut out = String::new();
        for (i, (p, pr)) in pred.iter().zip(&probs).enumerate() {
            out += &serde_json::to_string(&serde_json::json!({"index": i, "label": task.label_names[*p], "label_index": p, "probs": pr}))?;
            out.push('\n');
        }
        write_atomic(path, out.as_bytes())?;
    }
    let prompt_text = &learned.text;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({
            "task": task.name, "model": lm.source, "data": data.source, "prompt": prompt_text, "accuracy": acc,
        }))?);
    } else {
        println!("task {}  model {}  data {}", task.name, lm.source, data.source.display());
        println!("prompt {:?}", prompt_text);
        println!("accuracy {:.2}%  95% CI [{:.2}, {:.2}]  ({}/{})", acc.accuracy * 100.0, acc.ci95.0 * 100.0, acc.ci95.1 * 100.0, acc.correct, acc.total);
        for (c, (k, n)) in acc.per_class.iter().enumerate() {
            println!("  {:<12} {k}/{n}", task.label_names[c]);
        }
    }
    Ok(())
}
