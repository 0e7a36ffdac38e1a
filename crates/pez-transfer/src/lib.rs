//! The transfer grid: prompts learned on a source model, re-tokenized and scored on target models.
//!
//! For each method (empty template, and each tuning method found among the prompts) the top-k prompts by
//! holdout accuracy are scored on every target; cells are mean ± std over those prompts, and each method is
//! compared with the empty template by a paired t-test over the same examples.

pub mod report;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use pez_classify::endpoint::Endpoint;
use pez_classify::{evaluate, LearnedPrompt, Predictor, Prompted};
use pez_config::PromptArtifact;
use pez_core::Method;
use pez_models::load_lm;
use pez_tasks::{Calibration, Example, TaskSpec};
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
    if a.method == Method::Pez && a.config.fluency > 0.0 {
        "pez+fluency".into()
    } else {
        a.method.to_string()
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
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
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
pub fn select_top(
    arts: Vec<(PathBuf, PromptArtifact)>,
    k: usize,
    task: &str,
) -> Result<BTreeMap<String, Vec<(PathBuf, PromptArtifact)>>> {
    let mut by: BTreeMap<String, Vec<(PathBuf, PromptArtifact)>> = BTreeMap::new();
    for (p, a) in arts {
        if a.task != task {
            bail!("{}: learned for task `{}`, not `{task}`", p.display(), a.task);
        }
        if a.method == Method::Soft {
            eprintln!(
                "skipping {}: a soft prompt is not text and cannot be re-tokenized for another model",
                p.display()
            );
            continue;
        }
        by.entry(method_label(&a)).or_default().push((p, a));
    }
    for v in by.values_mut() {
        v.sort_by(|x, y| {
            y.1.holdout_accuracy
                .unwrap_or(0.0)
                .total_cmp(&x.1.holdout_accuracy.unwrap_or(0.0))
        });
        v.truncate(k);
    }
    Ok(by)
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
                if (&b.prompt_format.template, &b.prompt_format.verbalizers)
                    != (&a.prompt_format.template, &a.prompt_format.verbalizers)
                {
                    bail!(
                        "{} and {} use different templates or verbalizers",
                        p.display(),
                        q.display()
                    );
                }
            }
        }
        let d = task.load("dev", data)?;
        Ok(Self {
            task,
            data: d.examples,
            data_source: d.source,
            methods,
        })
    }

    /// Scores the empty template and every selected prompt on one in-process model, on `device` in `dtype`.
    /// With `calibration`, each prompt's label bias is estimated on this target.
    pub fn score_model(
        &self,
        model: &str,
        (device, dtype): (&Device, pez_nn::Dtype),
        batch: usize,
        calibration: Calibration,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<PromptScore>> {
        let lm = load_lm(model, dtype.candle(), device)?;
        let bind = |prompt: &str| -> Result<Box<dyn Predictor + '_>> {
            let learned = LearnedPrompt {
                calibration,
                ..LearnedPrompt::from_text(self.task.prompt.clone(), prompt, &lm)?
            };
            Ok(Box::new(Prompted::new(&lm, learned)?))
        };
        self.score_target(model, batch, &bind, progress)
    }

    /// Scores them on a model behind an endpoint.
    pub fn score_endpoint(&self, ep: &Endpoint, progress: &mut dyn FnMut(&str)) -> Result<Vec<PromptScore>> {
        let bind =
            |prompt: &str| -> Result<Box<dyn Predictor + '_>> { Ok(Box::new(ep.bind(&self.task.prompt, prompt))) };
        // pez-serve batches across requests itself; 64 texts a request keep each answer small.
        self.score_target(&ep.label(), 64, &bind, progress)
    }

    /// Every prompt (and the empty template) bound to the target by `bind`, scored on the data.
    fn score_target<'p>(
        &self,
        target: &str,
        batch: usize,
        bind: &dyn Fn(&str) -> Result<Box<dyn Predictor + 'p>>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<PromptScore>> {
        let mut out = vec![];
        let mut one = |method: &str, prompt: &str, source: Option<PathBuf>, holdout: Option<f64>| -> Result<()> {
            progress(&format!("{target}: {method} {prompt:?}"));
            let e = evaluate(
                bind(prompt)?.as_ref(),
                &self.data,
                self.task.num_labels(),
                batch,
                &mut |_| {},
            )?;
            let correct = e.correct(&self.data);
            out.push(PromptScore {
                method: method.into(),
                prompt: prompt.into(),
                source,
                holdout_accuracy: holdout,
                model: target.into(),
                accuracy: e.accuracy.accuracy,
                correct,
            });
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
