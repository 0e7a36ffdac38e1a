//! `ensemble.json`: several learned prompts scored as one classifier (the mean of their label log-probabilities).
//! Written by `pez tune --seeds N --ensemble K`; read wherever a `prompt.json` is.

use crate::artifact::{write_atomic, PromptArtifact};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const ENSEMBLE_FORMAT: u32 = 1;
/// Its name in a sweep's folder.
pub const ENSEMBLE_FILE: &str = "ensemble.json";

/// How the members' scores become the ensemble's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Each member's label log-probabilities (calibrated as the ensemble says), averaged, then normalised over
    /// the labels.
    #[default]
    MeanLogprob,
}

/// One member: where its `prompt.json` is and what it scored when it was chosen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    /// Its `prompt.json`, relative to the ensemble file's folder (or absolute).
    pub prompt_file: PathBuf,
    pub seed: u64,
    pub prompt: String,
    /// On its own run's holdout (each seed draws its own).
    pub holdout_accuracy: Option<f64>,
    pub dev_accuracy: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnsembleArtifact {
    /// Always 1 for this layout.
    pub format: u32,
    /// Always "ensemble": what tells this file from a `prompt.json`.
    pub kind: String,
    pub task: String,
    pub source_model: String,
    pub combine: Combine,
    /// How every member's label scores are calibrated before they are combined (over each member's own).
    pub calibration: pez_tasks::Calibration,
    /// Best first, by holdout accuracy.
    pub members: Vec<Member>,
    /// The ensemble's own dev accuracy, where it was scored.
    pub dev_accuracy: Option<f64>,
    /// Per dev class `(correct, total)`, by gold label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_per_class: Option<Vec<(usize, usize)>>,
}

impl EnsembleArtifact {
    /// The `k` best of finished runs `(seed, run dir)` by holdout accuracy (ties: lower seed first), with paths
    /// relative to `root`, where the file will be written. The runs must share task, model and prompt format.
    pub fn choose(runs: &[(u64, PathBuf)], k: usize, root: &Path, calibration: pez_tasks::Calibration) -> Result<Self> {
        if k == 0 || runs.is_empty() {
            bail!("an ensemble needs at least one member");
        }
        let mut read = runs
            .iter()
            .map(|(seed, dir)| Ok((*seed, dir.join("prompt.json"), PromptArtifact::read(dir)?)))
            .collect::<Result<Vec<_>>>()?;
        let first = &read[0].2;
        for (_, path, a) in &read {
            if (&a.task, &a.source_model, &a.prompt_format) != (&first.task, &first.source_model, &first.prompt_format)
            {
                bail!(
                    "{}: its task, model or prompt format differs from the other members'",
                    path.display()
                );
            }
        }
        let (task, source_model) = (first.task.clone(), first.source_model.clone());
        read.sort_by(|x, y| {
            let h = |a: &PromptArtifact| a.holdout_accuracy.unwrap_or(0.0);
            h(&y.2).total_cmp(&h(&x.2)).then(x.0.cmp(&y.0))
        });
        read.truncate(k);
        let members = read
            .into_iter()
            .map(|(seed, path, a)| Member {
                prompt_file: path.strip_prefix(root).map(Path::to_path_buf).unwrap_or(path),
                seed,
                prompt: a.prompt,
                holdout_accuracy: a.holdout_accuracy,
                dev_accuracy: a.dev_accuracy,
            })
            .collect();
        Ok(Self {
            format: ENSEMBLE_FORMAT,
            kind: "ensemble".into(),
            task,
            source_model,
            combine: Combine::MeanLogprob,
            calibration,
            members,
            dev_accuracy: None,
            dev_per_class: None,
        })
    }

    /// Reads `ensemble.json` (or the folder holding it).
    pub fn read(path: &Path) -> Result<Self> {
        let p = if path.is_dir() {
            path.join(ENSEMBLE_FILE)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let e: Self = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        if e.format != ENSEMBLE_FORMAT || e.kind != "ensemble" {
            bail!(
                "{}: not an ensemble file of format {ENSEMBLE_FORMAT} (format {}, kind {:?})",
                p.display(),
                e.format,
                e.kind
            );
        }
        if e.members.is_empty() {
            bail!("{}: an ensemble with no members", p.display());
        }
        Ok(e)
    }

    /// Each member's `prompt.json`, resolved against the folder of the ensemble file at `path`.
    pub fn member_files(&self, path: &Path) -> Vec<PathBuf> {
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(Path::new("."))
        };
        self.members.iter().map(|m| dir.join(&m.prompt_file)).collect()
    }

    /// Each member's `prompt.json`, read (best first); `path` is the ensemble file or its folder.
    pub fn read_members(&self, path: &Path) -> Result<Vec<PromptArtifact>> {
        self.member_files(path)
            .iter()
            .map(|f| PromptArtifact::read(f))
            .collect()
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, serde_json::to_string_pretty(self)?.as_bytes())
    }
}

/// What a classifier file is: one prompt or an ensemble of them. A folder is read as its `ensemble.json` where it
/// has one, else its `prompt.json`; a file by its `"kind"`.
pub fn is_ensemble(path: &Path) -> Result<bool> {
    if path.is_dir() {
        return Ok(path.join(ENSEMBLE_FILE).is_file());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    #[derive(Deserialize)]
    struct Kind {
        kind: Option<String>,
    }
    let k: Kind = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(k.kind.as_deref() == Some("ensemble"))
}
