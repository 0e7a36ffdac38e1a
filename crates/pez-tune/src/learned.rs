//! A prompt ready to classify with on some model: read from `prompt.json`, given as text, or empty.
//! `pez eval`, `pez transfer` and the server all build their classifiers from it.

use anyhow::{anyhow, Result};
use candle_core::{Device, Tensor};
use pez_models::{tokenizer, LoadedLm};
use pez_tasks::{PromptArtifact, TaskSpec};
use std::path::Path;

pub struct LearnedPrompt {
    /// The artifact's template, verbalizers and label names when it came from one.
    pub task: TaskSpec,
    pub text: String,
    /// `text` tokenized with the target model's tokenizer (a prompt is moved between models as text).
    pub ids: Vec<u32>,
    /// `[len, d]` input embeddings, `None` for the empty template.
    pub embeds: Option<Tensor>,
}

impl LearnedPrompt {
    /// `task` overrides the artifact's task name (for other data) but never its template or verbalizers: they
    /// are what the prompt was learned with. A soft prompt's vectors come from `soft_prompt.safetensors` beside it.
    pub fn from_artifact(path: &Path, task: Option<TaskSpec>, lm: &LoadedLm) -> Result<Self> {
        let a = PromptArtifact::read(path)?;
        // A custom task's TOML may not be at hand (a server only needs the template and verbalizers): then the
        // task has no data files, and loading its data says so.
        let mut task = match task {
            Some(t) => t,
            None => TaskSpec::resolve(&a.task).unwrap_or_else(|_| TaskSpec {
                name: a.task.clone(), template: String::new(), verbalizers: vec![], label_names: vec![],
                format: pez_tasks::data::Format::sst2(), train: None, dev: None,
            }),
        };
        task.template = a.template.clone();
        task.verbalizers = a.verbalizers.clone();
        task.label_names = a.label_names.clone();
        if a.method == "soft" {
            let dir = if path.is_dir() { path } else { path.parent().unwrap_or(path) };
            let f = dir.join("soft_prompt.safetensors");
            let mut t = candle_core::safetensors::load(&f, &Device::Cpu)?;
            let soft = t.remove("soft_prompt").ok_or_else(|| anyhow!("{}: no soft_prompt tensor", f.display()))?;
            return Ok(Self { task, text: a.prompt, ids: a.token_ids, embeds: Some(soft) });
        }
        Self::from_text(task, &a.prompt, lm)
    }

    /// A hand-written prompt (or `""` for the empty template).
    pub fn from_text(task: TaskSpec, text: &str, lm: &LoadedLm) -> Result<Self> {
        let ids = if text.is_empty() { vec![] } else { tokenizer::encode(&lm.tokenizer, text)? };
        let embeds = if ids.is_empty() { None } else { Some(lm.model.embed_ids(&ids)?) };
        Ok(Self { task, text: text.to_string(), ids, embeds })
    }

    pub fn len(&self) -> usize {
        self.embeds.as_ref().map_or(0, |e| e.dim(0).unwrap_or(0))
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
