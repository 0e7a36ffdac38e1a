//! What the `pez` binary's end-to-end tests share: running it, requiring success, the model fixtures, and a run's
//! metrics without their times (which differ between otherwise equal runs).
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::process::{Command, Output};

pub fn pez() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pez"))
}

pub fn ok(o: Output) -> Output {
    assert!(o.status.success(), "pez failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// pez-models' tiny checkpoints (and, under `transfer/`, ones with tokenizers and a task).
pub use pez_models::testing::fixtures;

/// `pez tune` of the tiny checkpoint on the fixture task (6 steps, a holdout of 4) into `out`.
pub fn tune_tiny(out: &Path) -> Command {
    let f = fixtures().join("transfer");
    let mut c = pez();
    c.args([
        "tune",
        f.join("task.toml").to_str().unwrap(),
        "--model",
        f.join("gpt2").to_str().unwrap(),
    ]);
    c.args([
        "--train",
        f.join("dev.tsv").to_str().unwrap(),
        "--steps",
        "6",
        "--holdout",
        "4",
    ]);
    c.args(["--out", out.to_str().unwrap()]);
    c
}

/// `metrics.jsonl` of a run directory, each record without `elapsed_s`.
pub fn metrics_without_time(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("elapsed_s");
            v
        })
        .collect()
}
