//! A tuning run's configuration, resolved (see `TuneSettings::resolve`) and checked: written into every
//! `prompt.json` and checkpoint, read back by everything that reads them.

use anyhow::Result;
use pez_core::{Method, OptimizerKind};
use pez_tasks::{Calibration, RowRule};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TuneConfig {
    pub task: String,
    pub model: String,
    pub fluency: f64,
    pub prompt_len: usize,
    /// Optimisation steps; with `shots`, `epochs` passes over the few-shot set instead.
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    pub weight_decay: f64,
    pub eval_every: usize,
    pub holdout: usize,
    /// Which train rows the holdout is drawn from (`random` for runs written before the rule existed).
    #[serde(default)]
    pub holdout_rule: RowRule,
    /// Which of the other train rows the batches are drawn from (`random`, i.e. any, for older runs).
    #[serde(default)]
    pub train_rule: RowRule,
    /// Calibration of label scores for the holdout, the dev pass and the prompt's later use (recorded in
    /// `prompt.json`).
    #[serde(default)]
    pub calibration: Calibration,
    pub shots: Option<usize>,
    pub epochs: usize,
    pub method: Method,
    pub seed: u64,
    /// The prompt's first tokens. Runs written before the choice read their `random_init` switch here.
    #[serde(default, alias = "random_init", deserialize_with = "init_or_switch")]
    pub init: Init,
    /// Train file (default: the task's train split).
    pub train: Option<PathBuf>,
    /// Dev file scored with the best prompt at the end (default: the task's dev split); `skip_dev` skips it.
    pub dev: Option<PathBuf>,
    pub skip_dev: bool,
    pub eval_batch: usize,
    pub out: PathBuf,
    /// The vocabulary subset the prompt is made of (`all` for runs written before the choice existed).
    #[serde(default)]
    pub tokens: pez_hub::tokenizer::TokenSet,
    /// The dtype the model computed in (never `auto`: resolved on the machine that ran; `f32` for older runs).
    #[serde(default)]
    pub dtype: pez_nn::Dtype,
}

/// Where a prompt starts.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Init {
    /// The verbalizer tokens tiled to the prompt length (the paper's code).
    #[default]
    Label,
    /// The template's tokens tiled to the prompt length.
    Template,
    /// Allowed tokens drawn with the run's seed.
    Random,
}

/// `init` as written now, or the `random_init` switch of older runs.
fn init_or_switch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Init, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Init(Init),
        Switch(bool),
    }
    Ok(match Written::deserialize(d)? {
        Written::Init(i) => i,
        Written::Switch(true) => Init::Random,
        Written::Switch(false) => Init::Label,
    })
}

impl TuneConfig {
    /// Every check that needs no model or data: refused before anything is loaded.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(anyhow::Error::from)
    }

    /// `validate`, saying which setting is at fault.
    pub fn check(&self) -> std::result::Result<(), Invalid> {
        let bad = |setting: &'static str, message: String| Err(Invalid { setting, message });
        let counts = [
            ("prompt_len", self.prompt_len),
            ("batch_size", self.batch_size),
            ("eval_every", self.eval_every),
            ("eval_batch", self.eval_batch),
        ];
        for (setting, v) in counts {
            if v == 0 {
                return bad(
                    setting,
                    "--prompt-len, --batch-size, --eval-every and --eval-batch must be positive".into(),
                );
            }
        }
        if !(0.0..=1.0).contains(&self.fluency) {
            return bad("fluency", format!("--fluency must be in [0, 1], got {}", self.fluency));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", format!("--lr must be a positive number, got {}", self.lr));
        }
        if self.shots == Some(0) {
            return bad("shots", "--shots must be positive".into());
        }
        if self.shots.is_some() && (self.holdout_rule, self.train_rule) != (RowRule::Random, RowRule::Random) {
            let why = "--holdout-rule and --train-rule pick rows of a full train split; --shots draws K examples per \
                       class from all rows";
            return bad("holdout_rule", why.into());
        }
        if self.shots.is_some() && self.epochs == 0 || self.shots.is_none() && self.steps == 0 {
            return bad(
                "steps",
                "nothing to run: --steps (or --epochs with --shots) is 0".into(),
            );
        }
        Ok(())
    }
}

/// A setting out of its range, named.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub setting: &'static str,
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Invalid {}
