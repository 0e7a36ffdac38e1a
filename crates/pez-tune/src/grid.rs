//! Sweeps as job arrays: a TOML file names a grid of `pez tune` settings; each cell has a stable index and its own
//! run directory, so any scheduler that hands out indices (a Slurm array, a Kubernetes Indexed Job, a shell loop)
//! runs it. A cell resumes exactly from its checkpoint when run again (preempted, requeued) and never runs twice
//! at once (a lock in its directory); the summary gathers whatever is finished and names the rest.
//!
//! ```toml
//! out = "runs/fluency"          # relative to this file
//! top = 5                        # best-of-N, as `pez tune --seeds`
//! [base]                         # every cell: any `pez tune` setting (snake_case or the flag's kebab-case)
//! steps = 200
//! [grid]                         # the cells: every combination of these lists
//! fluency = [0.0, 0.003, 0.01]
//! seed = [0, 1, 2]
//! ```
//!
//! Cells are numbered over the grid's keys in name order (`seed` last, so a setting's seeds are neighbours) and
//! each list in its written order: comments, spacing and the order of keys do not move an index.

use crate::run::RunDir;
use crate::sweep::{self, SeedResult, Summary};
use anyhow::{bail, Context, Result};
use pez_tasks::artifact::write_atomic;
use pez_tasks::TuneConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    out: PathBuf,
    #[serde(default = "default_top")]
    top: usize,
    #[serde(default)]
    base: toml::Table,
    grid: toml::Table,
}

fn default_top() -> usize {
    5
}

/// A sweep read and checked: every cell's configuration is built before anything runs.
#[derive(Debug)]
pub struct Sweep {
    pub file: PathBuf,
    /// Where the cells' run directories and the summary go.
    pub out: PathBuf,
    pub top: usize,
    /// The grid's keys, in cell order.
    pub keys: Vec<String>,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone)]
pub struct Cell {
    pub index: usize,
    /// The grid's value for each of `Sweep::keys`.
    pub values: Vec<toml::Value>,
    /// Its run directory's name under `Sweep::out`.
    pub name: String,
    pub config: TuneConfig,
    /// Settings the file gives (base and grid): a checkpoint in the cell's directory must agree on them.
    given: Vec<String>,
}

/// A cell's state on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Status {
    Finished,
    /// A checkpoint, not finished: running now, or stopped (it resumes when run again).
    Started,
    Failed,
    Missing,
}

impl Sweep {
    pub fn read(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading sweep file {}", file.display()))?;
        let f: SweepFile = toml::from_str(&text).with_context(|| format!("parsing sweep file {}", file.display()))?;
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
        let known = known_settings();
        let norm = |k: &str| k.replace('-', "_");
        for (section, table) in [("base", &f.base), ("grid", &f.grid)] {
            for k in table.keys() {
                if norm(k) == "out" {
                    bail!(
                        "{}: [{section}] sets `out`: each cell's run directory is chosen by the sweep (under `out`)",
                        file.display()
                    );
                }
                if !known.contains(&norm(k)) {
                    bail!(
                        "{}: unknown setting `{k}` in [{section}]: pez tune's settings are {}",
                        file.display(),
                        known.join(", ")
                    );
                }
            }
        }
        if let Some(k) = f.grid.keys().find(|k| f.base.keys().any(|b| norm(b) == norm(k))) {
            bail!("{}: `{k}` is in both [base] and [grid]", file.display());
        }
        let mut grid: Vec<(String, Vec<toml::Value>)> = vec![];
        for (k, v) in &f.grid {
            let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
                bail!("{}: [grid] `{k}` must be a non-empty list", file.display())
            };
            grid.push((norm(k), list.clone()));
        }
        grid.sort_by(|(a, _), (b, _)| (a == "seed", a).cmp(&(b == "seed", b)));
        let keys: Vec<String> = grid.iter().map(|(k, _)| k.clone()).collect();
        let base: Vec<(String, toml::Value)> = f.base.iter().map(|(k, v)| (norm(k), v.clone())).collect();
        let out: PathBuf = dir.join(&f.out).components().collect(); // `out = "."` is the file's own folder
        let mut cells = vec![];
        let n = grid.iter().map(|(_, l)| l.len()).product::<usize>();
        for index in 0..n {
            // Mixed radix, the last key fastest.
            let (mut rest, mut values) = (index, vec![toml::Value::Boolean(false); keys.len()]);
            for (i, (_, list)) in grid.iter().enumerate().rev() {
                values[i] = list[rest % list.len()].clone();
                rest /= list.len();
            }
            let name = cell_name(&keys, &values);
            let settings: Vec<(String, toml::Value)> = base
                .iter()
                .cloned()
                .chain(keys.iter().cloned().zip(values.iter().cloned()))
                .collect();
            let config = cell_config(&settings, &dir, &out.join(&name))
                .with_context(|| format!("{}: cell {index} ({name})", file.display()))?;
            cells.push(Cell {
                index,
                values,
                name,
                config,
                given: settings.into_iter().map(|(k, _)| k).collect(),
            });
        }
        let mut seen = std::collections::HashMap::new();
        for c in &cells {
            if let Some(other) = seen.insert(c.name.clone(), c.index) {
                bail!("{}: cells {other} and {} would share the run directory {}: make their [grid] values differ by more than \
                       punctuation", file.display(), c.index, out.join(&c.name).display());
            }
        }
        Ok(Self {
            file: file.to_path_buf(),
            out,
            top: f.top,
            keys,
            cells,
        })
    }

    pub fn cell(&self, index: usize) -> Result<&Cell> {
        self.cells.get(index).with_context(|| {
            format!(
                "index {index} is out of range: {} has {} cells (0..={})",
                self.file.display(),
                self.cells.len(),
                self.cells.len().saturating_sub(1)
            )
        })
    }

    pub fn dir(&self, c: &Cell) -> PathBuf {
        self.out.join(&c.name)
    }

    pub fn status(&self, c: &Cell) -> Status {
        let dir = self.dir(c);
        match RunDir::read(&dir) {
            RunDir::Finished { checkpoint: true, .. } => Status::Finished,
            _ if dir.join(ERROR_FILE).exists() => Status::Failed,
            RunDir::Started(_) => Status::Started,
            RunDir::Finished { .. } => Status::Finished,
            RunDir::Missing => Status::Missing,
        }
    }
}

