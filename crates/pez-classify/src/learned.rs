//! A prompt ready to classify with on some model: read from `prompt.json`, given as text, or empty.
//! `pez eval`, `pez transfer` and the server all build their classifiers from it.

use anyhow::{anyhow, Result};
use candle_core::{Device, Tensor};
use pez_config::PromptArtifact;
use pez_hub::tokenizer;
use pez_models::LoadedLm;
use pez_tasks::{Calibration, PromptFormat};
use std::path::Path;

pub struct LearnedPrompt {
    /// The task the prompt was learned for (`None` for a prompt given as text).
    pub task: Option<String>,
    /// Template, verbalizers and label names: those it was learned with, when it came from an artifact.
    pub format: PromptFormat,
    pub text: String,
    /// `text` tokenized with the target model's tokenizer (a prompt is moved between models as text).
    pub ids: Vec<u32>,
    /// `[len, d]` input embeddings, `None` for the empty template.
    pub embeds: Option<Tensor>,
    /// How its label scores are calibrated: the artifact's choice (`None` for a text), which callers may change
    /// before binding it to a model.
    pub calibration: Calibration,
}

impl LearnedPrompt {
    /// From a run's `prompt.json` (or its directory). A soft prompt's vectors come from `soft_prompt.safetensors`
    /// beside it.
    pub fn from_artifact(path: &Path, lm: &LoadedLm) -> Result<Self> {
        let a = PromptArtifact::read(path)?;
        if a.method == pez_core::Method::Soft {
            let dir = if path.is_dir() {
                path
            } else {
                path.parent().unwrap_or(path)
            };
            let f = dir.join("soft_prompt.safetensors");
            let mut t = candle_core::safetensors::load(&f, &Device::Cpu)?;
            let soft = t
                .remove("soft_prompt")
                .ok_or_else(|| anyhow!("{}: no soft_prompt tensor", f.display()))?;
            let e = lm.model.token_embeddings();
            let soft = soft.to_device(e.device())?.to_dtype(e.dtype())?;
            return Ok(Self {
                task: Some(a.task),
                format: a.prompt_format,
                text: a.prompt,
                ids: a.token_ids,
                embeds: Some(soft),
                calibration: a.calibration,
            });
        }
        let (task, calibration) = (Some(a.task.clone()), a.calibration);
        Ok(Self {
            task,
            calibration,
            ..Self::from_text(a.prompt_format, &a.prompt, lm)?
        })
    }

    /// A hand-written prompt (or `""` for the empty template) with a prompt format.
    pub fn from_text(format: PromptFormat, text: &str, lm: &LoadedLm) -> Result<Self> {
        let ids = if text.is_empty() {
            vec![]
        } else {
            tokenizer::encode(&lm.tokenizer, text)?
        };
        let embeds = if ids.is_empty() {
            None
        } else {
            Some(lm.model.embed_ids(&ids)?)
        };
        Ok(Self {
            task: None,
            format,
            text: text.to_string(),
            ids,
            embeds,
            calibration: Calibration::None,
        })
    }

    pub fn len(&self) -> usize {
        self.embeds.as_ref().map_or(0, |e| e.dim(0).unwrap_or(0))
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
