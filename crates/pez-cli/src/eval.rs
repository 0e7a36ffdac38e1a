use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use pez_models::{load_lm, tokenizer};
use pez_tasks::metrics::Accuracy;
use pez_tasks::{PromptArtifact, TaskSpec};
use pez_tune::Classifier;
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
}

pub fn run(a: Args) -> Result<()> {
    let artifact = a.prompt_file.as_ref().map(|p| PromptArtifact::read(p)).transpose()?;
    let task_name = a.task.clone().or_else(|| artifact.as_ref().map(|x| x.task.clone()));
    let Some(task_name) = task_name else { bail!("give a task (sst2, amazon, agnews, or a .toml file)") };
    let mut task = TaskSpec::resolve(&task_name)?;
    if let Some(x) = &artifact {
        // The artifact's template and verbalizers are what the prompt was learned with.
        task.template = x.template.clone();
        task.verbalizers = x.verbalizers.clone();
        task.label_names = x.label_names.clone();
    }
    if artifact.is_none() && a.prompt.is_none() && !a.empty {
        bail!("give --prompt-file, --prompt or --empty");
    }
    let lm = load_lm(&a.model, DType::F32, &Device::Cpu)?;
    let prompt_text = match (&artifact, &a.prompt) {
        (Some(x), _) => x.prompt.clone(),
        (None, Some(p)) => p.clone(),
        _ => String::new(),
    };
    let ids = if prompt_text.is_empty() { vec![] } else { tokenizer::encode(&lm.tokenizer, &prompt_text)? };
    let clf = Classifier::new(lm.model.as_ref(), &lm.tokenizer, lm.bos, &task, ids.len())?;
    for w in &clf.warnings {
        eprintln!("warning: {w}");
    }
    let soft_file = a.prompt_file.as_ref().map(|p| if p.is_dir() { p.clone() } else { p.parent().unwrap_or(p).to_path_buf() }).map(|d| d.join("soft_prompt.safetensors"));
    let prompt: Option<Tensor> = match (&artifact, soft_file) {
        (Some(x), Some(f)) if x.method == "soft" => {
            let mut t = candle_core::safetensors::load(&f, &Device::Cpu)?;
            Some(t.remove("soft_prompt").ok_or_else(|| anyhow::anyhow!("{}: no soft_prompt tensor", f.display()))?)
        }
        _ if ids.is_empty() => None,
        _ => Some(lm.model.embed_ids(&ids)?),
    };
    let data = task.load("dev", a.data.as_deref())?;
    let (pred, _) = clf.predict(prompt.as_ref(), &data.examples, a.batch_size)?;
    let gold: Vec<usize> = data.examples.iter().map(|e| e.label).collect();
    let acc = Accuracy::from_predictions(&pred, &gold, task.num_labels());
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
