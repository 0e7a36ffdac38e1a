//! A sweep file read into its cells. Cells are numbered over the grid's keys in name order (`seed` last, so a
//! setting's seeds are neighbours) and each list in its written order: comments, spacing and the order of keys do
//! not move an index. Every cell's settings are resolved before anything runs, so a bad value is refused naming
//! its cell.

use anyhow::{bail, Context, Result};
use pez_config::{TuneConfig, TuneSettings};
use serde::Deserialize;
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

/// A sweep read and checked.
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
    /// The file's settings for this cell (base and grid), with `out` its run directory: resolved where it runs.
    pub settings: TuneSettings,
    /// The settings resolved on the CPU, for planning and summaries (the dtype may differ where it runs).
    pub config: TuneConfig,
}

impl Sweep {
    pub fn read(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading sweep file {}", file.display()))?;
        let f: SweepFile = toml::from_str(&text).with_context(|| format!("parsing sweep file {}", file.display()))?;
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
        let (base, grid) = (settings_of(&f.base, "base", file)?, settings_of(&f.grid, "grid", file)?);
        if let Some((k, _)) = grid.iter().find(|(k, _)| base.iter().any(|(b, _)| b == k)) {
            bail!("{}: `{k}` is in both [base] and [grid]", file.display());
        }
        let mut lists: Vec<(String, Vec<toml::Value>)> = vec![];
        for (k, v) in grid {
            let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
                bail!("{}: [grid] `{k}` must be a non-empty list", file.display())
            };
            lists.push((k, list.clone()));
        }
        lists.sort_by(|(a, _), (b, _)| (a == "seed", a).cmp(&(b == "seed", b)));
        let keys: Vec<String> = lists.iter().map(|(k, _)| k.clone()).collect();
        let out: PathBuf = dir.join(&f.out).components().collect(); // `out = "."` is the file's own folder
        let mut cells = vec![];
        for (index, values) in combinations(&lists).into_iter().enumerate() {
            let name = cell_name(&keys, &values);
            let mut table: toml::Table = base
                .iter()
                .cloned()
                .chain(keys.iter().cloned().zip(values.clone()))
                .collect();
            beside_the_file(&mut table, &dir);
            let cell_out = out.join(&name);
            let settings =
                settings(table, &cell_out).with_context(|| format!("{}: cell {index} ({name})", file.display()))?;
            let config = settings.resolve(&candle_core::Device::Cpu);
            let config = config.with_context(|| format!("{}: cell {index} ({name})", file.display()))?;
            cells.push(Cell {
                index,
                values,
                name,
                settings,
                config,
            });
        }
        let mut seen = std::collections::HashMap::new();
        for c in &cells {
            if let Some(other) = seen.insert(c.name.clone(), c.index) {
                bail!(
                    "{}: cells {other} and {} would share the run directory {}: make their [grid] values differ by \
                     more than punctuation",
                    file.display(),
                    c.index,
                    out.join(&c.name).display()
                );
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
}

/// A section's settings with their names in snake_case; `out` and names that are not settings refused.
fn settings_of(table: &toml::Table, section: &str, file: &Path) -> Result<Vec<(String, toml::Value)>> {
    let known: Vec<&str> = TuneSettings::NAMES.iter().copied().filter(|k| *k != "out").collect();
    let mut v = vec![];
    for (k, value) in table {
        let name = k.replace('-', "_");
        if name == "out" {
            bail!(
                "{}: [{section}] sets `out`: each cell's run directory is chosen by the sweep (under `out`)",
                file.display()
            );
        }
        if !known.contains(&name.as_str()) {
            bail!(
                "{}: unknown setting `{k}` in [{section}]: pez tune's settings are {}",
                file.display(),
                known.join(", ")
            );
        }
        v.push((name, value.clone()));
    }
    Ok(v)
}

/// Every combination of the lists' values, in index order (mixed radix, the last list fastest).
fn combinations(lists: &[(String, Vec<toml::Value>)]) -> Vec<Vec<toml::Value>> {
    let n = lists.iter().map(|(_, l)| l.len()).product::<usize>();
    (0..n)
        .map(|index| {
            let mut rest = index;
            let mut values: Vec<toml::Value> = lists
                .iter()
                .rev()
                .map(|(_, list)| {
                    let v = list[rest % list.len()].clone();
                    rest /= list.len();
                    v
                })
                .collect();
            values.reverse();
            values
        })
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
    let clean = |s: String| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
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

/// Relative paths (task, model, train and dev files) that exist beside the sweep file are taken from there.
fn beside_the_file(table: &mut toml::Table, dir: &Path) {
    for k in ["task", "model", "train", "dev"] {
        if let Some(toml::Value::String(s)) = table.get_mut(k) {
            if Path::new(s.as_str()).is_relative() && dir.join(&*s).exists() {
                *s = dir.join(&*s).to_string_lossy().into_owned();
            }
        }
    }
}

/// The cell's settings: the table's, a type error naming its setting, and `out` the cell's run directory.
fn settings(table: toml::Table, out: &Path) -> Result<TuneSettings> {
    let mut s: TuneSettings = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow::anyhow!("setting `{}`: {}", e.path(), e.inner()))?;
    s.out = Some(out.to_path_buf());
    Ok(s)
}
