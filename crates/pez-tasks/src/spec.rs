//! Task specifications: built-in SST-2, Amazon polarity and AG News, or a custom TOML file. A task is a prompt
//! format (what a classifier needs) and a data source (what tuning and evaluation read).

use crate::data::{self, Dataset, Format, RowRule};
use crate::sources::{builtin_task, BuiltinSplit, Location, Places};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a classifier needs: `<prompt><text><template>` -> one verbalizer token per label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PromptFormat {
    /// Appended after the text, e.g. `" It was"`.
    pub template: String,
    /// One word per label, read as the next token after the template, e.g. `" negative"`.
    pub verbalizers: Vec<String>,
    pub label_names: Vec<String>,
}

impl PromptFormat {
    /// SST-2 and Amazon: `" It was"` -> ` negative` / ` positive`.
    pub fn polarity() -> Self {
        Self {
            template: " It was".into(),
            verbalizers: vec![" negative".into(), " positive".into()],
            label_names: vec!["negative".into(), "positive".into()],
        }
    }

    /// AG News: `" It was about"` -> ` politics` / ` sports` / ` business` / ` technology`.
    pub fn agnews() -> Self {
        Self {
            template: " It was about".into(),
            verbalizers: [" politics", " sports", " business", " technology"]
                .map(String::from)
                .to_vec(),
            label_names: ["World", "Sports", "Business", "Sci/Tech"].map(String::from).to_vec(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.verbalizers.len() < 2 {
            bail!("a task needs at least two verbalizers, got {}", self.verbalizers.len());
        }
        if self.verbalizers.len() != self.label_names.len() {
            bail!(
                "{} verbalizers but {} label names",
                self.verbalizers.len(),
                self.label_names.len()
            );
        }
        Ok(())
    }

    pub fn num_labels(&self) -> usize {
        self.verbalizers.len()
    }
}

/// How label scores are corrected for the prompt's own label bias.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Calibration {
    /// Raw verbalizer probabilities.
    #[default]
    None,
    /// Zhao et al. 2021 ("Calibrate Before Use"): the label distribution the prompt gives content-free inputs
    /// ("N/A", "" and "[MASK]", averaged; `pez_classify::CONTENT_FREE`) is divided out, `p(label) ∝ p_raw(label) / p_cf(label)`; re-estimated on
    /// whatever model the prompt runs on.
    ContentFree,
}

/// Where a task's examples come from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// A custom task's files (from its TOML), all in one row format.
    Files {
        format: Format,
        train: Option<PathBuf>,
        dev: Option<PathBuf>,
    },
    /// A built-in task: each split found at run time (see `crate::sources`).
    Builtin { train: BuiltinSplit, dev: BuiltinSplit },
}

/// A text classification task: its prompt format and its data.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub name: String,
    pub prompt: PromptFormat,
    pub data: DataSource,
    /// The train rows that look like the evaluation data, which `pez tune` holds out and trains on by default:
    /// `long` for SST-2 (phrases in train, whole sentences in dev and test), `random` (any row) elsewhere; a task
    /// file sets it with `rows = "long"`.
    pub rows: RowRule,
}

/// A custom task file: name, template, verbalizers, label_names, train, dev and `[format]`.
#[derive(Deserialize)]
struct TaskFile {
    name: String,
    #[serde(flatten)]
    prompt: PromptFormat,
    format: Format,
    train: Option<PathBuf>,
    dev: Option<PathBuf>,
    #[serde(default)]
    rows: RowRule,
}

impl TaskSpec {
    /// `sst2`, `amazon`, `agnews`, or a path to a task TOML file.
    pub fn resolve(name: &str) -> Result<Self> {
        if let Some(t) = builtin_task(name) {
            return Ok(TaskSpec {
                name: name.into(),
                prompt: t.prompt,
                data: DataSource::Builtin {
                    train: t.train,
                    dev: t.dev,
                },
                rows: t.rows,
            });
        }
        if name.ends_with(".toml") || Path::new(name).is_file() {
            return Self::from_toml(Path::new(name));
        }
        bail!("unknown task `{name}`: use sst2, amazon, agnews, or a task .toml file")
    }

    pub fn from_toml(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading task file {}", path.display()))?;
        let f: TaskFile = toml::from_str(&text).with_context(|| format!("parsing task file {}", path.display()))?;
        f.prompt
            .validate()
            .with_context(|| format!("in task file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: Option<PathBuf>| p.map(|p| if p.is_relative() { base.join(p) } else { p });
        Ok(Self {
            name: f.name,
            prompt: f.prompt,
            data: DataSource::Files {
                format: f.format,
                train: rel(f.train),
                dev: rel(f.dev),
            },
            rows: f.rows,
        })
    }

    pub fn num_labels(&self) -> usize {
        self.prompt.num_labels()
    }

    /// Where a split (`train`, else dev) would be read from: the explicit file, or the task's own. For built-in
    /// tasks this fetches from the hub when the split is nowhere local (see `crate::sources`).
    pub fn locate(&self, split: &str, path: Option<&Path>) -> Result<(PathBuf, Format)> {
        let flag = if split == "train" {
            "--train"
        } else {
            "--data (or --dev)"
        };
        match &self.data {
            DataSource::Files { format, train, dev } => {
                let own = if split == "train" { train } else { dev };
                let p = path.map(Path::to_path_buf).or_else(|| own.clone());
                let p = p.with_context(|| format!("task `{}` has no default {split} file: pass {flag}", self.name))?;
                Ok((p, format.clone()))
            }
            DataSource::Builtin { train, dev } => {
                let s = if split == "train" { train } else { dev };
                let p = match path {
                    Some(p) => Location::Given(p.to_path_buf()),
                    None => s
                        .fetch(&Places::from_env())
                        .map_err(|e| e.context(format!("task `{}`: no {split} split: pass {flag}", self.name)))?,
                };
                Ok((p.path().to_path_buf(), s.format_of(p.path())))
            }
        }
    }

    /// Loads a split: an explicit file, or the task's default train/dev split.
    pub fn load(&self, split: &str, path: Option<&Path>) -> Result<Dataset> {
        let (p, format) = self.locate(split, path)?;
        data::load(&p, &format, self.num_labels())
    }
}
