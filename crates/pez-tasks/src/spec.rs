//! Task specifications: built-in SST-2, Amazon polarity and AG News, or a custom TOML file.

use crate::data::{self, Dataset, Format};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A text classification task as PEZ sees it: `<prompt><text><template>` -> one verbalizer token per label.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    /// Appended after the text, e.g. `" It was"`.
    pub template: String,
    /// One word per label, read as the next token after the template, e.g. `" negative"`.
    pub verbalizers: Vec<String>,
    pub label_names: Vec<String>,
    pub format: Format,
    pub train: Option<PathBuf>,
    pub dev: Option<PathBuf>,
}

/// Where the shared datasets live: `$PEZ_DATA`, else `../shared/data` beside this checkout.
pub fn data_root() -> PathBuf {
    if let Some(p) = std::env::var_os("PEZ_DATA") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    p.canonicalize().unwrap_or(p)
}

impl TaskSpec {
    /// `sst2`, `amazon`, `agnews`, or a path to a task TOML file.
    pub fn resolve(name: &str) -> Result<Self> {
        let root = data_root();
        let polarity = |n: &str, format, train: Option<PathBuf>, dev: Option<PathBuf>| TaskSpec {
            name: n.into(),
            template: " It was".into(),
            verbalizers: vec![" negative".into(), " positive".into()],
            label_names: vec!["negative".into(), "positive".into()],
            format,
            train,
            dev,
        };
        Ok(match name {
            "sst2" => polarity("sst2", Format::sst2(), Some(root.join("sst2/train.tsv")), Some(root.join("sst2/dev.tsv"))),
            // No copy of Amazon Polarity is available here; pass --data / --train with the public CSV.
            "amazon" => polarity("amazon", Format::amazon(), None, None),
            "agnews" => TaskSpec {
                name: "agnews".into(),
                template: " It was about".into(),
                verbalizers: [" politics", " sports", " business", " technology"].map(String::from).to_vec(),
                label_names: ["World", "Sports", "Business", "Sci/Tech"].map(String::from).to_vec(),
                format: Format::agnews(),
                train: Some(root.join("agnews/train_5k.csv")),
                dev: Some(root.join("agnews/dev_1k.csv")),
            },
            other if other.ends_with(".toml") || Path::new(other).is_file() => Self::from_toml(Path::new(other))?,
            other => bail!("unknown task `{other}`: use sst2, amazon, agnews, or a task .toml file"),
        })
    }

    pub fn from_toml(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading task file {}", path.display()))?;
        let mut spec: TaskSpec = toml::from_str(&text).with_context(|| format!("parsing task file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut spec.train, &mut spec.dev].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        spec.validate().with_context(|| format!("in task file {}", path.display()))?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<()> {
        if self.verbalizers.len() < 2 {
            bail!("a task needs at least two verbalizers, got {}", self.verbalizers.len());
        }
        if self.verbalizers.len() != self.label_names.len() {
            bail!("{} verbalizers but {} label names", self.verbalizers.len(), self.label_names.len());
        }
        Ok(())
    }

    pub fn num_labels(&self) -> usize {
        self.verbalizers.len()
    }

    /// Loads a split: an explicit file, or the task's default train/dev file.
    pub fn load(&self, split: &str, path: Option<&Path>) -> Result<Dataset> {
        let p = match (path, split) {
            (Some(p), _) => p.to_path_buf(),
            (None, "train") => self.train.clone().with_context(|| format!("task `{}` has no default train file: pass --train", self.name))?,
            (None, _) => self.dev.clone().with_context(|| format!("task `{}` has no default dev file: pass --data", self.name))?,
        };
        data::load(&p, &self.format, self.num_labels())
    }
}
