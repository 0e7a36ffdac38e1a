//! The settings of a tuning run as a user gives them, every one optional, and `resolve`, the one place their
//! defaults are filled in.
//!
//! The list of settings is written once, in `for_each_setting!`: `TuneSettings` is declared from it here (serde:
//! sweep files, the server's tuning jobs) and `pez tune`'s flags in the `pez` binary (clap, which no library
//! depends on). A new setting is one entry there and one line in `resolve`.

use crate::TuneConfig;
use anyhow::{Context, Result};
use pez_core::{Method, OptimizerKind};
use pez_tasks::{Calibration, RowRule, TaskSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Hands the list of a run's settings to the macro `$then`: first the settings that take a value (doc and type),
/// then `;` and the switches (doc, name; `true` when given). `task` and `dtype` are not in it: `pez tune` takes
/// the task as its argument and the dtype with its device (`--dtype`, `--device`), so `TuneSettings` declares them
/// itself.
#[macro_export]
macro_rules! for_each_setting {
    ($then:ident) => {
        $then! {
            /// Source model: smollm2-135m, gemma3-270m, a hub name (gpt2-large), a GGUF file or a Hugging Face
            /// directory.
            model: String,
            /// Weight w of the fluency term: loss = (1 - w) * label CE + w * fluency, w in [0, 1].
            fluency: f64,
            /// Prompt tokens to learn.
            prompt_len: usize,
            /// Optimisation steps (with --shots, --epochs instead).
            steps: usize,
            /// Training examples per step.
            batch_size: usize,
            /// Learning rate (default 0.3 for Adafactor, 0.1 for AdamW).
            lr: f64,
            /// adafactor or adamw.
            optimizer: $crate::OptimizerKind,
            /// AdamW weight decay.
            weight_decay: f64,
            /// Steps between holdout evaluations. PEZ's hard prompt wanders rather than climbs (in 10 of 15 SST-2
            /// runs the best holdout accuracy came at or before step 100 of 150-300), so the best prompt is found by
            /// looking often.
            eval_every: usize,
            /// Training examples held out to pick the best prompt (ignored with --shots).
            holdout: usize,
            /// Which train rows the holdout is drawn from: random (the paper), or long (rows of 10+ words, like the
            /// whole sentences of SST-2's dev and test). Default: the task's rule (SST-2: long; the other tasks and
            /// --shots: random).
            holdout_rule: $crate::RowRule,
            /// Which of the other train rows the batches are drawn from: random or long. Default: as
            /// --holdout-rule.
            train_rule: $crate::RowRule,
            /// Label calibration for the holdout, the dev pass and the prompt's later use: none, or content-free
            /// (Zhao et al. 2021; recorded in prompt.json).
            calibration: $crate::Calibration,
            /// Few-shot: K examples per class to train on and another K per class as the holdout.
            shots: usize,
            /// Passes over the few-shot set (with --shots).
            epochs: usize,
            /// pez, autoprompt-sgd, fluentprompt or soft.
            method: $crate::Method,
            /// Seed of the holdout draw, the batches and any random start.
            seed: u64,
            /// Training data file (default: the task's train split).
            train: std::path::PathBuf,
            /// Dev data file scored at the end (default: the task's dev split).
            dev: std::path::PathBuf,
            /// Texts per forward pass when scoring the holdout and dev.
            eval_batch: usize,
            /// Run directory (default runs/<task>-<method>-s<seed>).
            out: std::path::PathBuf,
            /// The tokens a prompt may be made of: all (readable, not special), printable (also no control
            /// characters, no whitespace-only or byte-fallback pieces) or words (printable, a space-led run of
            /// letters).
            tokens: $crate::TokenSet,
            /// The prompt's first tokens: label (the verbalizers tiled to the prompt length, as the paper's code),
            /// template (the template's tokens tiled) or random (allowed tokens drawn with the seed).
            init: $crate::Init,
            ;
            /// Do not score the dev set at the end.
            skip_dev,
            /// The paper's protocol: batch 32, 5,000 steps, a random 5,000-example holdout scored every 100 steps,
            /// no calibration (over those settings).
            paper,
        }
    };
}

macro_rules! declare_settings {
    ($($(#[$doc:meta])* $name:ident: $ty:ty,)* ; $($(#[$sdoc:meta])* $switch:ident,)*) => {
        /// A tuning run's settings as given; what is not given is `resolve`d.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct TuneSettings {
            /// sst2, amazon, agnews, or a task .toml file.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub task: Option<String>,
            /// f32, bf16 or auto (bf16 where the CPU has bf16 units, f32 on a GPU).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub dtype: Option<pez_nn::Dtype>,
            $($(#[$doc])* #[serde(default, skip_serializing_if = "Option::is_none")] pub $name: Option<$ty>,)*
            $($(#[$sdoc])* #[serde(default, skip_serializing_if = "Option::is_none")] pub $switch: Option<bool>,)*
        }

        impl TuneSettings {
            /// Every setting's name, as files and requests write it.
            pub const NAMES: &[&str] = &["task", "dtype", $(stringify!($name),)* $(stringify!($switch),)*];

            /// These settings over `base`: each one given here wins.
            pub fn over(self, base: Self) -> Self {
                Self {
                    task: self.task.or(base.task),
                    dtype: self.dtype.or(base.dtype),
                    $($name: self.$name.or(base.$name),)*
                    $($switch: self.$switch.or(base.$switch),)*
                }
            }
        }
    };
}

for_each_setting!(declare_settings);

impl TuneSettings {
    /// The configuration these settings ask for, on `device`: each setting not given takes its default, some from
    /// the task (its row rule) and the device (`auto` dtype); then checked.
    pub fn resolve(&self, device: &candle_core::Device) -> Result<TuneConfig> {
        let task = self.task.clone().unwrap_or_else(|| "sst2".into());
        let (method, seed, optimizer) = (
            self.method.unwrap_or(Method::Pez),
            self.seed.unwrap_or(0),
            self.optimizer.unwrap_or(OptimizerKind::Adafactor),
        );
        // By default the task's rows that look like its evaluation data (SST-2: long rows;
        // evals/sst2/holdout-study); few-shot sets are drawn from all rows.
        let rule = match self.shots {
            Some(_) => RowRule::Random,
            None => TaskSpec::resolve(&task).context("setting `task`")?.rows,
        };
        let mut cfg = TuneConfig {
            out: self.out.clone().unwrap_or_else(|| default_out(&task, method, seed)),
            model: self.model.clone().unwrap_or_else(|| "smollm2-135m".into()),
            fluency: self.fluency.unwrap_or(0.0),
            prompt_len: self.prompt_len.unwrap_or(10),
            steps: self.steps.unwrap_or(200),
            batch_size: self.batch_size.unwrap_or(16),
            lr: self.lr.unwrap_or(default_lr(optimizer)),
            optimizer,
            weight_decay: self.weight_decay.unwrap_or(0.1),
            eval_every: self.eval_every.unwrap_or(25),
            holdout: self.holdout.unwrap_or(500),
            holdout_rule: self.holdout_rule.unwrap_or(rule),
            train_rule: self.train_rule.unwrap_or(rule),
            calibration: self.calibration.unwrap_or_default(),
            shots: self.shots,
            epochs: self.epochs.unwrap_or(100),
            method,
            seed,
            init: self.init.unwrap_or_default(),
            train: self.train.clone(),
            dev: self.dev.clone(),
            skip_dev: self.skip_dev.unwrap_or(false),
            eval_batch: self.eval_batch.unwrap_or(32),
            tokens: self.tokens.unwrap_or_default(),
            dtype: self.dtype.unwrap_or(pez_nn::Dtype::Auto).resolve_on(device),
            task,
        };
        if self.paper == Some(true) {
            (cfg.batch_size, cfg.steps, cfg.holdout, cfg.eval_every) = (32, 5000, 5000, 100);
            (cfg.holdout_rule, cfg.train_rule, cfg.calibration) = (RowRule::Random, RowRule::Random, Calibration::None);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The names of the settings given (not `None`), in `NAMES` order.
    pub fn given(&self) -> Vec<&'static str> {
        let v = serde_json::to_value(self).expect("settings serialize");
        Self::NAMES.iter().copied().filter(|n| v.get(n).is_some()).collect()
    }
}

/// A resolved configuration as settings, every one given: resolving them again gives the same configuration
/// (`pez tune --settings` of a run's own configuration reruns it).
impl From<&TuneConfig> for TuneSettings {
    fn from(c: &TuneConfig) -> Self {
        Self {
            task: Some(c.task.clone()),
            dtype: Some(c.dtype),
            model: Some(c.model.clone()),
            fluency: Some(c.fluency),
            prompt_len: Some(c.prompt_len),
            steps: Some(c.steps),
            batch_size: Some(c.batch_size),
            lr: Some(c.lr),
            optimizer: Some(c.optimizer),
            weight_decay: Some(c.weight_decay),
            eval_every: Some(c.eval_every),
            holdout: Some(c.holdout),
            holdout_rule: Some(c.holdout_rule),
            train_rule: Some(c.train_rule),
            calibration: Some(c.calibration),
            shots: c.shots,
            epochs: Some(c.epochs),
            method: Some(c.method),
            seed: Some(c.seed),
            train: c.train.clone(),
            dev: c.dev.clone(),
            eval_batch: Some(c.eval_batch),
            out: Some(c.out.clone()),
            tokens: Some(c.tokens),
            init: Some(c.init),
            skip_dev: Some(c.skip_dev),
            paper: None,
        }
    }
}

/// The learning rate an optimizer is used with unless one is given: the paper's 0.3 for Adafactor (text), 0.1 for
/// AdamW (its image-inversion setting).
pub fn default_lr(optimizer: OptimizerKind) -> f64 {
    match optimizer {
        OptimizerKind::Adafactor => 0.3,
        OptimizerKind::Adamw => 0.1,
    }
}

/// The default run directory: `runs/<task>-<method>-s<seed>`.
fn default_out(task: &str, method: Method, seed: u64) -> PathBuf {
    PathBuf::from(format!("runs/{}-{method}-s{seed}", task.trim_end_matches(".toml")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn defaults_come_from_the_task_and_the_optimizer() {
        let c = TuneSettings::default().resolve(&Device::Cpu).unwrap();
        assert_eq!((c.task.as_str(), c.model.as_str()), ("sst2", "smollm2-135m"));
        assert_eq!(
            (c.steps, c.batch_size, c.holdout, c.eval_every, c.prompt_len),
            (200, 16, 500, 25, 10)
        );
        // SST-2 draws its holdout and batches from long rows; AG News from any row; few-shot always from any row.
        assert_eq!((c.holdout_rule, c.train_rule), (RowRule::Long, RowRule::Long));
        let ag = TuneSettings {
            task: Some("agnews".into()),
            ..Default::default()
        };
        assert_eq!(ag.resolve(&Device::Cpu).unwrap().holdout_rule, RowRule::Random);
        let shots = TuneSettings {
            shots: Some(4),
            ..Default::default()
        };
        assert_eq!(shots.resolve(&Device::Cpu).unwrap().train_rule, RowRule::Random);
        assert_eq!(c.lr, 0.3);
        let adamw = TuneSettings {
            optimizer: Some(OptimizerKind::Adamw),
            ..Default::default()
        };
        assert_eq!(adamw.resolve(&Device::Cpu).unwrap().lr, 0.1);
        assert_eq!(c.out, PathBuf::from("runs/sst2-pez-s0"));
        assert_ne!(c.dtype, pez_nn::Dtype::Auto, "auto is resolved on the device");
    }

    #[test]
    fn given_settings_win_and_the_paper_protocol_overrides_its_own() {
        let s = TuneSettings {
            steps: Some(7),
            lr: Some(0.05),
            holdout_rule: Some(RowRule::Random),
            fluency: Some(0.003),
            ..Default::default()
        };
        let c = s.resolve(&Device::Cpu).unwrap();
        assert_eq!(
            (c.steps, c.lr, c.holdout_rule, c.fluency),
            (7, 0.05, RowRule::Random, 0.003)
        );
        assert_eq!(c.train_rule, RowRule::Long);
        let paper = TuneSettings { paper: Some(true), ..s }.resolve(&Device::Cpu).unwrap();
        assert_eq!(
            (paper.steps, paper.batch_size, paper.holdout, paper.eval_every),
            (5000, 32, 5000, 100)
        );
        assert_eq!(paper.fluency, 0.003);
    }

    #[test]
    fn a_configuration_as_settings_resolves_to_itself() {
        let given = TuneSettings {
            task: Some("agnews".into()),
            steps: Some(7),
            shots: Some(2),
            ..Default::default()
        };
        let c = given.resolve(&Device::Cpu).unwrap();
        let again = TuneSettings::from(&c).resolve(&Device::Cpu).unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), serde_json::to_value(&c).unwrap());
    }

    #[test]
    fn unknown_settings_are_refused_and_given_ones_named() {
        let err = toml::from_str::<TuneSettings>("stepz = 3").unwrap_err().to_string();
        assert!(err.contains("unknown field `stepz`"), "{err}");
        let s: TuneSettings = toml::from_str("steps = 3\ninit = \"random\"\ntokens = \"words\"").unwrap();
        assert_eq!(s.given(), ["steps", "tokens", "init"]);
        let over = TuneSettings {
            steps: Some(9),
            fluency: Some(0.1),
            ..Default::default()
        }
        .over(s.clone());
        assert_eq!(
            (over.steps, over.fluency, over.init),
            (Some(9), Some(0.1), Some(crate::Init::Random))
        );
        assert!(TuneSettings {
            fluency: Some(2.0),
            ..s
        }
        .resolve(&Device::Cpu)
        .is_err());
    }
}
