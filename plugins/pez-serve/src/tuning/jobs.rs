//! A fine-tuning job: the request, every check made before anything is written (files, labels, verbalizers,
//! settings and their bounds), the job's directory, and the `fine_tuning.job` object.

use super::dataset::{self, Example};
use super::store::{new_id, FileRow, JobRow, Status};
use super::Tuning;
use crate::error::ApiError;
use crate::openai::now;
use crate::openai::{FineTuningJob, JobHyperparameters, JobMethod, PezHyperparameters, PezMethod};
use anyhow::Context;
use pez_config::{TuneConfig, TuneSettings};
use pez_tasks::PromptFormat;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `POST /v1/fine_tuning/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    pub model: String,
    pub training_file: String,
    #[serde(default)]
    pub validation_file: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub method: Option<MethodRequest>,
    /// OpenAI's deprecated top-level hyperparameters (`batch_size`, `learning_rate_multiplier`, `n_epochs`):
    /// accepted; PEZ's defaults are used.
    #[serde(default)]
    pub hyperparameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub integrations: Option<Vec<Value>>,
}

/// `method`: `pez` with any `pez tune` setting and the task's `template`, `verbalizers` and `labels`; OpenAI's
/// `supervised` is accepted and runs with PEZ's defaults.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MethodRequest {
    Pez {
        #[serde(default)]
        pez: Option<PezRequest>,
    },
    Supervised {
        #[serde(default)]
        #[allow(dead_code)]
        supervised: Option<Value>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PezRequest {
    #[serde(default)]
    pub hyperparameters: Map<String, Value>,
}

/// What a job runs, kept in its row: the settings of its run (resolved again where it runs) and the task's
/// prompt format.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub settings: TuneSettings,
    pub format: PromptFormat,
    pub train_examples: usize,
    /// Every setting as resolved when the job was made (shown in the job object).
    pub resolved: TuneSettings,
    /// Where the job's files are.
    pub dir: PathBuf,
    /// The request's `metadata`, shown with the job.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Spec {
    pub fn read(job: &JobRow) -> anyhow::Result<Self> {
        serde_json::from_str(&job.spec).with_context(|| format!("job {}: its stored spec", job.id))
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
}

/// Settings a job may not set through its hyperparameters, and why.
const JOB_OWN: &[(&str, &str)] = &[
    ("task", "the task is the training file's"),
    ("train", "the training data is `training_file`"),
    ("dev", "the dev data is `validation_file`"),
    ("skip_dev", "the dev pass runs when a `validation_file` is given"),
    ("out", "the run directory is the job's"),
    ("model", "the base model is the job's `model`"),
    ("seed", "the seed is the job's own field `seed`"),
];

const HP: &str = "method.pez.hyperparameters";

/// The hyperparameters as the task's prompt-format overrides and the run's settings; a bad one named.
fn hyperparameters(mut hp: Map<String, Value>) -> Result<(FormatOverrides, TuneSettings), ApiError> {
    for (k, why) in JOB_OWN {
        if hp.contains_key(*k) {
            return Err(ApiError::invalid(
                &format!("{HP}.{k}"),
                format!("`{k}` cannot be set here: {why}"),
            ));
        }
    }
    let mut take = |k: &str| hp.remove(k).filter(|v| !v.is_null());
    let (template, verbalizers, labels) = (take("template"), take("verbalizers"), take("labels"));
    let overrides = FormatOverrides {
        template: field("template", template)?,
        verbalizers: field("verbalizers", verbalizers)?,
        labels: field("labels", labels)?,
    };
    let settings: TuneSettings = serde_path_to_error::deserialize(Value::Object(hp)).map_err(|e| {
        let inner = e.inner().to_string();
        let path = match inner.strip_prefix("unknown field `").and_then(|r| r.split_once('`')) {
            Some((k, _)) => k.to_string(),
            None => e.path().to_string(),
        };
        ApiError::invalid(&format!("{HP}.{path}"), format!("`{path}`: {inner}"))
    })?;
    Ok((overrides, settings))
}

/// A prompt-format hyperparameter as its type; a wrong one named.
fn field<T: serde::de::DeserializeOwned>(k: &str, v: Option<Value>) -> Result<Option<T>, ApiError> {
    v.map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::invalid(&format!("{HP}.{k}"), format!("`{k}`: {e}")))
}

#[derive(Debug, Default)]
struct FormatOverrides {
    template: Option<String>,
    verbalizers: Option<Vec<String>>,
    labels: Option<Vec<String>>,
}

