//! What to serve: base models and the classifiers on them, from the command line, a TOML file, or both (flags
//! win over the file).

use anyhow::{bail, Context, Result};
use clap::Parser;
use pez_config::{EnsembleArtifact, PromptArtifact, ENSEMBLE_FILE};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    version,
    about = "OpenAI-compatible server where learned PEZ classifiers are model names (on mistral.rs)"
)]
pub struct Args {
    /// Base model(s): a short name (smollm2-135m, gemma3-270m, gpt2-large, ...), a GGUF file or a directory.
    #[arg(long)]
    pub model: Vec<String>,
    /// Classifiers: run directories with a prompt.json, or folders of them. They go on the first --model.
    #[arg(long)]
    pub classifiers: Vec<PathBuf>,
    /// A TOML file with [[models]] and [[classifiers]] (see plugins/pez-serve/README.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    /// Requests in flight at once; more are answered 429 with Retry-After.
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Texts scored together at most, per base model.
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Sequences mistral.rs schedules together for plain generation (default: --max-concurrency).
    #[arg(long)]
    pub engine_max_seqs: Option<usize>,
    /// Do not start the mistral.rs engine: classifiers only (fast start; plain generation is refused).
    #[arg(long)]
    pub no_generation: bool,
    /// Finished sequences whose KV caches mistral.rs keeps for reuse. 0 (the default) because mistral.rs 0.8.1
    /// evicts only caches that are not in CPU memory: on a CPU server every kept cache stays for good.
    #[arg(long, default_value_t = 0)]
    pub prefix_cache: usize,
    /// Give mistral.rs the GGUF as it is, even when its tensor types have no SIMD CPU kernel in candle (by default
    /// such tensors are requantized to Q8_0 once, into ~/.cache/pez/engine).
    #[arg(long)]
    pub engine_gguf_as_is: bool,
    /// What the classifiers of the --model base models compute in: f32, bf16 (bf16 products, f32 accumulation),
    /// or auto: bf16 where the CPU has bf16 units (AVX512-BF16), else f32. `dtype` per [[models]] in the file.
    #[arg(long, default_value_t = pez_nn::Dtype::Auto)]
    pub dtype: pez_nn::Dtype,
    /// Activation dtype of mistral.rs's generation: f32 (the default; fast on CPUs without bf16 arithmetic),
    /// bf16, f16 or auto (mistral.rs's choice: bf16 on a CPU).
    #[arg(long, value_enum, default_value_t = EngineDtype::F32)]
    pub engine_dtype: EngineDtype,
    /// Where the classifiers of the --model base models compute: cpu, cuda or cuda:N (a binary built with
    /// `--features cuda`; plain generation through mistral.rs stays on the CPU). `device` per [[models]].
    #[arg(long, default_value_t = pez_nn::DeviceArg::Cpu)]
    pub device: pez_nn::DeviceArg,
    /// Fetch a missing built-in base model at start (as `pez models --fetch` would) instead of refusing to start;
    /// `fetch_missing = true` in the file, or PEZ_FETCH_MISSING=1.
    #[arg(long)]
    pub fetch_missing: bool,
    /// Read and check the configuration (the flags, the file, every classifier's prompt.json), print what would
    /// be served and exit, loading no model.
    #[arg(long)]
    pub check_config: bool,
    /// Where uploaded files, tuning jobs (SQLite) and their runs are kept; `state_dir` in the file. Default
    /// `$XDG_STATE_HOME/pez-serve` (`~/.local/state/pez-serve`).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// An API key clients must send (`Authorization: Bearer KEY`); repeat for several. Also PEZ_API_KEYS
    /// (comma-separated) and `[auth] api_keys`. Without any, the server serves only a loopback address.
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,
    /// Serve without API keys on an address that is not loopback (a network in front of it that you trust).
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Tuning jobs running at once (`[tuning] max_running_jobs`, default 1).
    #[arg(long)]
    pub max_running_jobs: Option<usize>,
    /// Where tuning jobs run: local (threads of this process, the default) or slurm (batch jobs).
    #[arg(long)]
    pub runner: Option<RunnerKind>,
}

