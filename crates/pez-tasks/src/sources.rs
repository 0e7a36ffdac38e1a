//! Where the built-in tasks' splits come from, found at run time (nothing is compiled in), in this order:
//! 1. a file given on the command line (`--train`, `--dev`, `--data`);
//! 2. `$PEZ_DATA/<task>/<file>` (the layout of `shared/data`);
//! 3. `shared/data/<task>/<file>` in the current directory or one of its parents (a checkout beside `shared/`);
//! 4. the Hugging Face hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, default `~/.cache/huggingface/hub`): the
//!    dataset's Parquet file;
//! 5. a download of that file from the hub into the cache, unless `HF_HUB_OFFLINE=1`.
//!
//! | task   | our split | local file                  | hub dataset and file                                        |
//! |--------|-----------|-----------------------------|-------------------------------------------------------------|
//! | sst2   | train     | sst2/train.tsv              | stanfordnlp/sst2 `data/train-00000-of-00001.parquet`        |
//! | sst2   | dev       | sst2/dev.tsv                | stanfordnlp/sst2 `data/validation-00000-of-00001.parquet` (the test split's labels are hidden) |
//! | agnews | train     | agnews/train_5k.csv         | fancyzhx/ag_news `data/train-00000-of-00001.parquet` (all 120,000 rows) |
//! | agnews | dev       | agnews/dev_1k.csv           | fancyzhx/ag_news `data/test-00000-of-00001.parquet` (7,600 rows) |
//! | amazon | train     | amazon/train.csv            | fancyzhx/amazon_polarity `amazon_polarity/train-00000-of-00004.parquet` (the first of 4 shards, about 900,000 rows) |
//! | amazon | dev       | amazon/test.csv             | fancyzhx/amazon_polarity `amazon_polarity/test-00000-of-00001.parquet` (400,000 rows) |
//!
//! Labels on the hub are 0-based integers in our order (SST-2 0 negative / 1 positive; AG News 0 World, 1 Sports,
//! 2 Business, 3 Sci/Tech; Amazon 0 negative / 1 positive). The local Amazon CSV is the public one (1 / 2).

use crate::data::{is_parquet, Column, Format};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One split of a built-in task: its file under a data root and the same split on the hub.
#[derive(Debug, Clone)]
pub struct BuiltinSplit {
    pub local: &'static str,
    pub local_format: fn() -> Format,
    pub hub_repo: &'static str,
    pub hub_file: &'static str,
    pub hub_format: fn() -> Format,
}

/// Where a split was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Given on the command line.
    Given(PathBuf),
    /// Under `$PEZ_DATA`.
    PezData(PathBuf),
    /// In a `shared/data` folder beside the checkout.
    Shared(PathBuf),
    /// In the Hugging Face hub cache.
    HubCache(PathBuf),
}

impl Location {
    pub fn path(&self) -> &Path {
        match self {
            Self::Given(p) | Self::PezData(p) | Self::Shared(p) | Self::HubCache(p) => p,
        }
    }
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Given(_) => "given",
            Self::PezData(_) => "$PEZ_DATA",
            Self::Shared(_) => "shared/data",
            Self::HubCache(_) => "hub cache",
        }
    }
}

fn hub_name(fmt: &[&str]) -> Format {
    Format {
        delimiter: ",".into(),
        header: true,
        quoting: true,
        text_columns: fmt[..fmt.len() - 1]
            .iter()
            .map(|c| Column::Name(c.to_string()))
            .collect(),
        label_column: Column::Name(fmt[fmt.len() - 1].to_string()),
        label_map: Default::default(),
    }
}
fn sst2_hub() -> Format {
    hub_name(&["sentence", "label"])
}
fn agnews_hub() -> Format {
    hub_name(&["text", "label"])
}
fn amazon_hub() -> Format {
    hub_name(&["title", "content", "label"])
}

/// A built-in task: its prompt format and where its splits come from, in one entry.
#[derive(Debug, Clone)]
pub struct BuiltinTask {
    pub prompt: crate::PromptFormat,
    pub train: BuiltinSplit,
    pub dev: BuiltinSplit,
    /// The train rows that look like the evaluation data (see `crate::TaskSpec::rows`).
    pub rows: crate::RowRule,
}