/// The task's prompt format: labels from the training file (sorted), verbalizers ` <label>`, template ` It was`
/// (pez's SST-2 format), each replaced where the hyperparameters give it.
fn prompt_format(train: &[Example], o: FormatOverrides) -> Result<PromptFormat, ApiError> {
    let found = dataset::labels(train).map_err(|e| ApiError::invalid("training_file", e.to_string()))?;
    let label_names = match o.labels {
        Some(l) => {
            if let Some(missing) = found.iter().find(|f| !l.contains(f)) {
                let msg = format!("the training file's label {missing:?} is not in `labels`");
                return Err(ApiError::invalid(&format!("{HP}.labels"), msg));
            }
            l
        }
        None => found,
    };
    let verbalizers = o
        .verbalizers
        .unwrap_or_else(|| label_names.iter().map(|l| format!(" {l}")).collect());
    if verbalizers.len() != label_names.len() {
        let msg = format!("{} verbalizers for {} labels", verbalizers.len(), label_names.len());
        return Err(ApiError::invalid(&format!("{HP}.verbalizers"), msg));
    }
    Ok(PromptFormat {
        template: o.template.unwrap_or_else(|| " It was".into()),
        verbalizers,
        label_names,
    })
}

/// A file's examples, for the field that names it.
fn examples(t: &Tuning, owner: &str, id: &str, field: &str) -> Result<(FileRow, Vec<Example>), ApiError> {
    let row = t
        .store
        .file(owner, id)
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("file", id, field))?;
    let bytes = std::fs::read(file_path(&t.dir, &row.id)).map_err(internal)?;
    let ex = dataset::parse(&bytes).map_err(|e| ApiError::invalid(field, format!("{}: {e}", row.filename)))?;
    Ok((row, ex))
}

pub fn file_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("files").join(id)
}

pub fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("{e:#}"))
}

/// A request that passed every check that needs no file of the job's: its base model, task and data.
struct Checked {
    model: crate::config::BaseModel,
    format: PromptFormat,
    train: (FileRow, Vec<Example>),
    validation: Option<(FileRow, Vec<Example>)>,
    /// The hyperparameters' settings.
    given: TuneSettings,
}

/// Checks a job request whole, then writes its directory and its row (status `queued`); nothing is written when
/// a check fails. Files are read and written off the async threads.
pub async fn create(t: Arc<Tuning>, owner: String, r: CreateJob) -> Result<JobRow, ApiError> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || create_here(&t, &owner, r, &runtime))
        .await
        .map_err(internal)?
}

fn create_here(t: &Tuning, owner: &str, r: CreateJob, runtime: &tokio::runtime::Handle) -> Result<JobRow, ApiError> {
    let c = check(t, owner, &r, runtime)?;
    let id = new_id("ftjob");
    let dir = t.dir.join("jobs").join(&id);
    let seed = r.seed.unwrap_or_else(|| rand::random::<u32>() as u64);
    let settings = run_settings(&c, &dir, seed);
    let cfg = write_job_dir(&dir, &c, &settings)
        .map_err(internal)
        .and_then(|_| within_bounds(t, &settings, c.train.1.len()));
    let cfg = cfg.inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&dir);
    })?;
    let resolved = TuneSettings::from(&cfg);
    let (format, train_examples) = (c.format, c.train.1.len());
    let spec = Spec {
        settings,
        format,
        train_examples,
        resolved,
        dir,
        metadata: r.metadata,
    };
    let job = JobRow {
        id,
        owner: owner.to_string(),
        model: r.model,
        training_file: c.train.0.id,
        validation_file: c.validation.map(|v| v.0.id),
        seed,
        suffix: r.suffix,
        status: Status::Queued,
        created_at: now(),
        finished_at: None,
        estimated_finish: None,
        fine_tuned_model: None,
        error: None,
        spec: serde_json::to_string(&spec).map_err(internal)?,
        runner_id: None,
    };
    t.store.insert_job(&job).map_err(internal)?;
    let created = format!("Created fine-tuning job: {}", job.id);
    t.store.add_event(&job.id, "info", &created, None).map_err(internal)?;
    Ok(job)
}

