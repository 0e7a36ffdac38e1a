//! A cell's state on disk, and one cell run under the lock in its directory.

use super::{Cell, Sweep};
use crate::run::RunDir;
use anyhow::{bail, Context, Result};
use pez_config::{write_atomic, TuneSettings};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a failed cell leaves in its directory (removed when it later finishes).
pub const ERROR_FILE: &str = "error.txt";

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

/// Runs cell `index` into its directory: kept if finished, resumed from its checkpoint if started, else begun.
/// Only one process runs a cell at a time (a lock in its directory); a failure leaves `error.txt` there. A cell
/// whose file gives no dtype computes in `dtype` (made definite for `device`).
pub fn run_cell(sweep: &Sweep, index: usize, device: &candle_core::Device, dtype: pez_nn::Dtype) -> Result<Status> {
    let c = sweep.cell(index)?;
    let dir = sweep.dir(c);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "cell {index} ({}) is being run by another process (its lock {} is held)",
            c.name,
            lock_path.display()
        );
    }
    let result = run_locked(c, &dir, (device, dtype));
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

fn run_locked(c: &Cell, dir: &Path, (device, dtype): (&candle_core::Device, pez_nn::Dtype)) -> Result<Status> {
    let held = RunDir::read(dir);
    // The run there must be this cell's: equal on every setting the file gives (the dtype is decided where a cell
    // runs).
    let given: Vec<&str> = (c.settings.given().into_iter()).filter(|k| *k != "dtype").collect();
    held.check_is(dir, &c.config, &given, "move it away, or restore the sweep file")?;
    let (i, name, at) = (c.index, &c.name, dir.display());
    match held {
        RunDir::Finished { checkpoint: true, .. } => eprintln!("cell {i} ({name}): finished in {at}, kept"),
        RunDir::Finished { .. } => {
            eprintln!("cell {i} ({name}): finished in {at} (its prompt.json; no checkpoint), kept")
        }
        RunDir::Started(_) => {
            eprintln!("cell {i} ({name}): resuming {at}");
            crate::tune(None, Some(dir), device)?;
        }
        RunDir::Missing => {
            eprintln!("cell {i} ({name}): starting in {at}");
            let settings = TuneSettings {
                dtype: c.settings.dtype.or(Some(dtype)),
                ..c.settings.clone()
            };
            crate::tune(Some(settings.resolve(device)?), None, device)?;
        }
    }
    Ok(Status::Finished)
}