/// The built-in task `task` (one of `BUILTIN_TASKS`).
pub fn builtin_task(task: &str) -> Option<BuiltinTask> {
    use crate::PromptFormat;
    let s = |local, local_format, hub_repo, hub_file, hub_format| BuiltinSplit {
        local,
        local_format,
        hub_repo,
        hub_file,
        hub_format,
    };
    let t = |prompt, train, dev, rows| BuiltinTask {
        prompt,
        train,
        dev,
        rows,
    };
    Some(match task {
        "sst2" => t(
            PromptFormat::polarity(),
            s(
                "sst2/train.tsv",
                Format::sst2,
                "stanfordnlp/sst2",
                "data/train-00000-of-00001.parquet",
                sst2_hub,
            ),
            s(
                "sst2/dev.tsv",
                Format::sst2,
                "stanfordnlp/sst2",
                "data/validation-00000-of-00001.parquet",
                sst2_hub,
            ),
            // Train is mostly phrases cut from the whole sentences that dev and test hold.
            crate::RowRule::Long,
        ),
        "agnews" => t(
            PromptFormat::agnews(),
            s(
                "agnews/train_5k.csv",
                Format::agnews,
                "fancyzhx/ag_news",
                "data/train-00000-of-00001.parquet",
                agnews_hub,
            ),
            s(
                "agnews/dev_1k.csv",
                Format::agnews,
                "fancyzhx/ag_news",
                "data/test-00000-of-00001.parquet",
                agnews_hub,
            ),
            crate::RowRule::Random,
        ),
        "amazon" => t(
            PromptFormat::polarity(),
            s(
                "amazon/train.csv",
                Format::amazon,
                "fancyzhx/amazon_polarity",
                "amazon_polarity/train-00000-of-00004.parquet",
                amazon_hub,
            ),
            s(
                "amazon/test.csv",
                Format::amazon,
                "fancyzhx/amazon_polarity",
                "amazon_polarity/test-00000-of-00001.parquet",
                amazon_hub,
            ),
            crate::RowRule::Random,
        ),
        _ => return None,
    })
}

pub const BUILTIN_TASKS: [&str; 3] = ["sst2", "agnews", "amazon"];

/// The places a split is looked for (2-5 above), read from the environment by `Places::from_env`.
#[derive(Debug, Clone)]
pub struct Places {
    /// `$PEZ_DATA`.
    pub pez_data: Option<PathBuf>,
    /// The directory whose ancestors are searched for `shared/data` (the current directory).
    pub cwd: Option<PathBuf>,
    /// The Hugging Face hub cache.
    pub hub_cache: PathBuf,
    /// `HF_HUB_OFFLINE=1`: never download.
    pub offline: bool,
}

impl Places {
    pub fn from_env() -> Self {
        Self {
            pez_data: std::env::var_os("PEZ_DATA").map(PathBuf::from),
            cwd: std::env::current_dir().ok(),
            // As the models' hub-cache lookup: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
            hub_cache: std::env::var_os("HF_HUB_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| hf_hub::Cache::from_env().path().clone()),
            offline: std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
        }
    }

    /// `shared/data` in the current directory or its nearest parent that has one.
    pub fn shared_data(&self) -> Option<PathBuf> {
        self.cwd
            .as_ref()?
            .ancestors()
            .map(|a| a.join("shared/data"))
            .find(|p| p.is_dir())
    }
}

impl BuiltinSplit {
    /// The format of a file: Parquet files are the hub's layout, anything else the local one.
    pub fn format_of(&self, path: &Path) -> Format {
        if is_parquet(path) {
            (self.hub_format)()
        } else {
            (self.local_format)()
        }
    }

    fn hub_repo(&self) -> hf_hub::Repo {
        hf_hub::Repo::new(self.hub_repo.into(), hf_hub::RepoType::Dataset)
    }

    /// The first place (2-4 above) that has this split, without downloading anything.
    pub fn locate(&self, places: &Places) -> Option<Location> {
        if let Some(p) = places
            .pez_data
            .as_ref()
            .map(|r| r.join(self.local))
            .filter(|p| p.is_file())
        {
            return Some(Location::PezData(p));
        }
        if let Some(p) = places.shared_data().map(|d| d.join(self.local)).filter(|p| p.is_file()) {
            return Some(Location::Shared(p));
        }
        hf_hub::Cache::new(places.hub_cache.clone())
            .repo(self.hub_repo())
            .get(self.hub_file)
            .map(Location::HubCache)
    }

    /// `locate`, else a download from the hub into its cache (unless offline); the error names the file and
    /// every way to provide it.
    pub fn fetch(&self, places: &Places) -> Result<Location> {
        if let Some(l) = self.locate(places) {
            return Ok(l);
        }
        let ways = format!(
            "put {} under $PEZ_DATA (or in a shared/data folder beside the checkout), pass the file with --train/--dev/--data, \
             or download {} of the hub dataset {} into the hub cache ({}) with `pez data --fetch` while online",
            self.local, self.hub_file, self.hub_repo, places.hub_cache.display()
        );
        if places.offline {
            bail!(
                "{}/{} is not in the hub cache and HF_HUB_OFFLINE=1 forbids downloading it: {ways}",
                self.hub_repo,
                self.hub_file
            );
        }
        eprintln!(
            "downloading {}/{} from the Hugging Face hub into {}",
            self.hub_repo,
            self.hub_file,
            places.hub_cache.display()
        );
        let api = hf_hub::api::sync::ApiBuilder::new()
            .with_cache_dir(places.hub_cache.clone())
            .with_progress(true)
            .build()
            .context("starting the hub client")?;
        let path = api.repo(self.hub_repo()).get(self.hub_file).with_context(|| {
            format!(
                "downloading {}/{} from the Hugging Face hub failed: {ways}",
                self.hub_repo, self.hub_file
            )
        })?;
        Ok(Location::HubCache(path))
    }
}