/// The request's base model, files, task and hyperparameters, each checked (the verbalizers on the model).
fn check(t: &Tuning, owner: &str, r: &CreateJob, runtime: &tokio::runtime::Handle) -> Result<Checked, ApiError> {
    let Some((base, model)) = t.base(&r.model).cloned() else {
        let msg = format!(
            "`{}` is not a base model of this server (tuning starts from one)",
            r.model
        );
        return Err(ApiError::invalid("model", msg));
    };
    if r.integrations.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(ApiError::invalid("integrations", "integrations are not supported"));
    }
    let bad_suffix = |s: &&String| s.len() > 64 || s.contains(|c: char| c.is_control() || c == ':');
    if let Some(s) = r.suffix.as_ref().filter(bad_suffix) {
        return Err(ApiError::invalid(
            "suffix",
            format!("`suffix` {s:?}: at most 64 characters, no `:`"),
        ));
    }
    let hp = match &r.method {
        Some(MethodRequest::Pez { pez: Some(p) }) => p.hyperparameters.clone(),
        _ => Map::new(),
    };
    let (overrides, given) = hyperparameters(hp)?;
    let train = examples(t, owner, &r.training_file, "training_file")?;
    let validation = r
        .validation_file
        .as_deref()
        .map(|id| examples(t, owner, id, "validation_file"))
        .transpose()?;
    let format = prompt_format(&train.1, overrides)?;
    let unknown = validation
        .iter()
        .flat_map(|v| v.1.iter().enumerate())
        .find(|(_, e)| !format.label_names.contains(&e.label));
    if let Some((i, e)) = unknown {
        let msg = format!(
            "example {}: the label {:?} is not among the training labels",
            i + 1,
            e.label
        );
        return Err(ApiError::invalid("validation_file", msg));
    }
    let prompt_len = given.prompt_len.unwrap_or(10);
    let checked = runtime.block_on(t.pool.check_format(&base.name, &format, prompt_len));
    checked.map_err(|e| ApiError::invalid(&format!("{HP}.verbalizers"), e.to_string()))?;
    Ok(Checked {
        model,
        format,
        train,
        validation,
        given,
    })
}

/// The run's settings: the hyperparameters' over the job's own (its files in `dir`, its model and seed) and a
/// holdout of a fifth of the examples (at most pez tune's 500) unless one is given.
fn run_settings(c: &Checked, dir: &Path, seed: u64) -> TuneSettings {
    TuneSettings {
        task: Some(dir.join("task.toml").to_string_lossy().into_owned()),
        model: Some(c.model.path().to_string()),
        train: Some(dir.join("train.csv")),
        dev: c.validation.as_ref().map(|_| dir.join("dev.csv")),
        skip_dev: Some(c.validation.is_none()),
        out: Some(dir.join("run")),
        seed: Some(seed),
        holdout: c.given.holdout.or(Some((c.train.1.len() / 5).clamp(1, 500))),
        dtype: c.given.dtype.or(c.model.dtype),
        ..c.given.clone()
    }
}

/// The job's settings resolved (on the CPU: the dtype is decided again where it runs) and within the server's
/// bounds.
fn within_bounds(t: &Tuning, s: &TuneSettings, n_train: usize) -> Result<TuneConfig, ApiError> {
    let bad = |k: &str, m: String| ApiError::invalid(&format!("{HP}.{k}"), m);
    let cfg = match s.resolve(&candle_core::Device::Cpu) {
        Ok(c) => c,
        Err(e) => {
            return Err(match e.downcast_ref::<pez_config::Invalid>() {
                Some(i) => bad(i.setting, i.message.clone()),
                None => ApiError::bad_request(format!("{e:#}")),
            })
        }
    };
    let c = &t.cfg;
    for (k, v, max) in [
        ("steps", cfg.steps, c.max_steps),
        ("batch_size", cfg.batch_size, c.max_batch_size),
        ("eval_batch", cfg.eval_batch, c.max_batch_size),
        ("prompt_len", cfg.prompt_len, c.max_prompt_len),
        ("epochs", if cfg.shots.is_some() { cfg.epochs } else { 0 }, c.max_steps),
    ] {
        if v > max {
            return Err(bad(k, format!("`{k}` is {v}; this server allows at most {max}")));
        }
    }
    if cfg.shots.is_none() && cfg.holdout >= n_train {
        let m = format!(
            "`holdout` is {} of {n_train} training examples: none would be left to train on",
            cfg.holdout
        );
        return Err(bad("holdout", m));
    }
    Ok(cfg)
}