/// Every setting a sweep may give: `TuneConfig`'s fields but `out`.
fn known_settings() -> Vec<String> {
    let v = serde_json::to_value(TuneConfig::default()).expect("TuneConfig serialises");
    v.as_object()
        .expect("an object")
        .keys()
        .filter(|k| *k != "out")
        .cloned()
        .collect()
}

/// A directory name from a cell's values: `s<seed>` for the seed (as `pez tune --seeds` names its runs), else
/// `<key><value>` with anything but letters, digits, `.` and `_` made `_`; parts joined by `-`.
fn cell_name(keys: &[String], values: &[toml::Value]) -> String {
    let text = |v: &toml::Value| match v {
        toml::Value::String(s) => Path::new(s)
            .file_stem()
            .map_or(s.clone(), |f| f.to_string_lossy().into_owned()),
        other => other.to_string(),
    };
    let clean = |s: String| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    let parts: Vec<String> = keys
        .iter()
        .zip(values)
        .map(|(k, v)| {
            if k == "seed" {
                format!("s{}", text(v))
            } else {
                clean(format!("{k}{}", text(v)))
            }
        })
        .collect();
    parts.join("-")
}

/// `pez tune`'s defaults with `settings` over them, as the CLI resolves them (the optimizer's learning rate, the
/// task's row rules, `auto` dtype on this machine); relative paths that exist beside the sweep file are taken
/// from there.
fn cell_config(settings: &[(String, toml::Value)], dir: &Path, out: &Path) -> Result<TuneConfig> {
    let mut v = serde_json::to_value(TuneConfig {
        dtype: pez_nn::Dtype::Auto,
        ..TuneConfig::default()
    })?;
    let obj = v.as_object_mut().expect("an object");
    for (k, val) in settings {
        let mut j = serde_json::to_value(val)?;
        if let Value::String(s) = &j {
            if ["task", "model", "train", "dev"].contains(&k.as_str())
                && Path::new(s).is_relative()
                && dir.join(s).exists()
            {
                j = Value::String(dir.join(s).to_string_lossy().into_owned());
            }
        }
        obj.insert(k.clone(), j);
    }
    obj.insert("out".into(), Value::String(out.to_string_lossy().into_owned()));
    let given = |k: &str| settings.iter().any(|(s, _)| s == k);
    let mut cfg: TuneConfig =
        serde_path_to_error::deserialize(v).map_err(|e| anyhow::anyhow!("setting `{}`: {}", e.path(), e.inner()))?;
    if !given("lr") {
        cfg.lr = TuneConfig::default_lr(cfg.optimizer);
    }
    let rule = TuneConfig::default_rule(&cfg.task, cfg.shots).context("setting `task`")?;
    if !given("holdout_rule") {
        cfg.holdout_rule = rule;
    }
    if !given("train_rule") {
        cfg.train_rule = rule;
    }
    cfg.dtype = cfg.dtype.resolve();
    cfg.validate()?;
    Ok(cfg)
}

/// What a failed cell leaves in its directory (removed when it later finishes).
pub const ERROR_FILE: &str = "error.txt";

