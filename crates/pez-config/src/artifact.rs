//! `prompt.json`: the contract between the tuner, the evaluator, the transfer grid and the server.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromptArtifact {
    /// Always 1 for this layout.
    pub format: u32,
    /// The learned prompt as text (decoded from `token_ids` with the source model's tokenizer).
    pub prompt: String,
    /// Token ids in the source model's vocabulary (empty for the empty template).
    pub token_ids: Vec<u32>,
    /// A soft prompt's text is only its nearest tokens.
    pub method: pez_core::Method,
    pub source_model: String,
    pub task: String,
    /// Template, verbalizers and label names, flat in the JSON.
    #[serde(flatten)]
    pub prompt_format: pez_tasks::PromptFormat,
    /// How label scores are calibrated when this prompt classifies (`none` for prompts written before it existed).
    #[serde(default)]
    pub calibration: pez_tasks::Calibration,
    pub holdout_accuracy: Option<f64>,
    pub dev_accuracy: Option<f64>,
    /// Per dev class `(correct, total)`, by gold label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_per_class: Option<Vec<(usize, usize)>>,
    /// Mean next-token cross-entropy of the prompt under the source model (nats per token).
    pub fluency_log_ppl: Option<f64>,
    pub step: usize,
    pub seed: u64,
    /// The full tuning configuration.
    pub config: crate::TuneConfig,
}

impl PromptArtifact {
    pub fn read(path: &Path) -> Result<Self> {
        let p = if path.is_dir() {
            path.join("prompt.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let a: Self = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        if a.format != FORMAT {
            bail!(
                "{}: prompt.json format {} is not supported (expected {FORMAT})",
                p.display(),
                a.format
            );
        }
        Ok(a)
    }

    /// Writes atomically (temporary file + rename), so a crash never leaves half a file.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, serde_json::to_string_pretty(self)?.as_bytes())
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