/// Activation dtype of mistral.rs's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineDtype {
    F32,
    Bf16,
    F16,
    /// mistral.rs's choice (bf16 on a CPU).
    Auto,
}

impl ServeConfig {
    /// The configuration the flags ask for: `--config`'s file (if any) with the flags' models and classifiers
    /// added and their settings over the file's, checked.
    pub fn from_args(a: &Args) -> Result<Self> {
        let mut cfg = match &a.config {
            Some(p) => Self::from_toml(p)?,
            None => toml::from_str::<Self>("models = []")?,
        };
        cfg.models.extend(a.model.iter().map(|m| BaseModel {
            name: m.clone(),
            path: None,
            generate: None,
            dtype: Some(a.dtype),
            device: Some(a.device),
        }));
        cfg.add_classifier_dirs(&a.classifiers)?;
        cfg.host = a.host.clone().unwrap_or(cfg.host);
        cfg.fetch_missing |= a.fetch_missing;
        cfg.port = a.port.unwrap_or(cfg.port);
        cfg.max_concurrency = a.max_concurrency.unwrap_or(cfg.max_concurrency);
        cfg.max_batch = a.max_batch.unwrap_or(cfg.max_batch);
        cfg.state_dir = a.state_dir.clone().or(cfg.state_dir);
        cfg.auth.api_keys = crate::auth::gather(&a.api_keys, &cfg.auth.api_keys);
        cfg.auth.allow_unauthenticated |= a.allow_unauthenticated;
        cfg.tuning.max_running_jobs = a.max_running_jobs.unwrap_or(cfg.tuning.max_running_jobs);
        cfg.tuning.runner = a.runner.unwrap_or(cfg.tuning.runner);
        cfg.validate()?;
        Ok(cfg)
    }
}

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
    /// What one request may ask for, and how long the server waits for a client (`[limits]`).
    #[serde(default)]
    pub limits: Limits,
    /// Fetch missing built-in base models at start (`--fetch-missing`).
    #[serde(default)]
    pub fetch_missing: bool,
    /// Where files, jobs and runs are kept (`--state-dir`).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tuning: TuningConfig,
}

/// Bounds on requests and connections. Anything past them is refused with a 4xx in OpenAI's error shape before
/// any work, except text length: texts are cut to `max_text_tokens` (as `pez eval` cuts to the context) and
/// answered with `truncated: true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Request body size (bytes): larger is a 413.
    pub max_body_bytes: usize,
    /// Texts in one classification request.
    pub max_inputs: usize,
    /// Tokens of one text a classifier reads (its start); the rest is cut. Also bounded by the model's context.
    pub max_text_tokens: usize,
    /// Messages in one chat request.
    pub max_messages: usize,
    /// Content parts in one message.
    pub max_content_parts: usize,
    /// `max_tokens` of a generation request; also what it gets when it names none.
    pub max_tokens: usize,
    /// `n` (and `best_of`) of a generation request.
    pub max_n: usize,
    /// Seconds a client may take to send its headers (also how long an idle connection is kept).
    pub header_timeout_s: u64,
    /// Seconds a client may take to send its body: a stalled or short body is a 408.
    pub body_timeout_s: u64,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// Seconds requests in flight get to finish after SIGTERM before the process exits anyway.
    pub shutdown_timeout_s: u64,
    /// Resident size (MiB) above which plain generation is refused with a 503 and Retry-After; 0 = 80% of the
    /// machine's memory.
    pub max_rss_mib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_inputs: 2048,
            max_text_tokens: 512,
            max_messages: 256,
            max_content_parts: 64,
            max_tokens: 512,
            max_n: 4,
            header_timeout_s: 10,
            body_timeout_s: 10,
            max_connections: 512,
            shutdown_timeout_s: 30,
            max_rss_mib: 0,
        }
    }
}