/// Runs cell `index` into its directory: kept if finished, resumed from its checkpoint if started, else begun.
/// Only one process runs a cell at a time (a lock in its directory); a failure leaves `error.txt` there.
pub fn run_cell(sweep: &Sweep, index: usize, device: &candle_core::Device) -> Result<Status> {
    let c = sweep.cell(index)?;
    let dir = sweep.dir(c);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = std::fs::File::create(dir.join(".lock"))
        .with_context(|| format!("creating {}", dir.join(".lock").display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "cell {index} ({}) is being run by another process (its lock {} is held)",
            c.name,
            dir.join(".lock").display()
        );
    }
    let result = run_locked(c, &dir, device);
    match &result {
        Ok(_) => {
            let _ = std::fs::remove_file(dir.join(ERROR_FILE));
        }
        Err(e) => write_atomic(
            &dir.join(ERROR_FILE),
            format!("cell {index} ({}) failed: {e:#}\n", c.name).as_bytes(),
        )?,
    }
    result
}

fn run_locked(c: &Cell, dir: &Path, device: &candle_core::Device) -> Result<Status> {
    let held = RunDir::read(dir);
    let theirs = match &held {
        RunDir::Started(ck) => Some(ck.config()),
        RunDir::Finished { config, .. } => Some(config),
        RunDir::Missing => None,
    };
    if let Some(theirs) = theirs {
        let (theirs, ours) = (serde_json::to_value(theirs)?, serde_json::to_value(&c.config)?);
        if let Some(k) = c
            .given
            .iter()
            .find(|k| *k != "dtype" && theirs.get(k.as_str()) != ours.get(k.as_str()))
        {
            bail!(
                "{} holds a run whose `{k}` is {}, not the sweep's {}: move it away, or restore the sweep file",
                dir.display(),
                theirs[k.as_str()],
                ours[k.as_str()]
            );
        }
    }
    match held {
        RunDir::Finished { checkpoint: true, .. } => {
            eprintln!("cell {} ({}): finished in {}, kept", c.index, c.name, dir.display())
        }
        RunDir::Finished { .. } => eprintln!(
            "cell {} ({}): finished in {} (its prompt.json; no checkpoint), kept",
            c.index,
            c.name,
            dir.display()
        ),
        RunDir::Started(_) => {
            eprintln!("cell {} ({}): resuming {}", c.index, c.name, dir.display());
            crate::tune(None, Some(dir), device)?;
        }
        RunDir::Missing => {
            eprintln!("cell {} ({}): starting in {}", c.index, c.name, dir.display());
            // `auto` (the dtype not given) is decided where the cell runs: a GPU computes in f32.
            let dtype = if c.given.iter().any(|k| k == "dtype") {
                c.config.dtype
            } else {
                pez_nn::Dtype::Auto.resolve_on(device)
            };
            crate::tune(
                Some(TuneConfig {
                    dtype,
                    ..c.config.clone()
                }),
                None,
                device,
            )?;
        }
    }
    Ok(Status::Finished)
}

/// One cell in the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellRow {
    pub index: usize,
    pub name: String,
    /// The grid's values (`Summary::keys` order), as TOML writes them.
    pub values: Vec<String>,
    pub status: Status,
    pub result: Option<SeedResult>,
    /// The first line of `error.txt` for a failed cell.
    pub error: Option<String>,
}

/// Cells that differ only by seed, summarised as `pez tune --seeds` does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    /// The grid's values but the seed.
    pub values: Vec<String>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GridSummary {
    pub keys: Vec<String>,
    pub cells: Vec<CellRow>,
    pub groups: Vec<Group>,
}

/// Gathers every cell (finished, started, failed, missing) and, per setting, its finished seeds; writes
/// `summary.json`, `summary.md` and `summary.svg` under the sweep's `out`.
pub fn summarize(sweep: &Sweep) -> Result<GridSummary> {
    let mut cells = vec![];
    for c in &sweep.cells {
        let status = sweep.status(c);
        let result = match status {
            Status::Finished => Some(SeedResult::read(c.config.seed, &sweep.dir(c))?),
            _ => None,
        };
        let error = (status == Status::Failed)
            .then(|| std::fs::read_to_string(sweep.dir(c).join(ERROR_FILE)).ok())
            .flatten()
            .map(|e| e.lines().next().unwrap_or("").to_string());
        cells.push(CellRow {
            index: c.index,
            name: c.name.clone(),
            values: c.values.iter().map(|v| v.to_string()).collect(),
            status,
            result,
            error,
        });
    }
    let seed_at = sweep.keys.iter().position(|k| k == "seed");
    let without_seed = |vals: &[String]| {
        vals.iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != seed_at)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let mut groups: Vec<Group> = vec![];
    for row in &cells {
        let values = without_seed(&row.values);
        if !groups.iter().any(|g| g.values == values) {
            let runs: Vec<SeedResult> = cells
                .iter()
                .filter(|r| without_seed(&r.values) == values)
                .filter_map(|r| r.result.clone())
                .collect();
            groups.push(Group {
                values,
                summary: sweep::summarize(runs, sweep.top),
            });
        }
    }
    let s = GridSummary {
        keys: sweep.keys.clone(),
        cells,
        groups,
    };
    std::fs::create_dir_all(&sweep.out)?;
    write_atomic(
        &sweep.out.join("summary.json"),
        serde_json::to_string_pretty(&s)?.as_bytes(),
    )?;
    write_atomic(&sweep.out.join("summary.md"), markdown(&s).as_bytes())?;
    write_atomic(&sweep.out.join("summary.svg"), svg(&s)?.as_bytes())?;
    Ok(s)
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.2}", v * 100.0))
}

