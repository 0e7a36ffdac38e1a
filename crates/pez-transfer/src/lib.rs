//! The transfer grid: prompts learned on a source model, re-tokenized and scored on target models.
//!
//! For each method (empty template, and each tuning method found among the prompts) the top-k prompts by
//! holdout accuracy are scored on every target; cells are mean ± std over those prompts, and each method is
//! compared with the empty template by a paired t-test over the same examples. An `ensemble.json` among the
//! prompts is scored too, as one classifier (method `ensemble`), its members re-tokenized for each target.

pub mod report;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use pez_classify::endpoint::Endpoint;
use pez_classify::ensemble::MeanOf;
use pez_classify::{evaluate, Ensemble, LearnedPrompt, Predictor};
use pez_config::{is_ensemble, EnsembleArtifact, PromptArtifact, ENSEMBLE_FILE};
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

/// `prompt.json` files given directly or found one level inside the given directories (an `ensemble.json` given
/// is left to `find_ensembles`).
pub fn find_artifacts(paths: &[PathBuf]) -> Result<Vec<(PathBuf, PromptArtifact)>> {
    let mut out = vec![];
    for p in paths {
        let candidates: Vec<PathBuf> = if p.is_file() {
            if is_ensemble(p)? {
                continue;
            }
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

/// Ensembles given directly (`ensemble.json`) or as the folder holding one (a `pez tune --seeds N --ensemble K`
/// folder, whose runs `find_artifacts` finds too), with their members' prompts, best first.
pub fn find_ensembles(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<PromptArtifact>)>> {
    let mut out = vec![];
    for p in paths {
        let file = if p.is_dir() { p.join(ENSEMBLE_FILE) } else { p.clone() };
        if !file.is_file() || !is_ensemble(&file)? {
            continue;
        }
        let members = EnsembleArtifact::read(&file)?.read_members(&file)?;
        out.push((file, members));
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

/// A prompt's texts (one, or an ensemble's members) bound to a target as one predictor.
type Bind<'p> = dyn Fn(&[&str]) -> Result<Box<dyn Predictor + 'p>> + 'p;

pub struct Grid {
    pub task: TaskSpec,
    pub data: Vec<Example>,
    pub data_source: PathBuf,
    pub methods: BTreeMap<String, Vec<(PathBuf, PromptArtifact)>>,
    /// Ensembles given among the prompts: each file and its members.
    pub ensembles: Vec<(PathBuf, Vec<PromptArtifact>)>,
}

impl Grid {
    pub fn new(task: &str, prompts: &[PathBuf], top: usize, data: Option<&Path>) -> Result<Self> {
        let task = TaskSpec::resolve(task)?;
        let methods = select_top(find_artifacts(prompts)?, top, &task.name)?;
        let ensembles = find_ensembles(prompts)?;
        let members: Vec<(&PathBuf, &PromptArtifact)> = ensembles
            .iter()
            .flat_map(|(p, ms)| ms.iter().map(move |m| (p, m)))
            .collect();
        // (select_top checks the prompts' task.)
        if let Some((p, a)) = members.iter().find(|(_, a)| a.task != task.name) {
            bail!(
                "{}: its members were learned for task `{}`, not `{}`",
                p.display(),
                a.task,
                task.name
            );
        }
        let all: Vec<(&PathBuf, &PromptArtifact)> =
            methods.values().flatten().map(|(p, a)| (p, a)).chain(members).collect();
        if let Some((p, a)) = all.first() {
            for (q, b) in &all {
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
            ensembles,
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
        let bind = |prompts: &[&str]| -> Result<Box<dyn Predictor + '_>> {
            let learned = prompts
                .iter()
                .map(|p| {
                    Ok(LearnedPrompt {
                        calibration,
                        ..LearnedPrompt::from_text(self.task.prompt.clone(), p, &lm)?
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Box::new(Ensemble::new(&lm, learned)?))
        };
        self.score_target(model, batch, &bind, progress)
    }

    /// Scores them on a model behind an endpoint.
    pub fn score_endpoint(&self, ep: &Endpoint, progress: &mut dyn FnMut(&str)) -> Result<Vec<PromptScore>> {
        // An ensemble's members are asked one by one and combined here as `Ensemble` combines them.
        let bind = |prompts: &[&str]| -> Result<Box<dyn Predictor + '_>> {
            let each = prompts
                .iter()
                .map(|p| Box::new(ep.bind(&self.task.prompt, p)) as Box<dyn Predictor>)
                .collect();
            Ok(Box::new(MeanOf(each)))
        };
        // pez-serve batches across requests itself; 64 texts a request keep each answer small.
        self.score_target(&ep.label(), 64, &bind, progress)
    }

    /// Every prompt (and the empty template) bound to the target by `bind`, scored on the data.
    fn score_target<'p>(
        &self,
        target: &str,
        batch: usize,
        bind: &Bind<'p>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<PromptScore>> {
        let mut out = vec![];
        let mut one = |method: &str, prompts: &[&str], source: Option<PathBuf>, holdout: Option<f64>| -> Result<()> {
            let prompt = prompts.join(" + ");
            progress(&format!("{target}: {method} {prompt:?}"));
            let e = evaluate(
                bind(prompts)?.as_ref(),
                &self.data,
                self.task.num_labels(),
                batch,
                &mut |_| {},
            )?;
            let correct = e.correct(&self.data);
            out.push(PromptScore {
                method: method.into(),
                prompt,
                source,
                holdout_accuracy: holdout,
                model: target.into(),
                accuracy: e.accuracy.accuracy,
                correct,
            });
            Ok(())
        };
        one("empty", &[""], None, None)?;
        for (m, arts) in &self.methods {
            for (p, a) in arts {
                one(m, &[&a.prompt], Some(p.clone()), a.holdout_accuracy)?;
            }
        }
        for (p, members) in &self.ensembles {
            let prompts: Vec<&str> = members.iter().map(|m| m.prompt.as_str()).collect();
            one("ensemble", &prompts, Some(p.clone()), None)?;
        }
        Ok(out)
    }
}
