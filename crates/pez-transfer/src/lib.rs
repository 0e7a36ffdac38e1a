//! The transfer grid: prompts learned on a source model, re-tokenized and scored on target models.
//!
//! For each method (empty template, and each tuning method found among the prompts) the top-k prompts by
//! holdout accuracy are scored on every target; cells are mean ± std over those prompts, and each method is
//! compared with the empty template by a paired t-test over the same examples.

pub mod endpoint;
pub mod report;
pub mod stats;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use pez_models::load_lm;
use pez_tasks::{Example, PromptArtifact, TaskSpec};
use pez_classify::{Calibration, LearnedPrompt, Prompted};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One prompt's result on one target model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromptScore {
    pub method: String,
    pub prompt: String,
    pub source: Option<PathBuf>,
    pub holdout_accuracy: Option<f64>,
    pub model: String,
    pub accuracy: f64,
    /// 1 where the prediction was right, per example, in data order.
    pub correct: Vec<u8>,
}

/// The method label of an artifact: PEZ with a fluency term is reported apart from plain PEZ.
pub fn method_label(a: &PromptArtifact) -> String {
    let fluency = a.config.get("fluency").and_then(|v| v.as_f64()).unwrap_or(0.0);
    if a.method == "pez" && fluency > 0.0 {
        "pez+fluency".into()
    } else {
        a.method.clone()
    }
}

/// `prompt.json` files given directly or found one level inside the given directories.
pub fn find_artifacts(paths: &[PathBuf]) -> Result<Vec<(PathBuf, PromptArtifact)>> {
    let mut out = vec![];
    for p in paths {
        let candidates: Vec<PathBuf> = if p.is_file() {
            vec![p.clone()]
        } else if p.join("prompt.json").exists() {
            vec![p.join("prompt.json")]
        } else {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p).with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path().join("prompt.json")))
                .filter(|f| f.exists())
                .collect();
            v.sort();
            v
        };
        for c in candidates {
            out.push((c.clone(), PromptArtifact::read(&c)?));
        }
    }
    Ok(out)
}

/// The top-k prompts of each method by holdout accuracy (soft prompts are skipped: they do not transfer).
pub fn select_top(arts: Vec<(PathBuf, PromptArtifact)>, k: usize, task: &str) -> Result<BTreeMap<String, Vec<(PathBuf, PromptArtifact)>>> {
    let mut by: BTreeMap<String, Vec<(PathBuf, PromptArtifact)>> = BTreeMap::new();
    for (p, a) in arts {
        if a.task != task {
            bail!("{}: learned for task `{}`, not `{task}`", p.display(), a.task);
        }
        if a.method == "soft" {
            eprintln!("skipping {}: a soft prompt is not text and cannot be re-tokenized for another model", p.display());
            continue;
        }
        by.entry(method_label(&a)).or_default().push((p, a));
    }
    for v in by.values_mut() {
        v.sort_by(|x, y| y.1.holdout_accuracy.unwrap_or(0.0).total_cmp(&x.1.holdout_accuracy.unwrap_or(0.0)));
        v.truncate(k);
    }
    Ok(by)
}

/// Predicted labels for `prompt` (text, re-tokenized for the model; empty for the template alone) on a loaded model.
/// With `calibration`, the prompt's label bias is estimated on this model.
pub fn predict_prompt(lm: &pez_models::LoadedLm, task: &TaskSpec, prompt: &str, calibration: Calibration, data: &[Example], batch: usize) -> Result<Vec<usize>> {
    let learned = LearnedPrompt { calibration, ..LearnedPrompt::from_text(task.prompt.clone(), prompt, lm)? };
    let p = Prompted::new(lm, learned)?;
    let texts: Vec<&str> = data.iter().map(|e| e.text.as_str()).collect();
    Ok(p.predict(&texts, batch)?.labels)
}

pub struct Grid {
    pub task: TaskSpec,
    pub data: Vec<Example>,
    pub data_source: PathBuf,
    pub methods: BTreeMap<String, Vec<(PathBuf, PromptArtifact)>>,
}

impl Grid {
    pub fn new(task: &str, prompts: &[PathBuf], top: usize, data: Option<&Path>) -> Result<Self> {
        let task = TaskSpec::resolve(task)?;
        let methods = select_top(find_artifacts(prompts)?, top, &task.name)?;
        if let Some((p, a)) = methods.values().flatten().next() {
            for (q, b) in methods.values().flatten() {
                if (&b.prompt_format.template, &b.prompt_format.verbalizers) != (&a.prompt_format.template, &a.prompt_format.verbalizers) {
                    bail!("{} and {} use different templates or verbalizers", p.display(), q.display());
                }
            }
        }
        let d = task.load("dev", data)?;
        Ok(Self { task, data: d.examples, data_source: d.source, methods })
    }

    /// Scores the empty template and every selected prompt on one in-process model.
    /// With `calibration`, each prompt's label bias is estimated on this target.
    pub fn score_model(&self, model: &str, batch: usize, calibration: Calibration, progress: &mut dyn FnMut(&str)) -> Result<Vec<PromptScore>> {
        let lm = load_lm(model, DType::F32, &Device::Cpu)?;
        self.score_target(model, &mut |prompt| predict_prompt(&lm, &self.task, prompt, calibration, &self.data, batch), progress)
    }

    /// Scores them on a model behind an endpoint.
    pub fn score_endpoint(&self, ep: &endpoint::Endpoint, progress: &mut dyn FnMut(&str)) -> Result<Vec<PromptScore>> {
        self.score_target(&ep.label(), &mut |prompt| ep.predict(&self.task, prompt, &self.data), progress)
    }

    fn score_target(&self, target: &str, predict: &mut dyn FnMut(&str) -> Result<Vec<usize>>, progress: &mut dyn FnMut(&str)) -> Result<Vec<PromptScore>> {
        let mut out = vec![];
        let mut one = |method: &str, prompt: &str, source: Option<PathBuf>, holdout: Option<f64>| -> Result<()> {
            progress(&format!("{target}: {method} {prompt:?}"));
            let pred = predict(prompt)?;
            let correct: Vec<u8> = pred.iter().zip(&self.data).map(|(p, e)| (*p == e.label) as u8).collect();
            let accuracy = correct.iter().map(|&c| c as f64).sum::<f64>() / correct.len() as f64;
            out.push(PromptScore { method: method.into(), prompt: prompt.into(), source, holdout_accuracy: holdout, model: target.into(), accuracy, correct });
            Ok(())
        };
        one("empty", "", None, None)?;
        for (m, arts) in &self.methods {
            for (p, a) in arts {
                one(m, &a.prompt, Some(p.clone()), a.holdout_accuracy)?;
            }
        }
        Ok(out)
    }
}