impl Limits {
    /// The resident-size budget in bytes.
    pub fn rss_budget(&self) -> u64 {
        match self.max_rss_mib {
            0 => crate::metrics::total_memory_bytes().map_or(u64::MAX, |t| t / 5 * 4),
            m => m << 20,
        }
    }
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
    /// What its classifiers compute in: f32, bf16 or auto (bf16 where the CPU has bf16 units; the default).
    pub dtype: Option<pez_nn::Dtype>,
    /// Where its classifiers compute: "cpu" (the default), "cuda" or "cuda:N".
    #[serde(default, deserialize_with = "device_opt")]
    pub device: Option<pez_nn::DeviceArg>,
}

fn device_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<pez_nn::DeviceArg>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
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

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    8080
}
fn default_concurrency() -> usize {
    64
}
fn default_batch() -> usize {
    32
}

impl BaseModel {
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(&self.name)
    }
    /// Where its classifiers compute, and in what (`auto` decided for that device on this machine).
    pub fn placement(&self) -> Result<(candle_core::Device, pez_nn::Dtype)> {
        let device = self
            .device
            .unwrap_or_default()
            .open()
            .with_context(|| format!("base model `{}`", self.name))?;
        let dtype = self.dtype.unwrap_or(pez_nn::Dtype::Auto).resolve_on(&device);
        Ok((device, dtype))
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
        c.state_dir = c.state_dir.map(|d| if d.is_relative() { dir.join(d) } else { d });
        Ok(c)
    }

    /// Classifiers from directories: a run directory (with `prompt.json`), a sweep's folder with an
    /// `ensemble.json` (one classifier), or a folder of those.
    pub fn add_classifier_dirs(&mut self, dirs: &[PathBuf]) -> Result<()> {
        let base = self.models.first().map(|m| m.name.clone());
        let is_classifier = |d: &Path| d.join("prompt.json").is_file() || d.join(ENSEMBLE_FILE).is_file();
        for d in dirs {
            let runs: Vec<PathBuf> = if d.is_file() || is_classifier(d) {
                vec![d.clone()]
            } else {
                let mut v: Vec<PathBuf> = std::fs::read_dir(d)
                    .with_context(|| format!("reading classifier directory {}", d.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| is_classifier(p))
                    .collect();
                v.sort();
                if v.is_empty() {
                    bail!(
                        "{}: no prompt.json or ensemble.json in it or in its subdirectories",
                        d.display()
                    );
                }
                v
            };
            for r in runs {
                self.classifiers.push(ClassifierEntry {
                    name: None,
                    prompt: r,
                    base: base.clone(),
                });
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        if self.models.is_empty() {
            bail!("no base model: give --model or a [[models]] entry");
        }
        let mut names = std::collections::HashSet::new();
        for n in self
            .models
            .iter()
            .map(|m| m.name.clone())
            .chain(self.classifiers.iter().map(classifier_name))
        {
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
        for m in &self.models {
            m.placement()?; // a device that is not here is refused before anything loads
        }
        if let Some(why) =
            crate::auth::refuse_open_host(&self.host, &self.auth.api_keys, self.auth.allow_unauthenticated)
        {
            bail!("{why}");
        }
        if self.tuning.max_running_jobs == 0 || self.tuning.max_file_bytes == 0 {
            bail!("tuning.max_running_jobs and tuning.max_file_bytes must be at least 1");
        }
        if self.max_concurrency == 0 || self.max_batch == 0 {
            bail!("max_concurrency and max_batch must be at least 1");
        }
        let l = &self.limits;
        for (name, v) in [
            ("max_body_bytes", l.max_body_bytes as u64),
            ("max_inputs", l.max_inputs as u64),
            ("max_text_tokens", l.max_text_tokens as u64),
            ("max_messages", l.max_messages as u64),
            ("max_content_parts", l.max_content_parts as u64),
            ("max_tokens", l.max_tokens as u64),
            ("max_n", l.max_n as u64),
            ("header_timeout_s", l.header_timeout_s),
            ("body_timeout_s", l.body_timeout_s),
            ("max_connections", l.max_connections as u64),
        ] {
            if v == 0 {
                bail!("limits.{name} must be at least 1");
            }
        }
        Ok(())
    }
}

impl ServeConfig {
    /// The state directory: the configured one, else `$XDG_STATE_HOME/pez-serve` (`~/.local/state/pez-serve`).
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            let state = std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".local/state"));
            state.join("pez-serve")
        })
    }
}