pub fn markdown(s: &GridSummary) -> String {
    let mut out = format!(
        "| cell | {} | status | holdout | dev | prompt |\n|---|{}---|---|---|---|\n",
        s.keys.join(" | "),
        "---|".repeat(s.keys.len())
    );
    for c in &s.cells {
        let r = c.result.as_ref();
        let prompt = r.map_or_else(
            || c.error.clone().unwrap_or_default(),
            |r| {
                format!(
                    "`{}`",
                    r.prompt
                        .replace('|', "\\|")
                        .replace('`', "'")
                        .replace('\n', "\\n")
                        .replace('\t', "\\t")
                )
            },
        );
        out += &format!(
            "| {} | {} | {} | {} | {} | {prompt} |\n",
            c.index,
            c.values.join(" | "),
            c.status,
            pct(r.and_then(|r| r.holdout_accuracy)),
            pct(r.and_then(|r| r.dev_accuracy))
        );
    }
    let counts: Vec<String> = [Status::Finished, Status::Started, Status::Failed, Status::Missing]
        .iter()
        .map(|st| format!("{} {st}", s.cells.iter().filter(|c| c.status == *st).count()))
        .collect();
    out += &format!("\n{} cells: {}.\n\n", s.cells.len(), counts.join(", "));
    let keys: Vec<&String> = s.keys.iter().filter(|k| *k != "seed").collect();
    out += &format!(
        "| {} | seeds done | dev mean ± std | top by holdout: dev |\n|{}---|---|---|\n",
        if keys.is_empty() {
            "setting".into()
        } else {
            keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(" | ")
        },
        "---|".repeat(keys.len().max(1))
    );
    let pm = |x: Option<(f64, f64)>| x.map_or("–".into(), |(m, sd)| format!("{:.2} ± {:.2}", m * 100.0, sd * 100.0));
    for g in &s.groups {
        let vals = if g.values.is_empty() {
            "all".to_string()
        } else {
            g.values.join(" | ")
        };
        out += &format!(
            "| {vals} | {} | {} | {} |\n",
            g.summary.runs.len(),
            pm(g.summary.dev_mean_std),
            pm(g.summary.top_dev_mean_std)
        );
    }
    out
}

/// Dev accuracy of every finished cell, one column per setting (its seeds as dots, their mean as a bar).
fn svg(s: &GridSummary) -> Result<String> {
    use plotters::prelude::*;
    let mut out = String::new();
    {
        let n = s.groups.len().max(1);
        let root = SVGBackend::with_string(&mut out, (120 * n as u32 + 160, 360)).into_drawing_area();
        root.fill(&WHITE)?;
        let labels: Vec<String> = s
            .groups
            .iter()
            .map(|g| {
                if g.values.is_empty() {
                    "all".into()
                } else {
                    g.values.join(" ")
                }
            })
            .collect();
        let mut chart = ChartBuilder::on(&root)
            .caption("dev accuracy by setting (dots: seeds, bar: mean)", ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..100.0)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                labels
                    .get(x.round() as usize)
                    .filter(|_| (x - x.round()).abs() < 1e-6)
                    .cloned()
                    .unwrap_or_default()
            })
            .y_desc("dev accuracy (%)")
            .draw()?;
        let blue = RGBColor(31, 119, 180);
        for (gi, g) in s.groups.iter().enumerate() {
            let devs: Vec<f64> = g
                .summary
                .runs
                .iter()
                .filter_map(|r| r.dev_accuracy)
                .map(|d| d * 100.0)
                .collect();
            let k = devs.len().max(1) as f64;
            chart.draw_series(
                devs.iter()
                    .enumerate()
                    .map(|(i, d)| Circle::new((gi as f64 - 0.2 + 0.4 * (i as f64 + 0.5) / k, *d), 3, blue.filled())),
            )?;
            if let Some((m, _)) = g.summary.dev_mean_std {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(gi as f64 - 0.3, m * 100.0), (gi as f64 + 0.3, m * 100.0)],
                    BLACK.stroke_width(2),
                )))?;
            }
        }
        root.present()?;
    }
    Ok(out)
}