/// `task.toml`, `train.csv`, `dev.csv` and `settings.toml` in the job's directory.
fn write_job_dir(dir: &Path, c: &Checked, settings: &TuneSettings) -> anyhow::Result<()> {
    let (format, train, dev) = (&c.format, &c.train.1, c.validation.as_ref().map(|v| v.1.as_slice()));
    std::fs::create_dir_all(dir)?;
    #[derive(Serialize)]
    struct TaskFile<'a> {
        name: &'a str,
        #[serde(flatten)]
        prompt: &'a PromptFormat,
        train: &'a str,
        dev: Option<&'a str>,
        format: Format,
    }
    #[derive(Serialize)]
    struct Format {
        delimiter: &'static str,
        header: bool,
        quoting: bool,
        text_columns: [&'static str; 1],
        label_column: &'static str,
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let format_of = Format {
        delimiter: ",",
        header: true,
        quoting: true,
        text_columns: ["text"],
        label_column: "label",
    };
    let task = TaskFile {
        name: &name,
        prompt: format,
        train: "train.csv",
        dev: dev.map(|_| "dev.csv"),
        format: format_of,
    };
    std::fs::write(dir.join("task.toml"), toml::to_string(&task)?)?;
    write_rows(&dir.join("train.csv"), train, format)?;
    if let Some(dev) = dev {
        write_rows(&dir.join("dev.csv"), dev, format)?;
    }
    std::fs::write(dir.join("settings.toml"), toml::to_string(settings)?)?;
    Ok(())
}

/// Examples as `text,label` rows, the label its index in the format.
fn write_rows(path: &Path, examples: &[Example], format: &PromptFormat) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["text", "label"])?;
    for e in examples {
        let i = format
            .label_names
            .iter()
            .position(|l| l == &e.label)
            .context("a label outside the format")?;
        w.write_record([e.text.as_str(), &i.to_string()])?;
    }
    w.flush()?;
    Ok(())
}

/// The name a job's classifier is served as: `ft:<base>:pez:<suffix>:<job id's last 8>`.
pub fn model_name(job: &JobRow) -> String {
    let short = &job.id[job.id.len().saturating_sub(8)..];
    format!("ft:{}:pez:{}:{short}", job.model, job.suffix.as_deref().unwrap_or(""))
}

/// The `fine_tuning.job` object of a row.
pub fn object(job: &JobRow) -> FineTuningJob {
    let spec = Spec::read(job).ok();
    let resolved = spec.as_ref().map(|s| s.resolved.clone()).unwrap_or_default();
    let hyperparameters = openai_hyperparameters(&resolved, spec.as_ref().map_or(1, |s| s.train_examples));
    let shown = TuneSettings {
        task: None,
        out: None,
        train: None,
        dev: None,
        model: None,
        ..resolved
    };
    let metadata = spec.as_ref().and_then(|s| s.metadata.clone());
    let empty = || PromptFormat {
        template: String::new(),
        verbalizers: vec![],
        label_names: vec![],
    };
    let format = spec.map(|s| s.format).unwrap_or_else(empty);
    let (template, verbalizers, labels) = (format.template, format.verbalizers, format.label_names);
    FineTuningJob {
        id: job.id.clone(),
        object: "fine_tuning.job",
        created_at: job.created_at,
        error: job.error.clone(),
        fine_tuned_model: job.fine_tuned_model.clone(),
        finished_at: job.finished_at,
        hyperparameters,
        model: job.model.clone(),
        organization_id: "pez".into(),
        result_files: vec![],
        seed: job.seed,
        status: job.status,
        trained_tokens: None,
        training_file: job.training_file.clone(),
        validation_file: job.validation_file.clone(),
        estimated_finish: job.estimated_finish.filter(|_| job.status == Status::Running),
        integrations: vec![],
        metadata,
        method: JobMethod {
            kind: "pez",
            pez: PezMethod {
                hyperparameters: PezHyperparameters {
                    template,
                    verbalizers,
                    labels,
                    settings: shown,
                },
            },
        },
        user_provided_suffix: job.suffix.clone(),
    }
}

/// OpenAI's three hyperparameters of a run: its batch size, its learning rate over pez's default for the
/// optimizer, and the passes its steps make over the `n_train` examples (rounded up).
fn openai_hyperparameters(s: &TuneSettings, n_train: usize) -> JobHyperparameters {
    let (batch, steps, lr) = (s.batch_size.unwrap_or(0), s.steps.unwrap_or(0), s.lr.unwrap_or(0.0));
    let default_lr = pez_config::settings::default_lr(s.optimizer.unwrap_or(pez_core::OptimizerKind::Adafactor));
    JobHyperparameters {
        batch_size: batch,
        learning_rate_multiplier: lr / default_lr,
        n_epochs: (steps * batch).div_ceil(n_train.max(1)),
    }
}
