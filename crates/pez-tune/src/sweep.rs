//! Best-of-N, the paper's answer to seed variance: N seeds run one after another, each in its own run directory
//! (`<root>/s<seed>`: resumed if a checkpoint is there, skipped if finished), then a summary of every seed and
//! the top prompts by holdout accuracy, in `<root>/summary.json` and `<root>/summary.md`; with an ensemble size,
//! the best prompts by holdout as one classifier in `<root>/ensemble.json`, scored on dev.

use crate::run::RunDir;
use anyhow::Result;
use pez_classify::{evaluate, Ensemble};
use pez_config::write_atomic;
use pez_config::PromptArtifact;
use pez_config::TuneConfig;
use pez_config::{EnsembleArtifact, ENSEMBLE_FILE};
use pez_models::load_lm;
use pez_report::{code, mean_std, pct, pm, Table};
use pez_tasks::TaskSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeedResult {
    pub seed: u64,
    pub dir: PathBuf,
    pub prompt: String,
    pub holdout_accuracy: Option<f64>,
    pub dev_accuracy: Option<f64>,
    /// Dev accuracy of each class.
    pub dev_per_class: Option<Vec<f64>>,
    pub wall_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub runs: Vec<SeedResult>,
    /// Dev accuracy over the seeds: (mean, sample standard deviation).
    pub dev_mean_std: Option<(f64, f64)>,
    /// The `top` seeds by holdout accuracy (ties: lower seed first).
    pub top: Vec<u64>,
    /// Dev accuracy of those (mean, std).
    pub top_dev_mean_std: Option<(f64, f64)>,
    pub wall_s: f64,
}

impl SeedResult {
    /// The finished run of `seed` in `dir` (its prompt.json and checkpoint).
    pub fn read(seed: u64, dir: &Path) -> Result<Self> {
        let a = PromptArtifact::read(dir)?;
        let wall_s = crate::run::wall_seconds(dir);
        let dev_per_class = a
            .dev_per_class
            .as_ref()
            .map(|v| v.iter().map(|&(k, t)| k as f64 / t.max(1) as f64).collect());
        Ok(Self {
            seed,
            dir: dir.to_path_buf(),
            prompt: a.prompt,
            holdout_accuracy: a.holdout_accuracy,
            dev_accuracy: a.dev_accuracy,
            dev_per_class,
            wall_s,
        })
    }
}

/// Runs seeds `base.seed .. base.seed + n` under `root` and writes the summary. A run already there is kept
/// (finished) or resumed (started) only if it agrees with `base` on the `compared` settings (`RunDir::check_is`).
pub fn sweep(
    base: &TuneConfig,
    compared: &[&str],
    n: u64,
    root: &Path,
    top: usize,
    device: &candle_core::Device,
) -> Result<Summary> {
    let mut runs = vec![];
    for seed in base.seed..base.seed + n {
        let dir = root.join(format!("s{seed}"));
        let held = RunDir::read(&dir);
        let ours = TuneConfig {
            seed,
            out: dir.clone(),
            ..base.clone()
        };
        held.check_is(&dir, &ours, compared, "give its settings, or another --out")?;
        match held {
            RunDir::Finished { checkpoint: true, .. } => eprintln!("seed {seed}: finished in {}, kept", dir.display()),
            RunDir::Finished { .. } => eprintln!("seed {seed}: finished in {} (its prompt.json), kept", dir.display()),
            RunDir::Started(_) => {
                eprintln!("seed {seed}: resuming {}", dir.display());
                crate::tune(None, Some(&dir), device)?;
            }
            RunDir::Missing => {
                crate::tune(Some(ours), None, device)?;
            }
        }
        runs.push(SeedResult::read(seed, &dir)?);
    }
    let s = summarize(runs, top);
    write_atomic(&root.join("summary.json"), serde_json::to_string_pretty(&s)?.as_bytes())?;
    write_atomic(&root.join("summary.md"), markdown(&s).as_bytes())?;
    Ok(s)
}

/// The `k` best runs of a sweep by holdout accuracy as one classifier: `<root>/ensemble.json`, written with the
/// ensemble's dev accuracy (scored as `pez eval` scores it) unless the runs skipped dev. The members are
/// calibrated as `base` says.
pub fn ensemble(
    base: &TuneConfig,
    s: &Summary,
    root: &Path,
    k: usize,
    device: &candle_core::Device,
) -> Result<EnsembleArtifact> {
    let runs: Vec<(u64, PathBuf)> = s.runs.iter().map(|r| (r.seed, r.dir.clone())).collect();
    let mut e = EnsembleArtifact::choose(&runs, k, root, base.calibration)?;
    let path = root.join(ENSEMBLE_FILE);
    e.write(&path)?;
    if !base.skip_dev {
        let lm = load_lm(&base.model, base.dtype.candle(), device)?;
        let task = TaskSpec::resolve(&base.task)?;
        let dev = task.load("dev", base.dev.as_deref())?.examples;
        let p = Ensemble::load(&path, &lm, None)?;
        let mut progress = pez_progress::Progress::new("ensemble dev", "examples", dev.len() as u64);
        let acc = evaluate(&p, &dev, task.num_labels(), base.eval_batch, &mut |n| {
            progress.inc(n as u64)
        })?
        .accuracy;
        progress.finish();
        e.dev_accuracy = Some(acc.accuracy);
        e.dev_per_class = Some(acc.per_class);
        e.write(&path)?;
    }
    Ok(e)
}

/// Best-of-N over `runs`: dev mean and std over all, and over the `top` by holdout accuracy.
pub fn summarize(runs: Vec<SeedResult>, top: usize) -> Summary {
    let mut by_holdout: Vec<&SeedResult> = runs.iter().collect();
    by_holdout.sort_by(|x, y| {
        y.holdout_accuracy
            .unwrap_or(0.0)
            .total_cmp(&x.holdout_accuracy.unwrap_or(0.0))
            .then(x.seed.cmp(&y.seed))
    });
    by_holdout.truncate(top);
    let dev = |rs: &[&SeedResult]| mean_std(&rs.iter().filter_map(|r| r.dev_accuracy).collect::<Vec<_>>());
    Summary {
        dev_mean_std: dev(&runs.iter().collect::<Vec<_>>()),
        top: by_holdout.iter().map(|r| r.seed).collect(),
        top_dev_mean_std: dev(&by_holdout),
        wall_s: runs.iter().map(|r| r.wall_s).sum(),
        runs,
    }
}

pub fn markdown(s: &Summary) -> String {
    let mut t = Table::new(&["seed", "holdout", "dev", "dev per class", "wall (s)", "prompt"]);
    for r in &s.runs {
        let per = r.dev_per_class.as_ref().map_or("–".into(), |v| {
            v.iter()
                .map(|x| format!("{:.1}", x * 100.0))
                .collect::<Vec<_>>()
                .join(" / ")
        });
        t.row([
            r.seed.to_string(),
            pct(r.holdout_accuracy),
            pct(r.dev_accuracy),
            per,
            format!("{:.0}", r.wall_s),
            code(&r.prompt),
        ]);
    }
    format!(
        "{}\nDev accuracy over {} seeds: {} (mean ± std). Top {} by holdout (seeds {:?}): {}. Wall time {:.0} s.\n",
        t.finish(),
        s.runs.len(),
        pm(s.dev_mean_std),
        s.top.len(),
        s.top,
        pm(s.top_dev_mean_std),
        s.wall_s
    )
}