/// The API name of a classifier: its `name`, else the run directory's name.
pub fn classifier_name(c: &ClassifierEntry) -> String {
    if let Some(n) = &c.name {
        return n.clone();
    }
    let dir = if c.prompt.is_file() {
        c.prompt.parent().unwrap_or(&c.prompt)
    } else {
        &c.prompt
    };
    dir.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "classifier".into())
}

/// The prompts of a classifier file (a `prompt.json`, an `ensemble.json`'s members, or the folder of either),
/// read and checked as the worker will read them.
pub fn classifier_prompts(path: &Path) -> Result<Vec<String>> {
    if pez_config::is_ensemble(path)? {
        let members = EnsembleArtifact::read(path)?.read_members(path)?;
        Ok(members.into_iter().map(|a| a.prompt).collect())
    } else {
        Ok(vec![PromptArtifact::read(path)?.prompt])
    }
}

/// A base model as the API lists it.
#[derive(Debug, Clone)]
pub struct BaseInfo {
    pub name: String,
    /// Plain chat/completions run on mistral.rs for this model.
    pub generate: bool,
}

/// `[auth]` in the config file (keys also come from `--api-key` and `PEZ_API_KEYS`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub api_keys: Vec<String>,
    /// `/metrics` without a key (an orchestrator's scraper usually has none).
    pub public_metrics: bool,
    /// Serve without keys on an address other than loopback.
    pub allow_unauthenticated: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            api_keys: vec![],
            public_metrics: true,
            allow_unauthenticated: false,
        }
    }
}

/// `[tuning]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuningConfig {
    /// `local` (threads of this process) or `slurm` (batch jobs).
    pub runner: RunnerKind,
    /// Jobs running at once.
    pub max_running_jobs: usize,
    /// Jobs waiting at most; a job past them is refused with a 429.
    pub max_queued_jobs: usize,
    /// Largest file accepted for upload (bytes).
    pub max_file_bytes: u64,
    /// Upper bounds on a job's settings (compute it may ask for).
    pub max_steps: usize,
    pub max_batch_size: usize,
    pub max_prompt_len: usize,
    /// Threads a local job computes on (0: all cores).
    pub threads: usize,
    /// The local job's threads' nice value (19: they get the CPU only when classification leaves it).
    pub nice: i32,
    pub slurm: SlurmConfig,
}

impl Default for TuningConfig {
    fn default() -> Self {
        Self {
            runner: RunnerKind::Local,
            max_running_jobs: 1,
            max_queued_jobs: 16,
            max_file_bytes: 64 << 20,
            max_steps: 20_000,
            max_batch_size: 512,
            max_prompt_len: 64,
            threads: 0,
            nice: 19,
            slurm: SlurmConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, strum::EnumString, strum::Display, strum::VariantNames)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum RunnerKind {
    Local,
    Slurm,
}

/// `[tuning.slurm]`: how jobs are submitted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// The `pez` binary the batch job runs (default: the one beside `pez-serve`).
    pub pez: Option<PathBuf>,
    pub partition: Option<String>,
    /// More `sbatch` arguments (`--time=2:00:00`, `--cpus-per-task=8`, ...).
    pub sbatch_args: Vec<String>,
    /// Seconds between `sacct` polls.
    pub poll_s: u64,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            pez: None,
            partition: None,
            sbatch_args: vec![],
            poll_s: 3,
        }
    }
}
