//! What to serve: base models and the classifiers on them, from the command line or a TOML file.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Requests in flight at once; more get 429 with Retry-After.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Texts the classifier worker of one base model scores together at most.
    #[serde(default = "default_batch")]
    pub max_batch: usize,
    pub models: Vec<BaseModel>,
    #[serde(default)]
    pub classifiers: Vec<ClassifierEntry>,
}

/// A base model: its API name and what `pez_models::load_lm` resolves (a short name, a GGUF file, a directory).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseModel {
    pub name: String,
    /// Defaults to `name`.
    pub path: Option<String>,
    /// Serve plain chat/completions through mistral.rs (GGUF files of architectures it runs). Default: yes
    /// for GGUF files.
    pub generate: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierEntry {
    /// The API model name; defaults to the run directory's name.
    pub name: Option<String>,
    /// A `prompt.json` or the run directory holding it.
    pub prompt: PathBuf,
    /// The base model's name; defaults to the first model.
    pub base: Option<String>,
}

fn default_host() -> String { "127.0.0.1".into() }
fn default_port() -> u16 { 8080 }
fn default_concurrency() -> usize { 64 }
fn default_batch() -> usize { 32 }

impl BaseModel {
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(&self.name)
    }
}

impl ServeConfig {
    pub fn from_toml(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut c: Self = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for e in &mut c.classifiers {
            if e.prompt.is_relative() {
                e.prompt = dir.join(&e.prompt);
            }
        }
        Ok(c)
    }

    /// Classifiers from directories: a run directory (with `prompt.json`) or a folder of run directories.
    pub fn add_classifier_dirs(&mut self, dirs: &[PathBuf]) -> Result<()> {
        let base = self.models.first().map(|m| m.name.clone());
        for d in dirs {
            let runs: Vec<PathBuf> = if d.is_file() || d.join("prompt.json").is_file() {
                vec![d.clone()]
            } else {
                let mut v: Vec<PathBuf> = std::fs::read_dir(d)
                    .with_context(|| format!("reading classifier directory {}", d.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.join("prompt.json").is_file())
                    .collect();
                v.sort();
                if v.is_empty() {
                    bail!("{}: no prompt.json in it or in its subdirectories", d.display());
                }
                v
            };
            for r in runs {
                self.classifiers.push(ClassifierEntry { name: None, prompt: r, base: base.clone() });
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        if self.models.is_empty() {
            bail!("no base model: give --model or a [[models]] entry");
        }
        let mut names = std::collections::HashSet::new();
        for n in self.models.iter().map(|m| m.name.clone()).chain(self.classifiers.iter().map(classifier_name)) {
            if !names.insert(n.clone()) {
                bail!("model name `{n}` is used twice");
            }
        }
        for c in &self.classifiers {
            if let Some(b) = &c.base {
                if !self.models.iter().any(|m| &m.name == b) {
                    bail!("classifier `{}`: unknown base model `{b}`", classifier_name(c));
                }
            }
        }
        if self.max_concurrency == 0 || self.max_batch == 0 {
            bail!("max_concurrency and max_batch must be at least 1");
        }
        Ok(())
    }
}

/// The API name of a classifier: its `name`, else the run directory's name.
pub fn classifier_name(c: &ClassifierEntry) -> String {
    if let Some(n) = &c.name {
        return n.clone();
    }
    let dir = if c.prompt.is_file() { c.prompt.parent().unwrap_or(&c.prompt) } else { &c.prompt };
    dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "classifier".into())
}
