//! A PEZ run of N steps is the first N steps of a longer run (nothing in the loop depends on the total: batches
//! are drawn per step, the learning rate is constant, evaluations fall every `eval_every` steps). So one long run
//! of the study gives the shorter settings too: the best prompt by holdout among its records up to step N is what
//! an N-step run returns (`scripts/summarize_study.py`). Tiny GPT-2, f32.

use candle_core::Device;
use pez_config::TuneSettings;
use pez_tune::EvalRecord;
use std::path::Path;

fn run(steps: usize, out: &Path) -> (Vec<EvalRecord>, Vec<u32>) {
    let f = pez_models::testing::fixtures().join("transfer");
    let cfg = TuneSettings {
        task: Some(f.join("task.toml").to_string_lossy().into()),
        model: Some(f.join("gpt2").to_string_lossy().into()),
        train: Some(f.join("dev.tsv")),
        holdout: Some(4),
        prompt_len: Some(4),
        batch_size: Some(4),
        steps: Some(steps),
        eval_every: Some(2),
        fluency: Some(0.3),
        skip_dev: Some(true),
        dtype: Some(pez_nn::Dtype::F32),
        seed: Some(3),
        out: Some(out.to_path_buf()),
        ..Default::default()
    }
    .resolve(&Device::Cpu)
    .unwrap();
    let art = pez_tune::tune(Some(cfg), None, &Device::Cpu).unwrap();
    (records(out), art.token_ids)
}

fn records(out: &Path) -> Vec<EvalRecord> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What two runs' records must share to be the same run.
fn same(a: &[EvalRecord], b: &[EvalRecord]) {
    for (a, b) in a.iter().zip(b) {
        assert_eq!(
            (a.step, a.train_loss, a.holdout_accuracy, &a.token_ids, a.best),
            (b.step, b.train_loss, b.holdout_accuracy, &b.token_ids, b.best),
            "step {}",
            a.step
        );
    }
}

#[test]
fn a_short_run_is_the_start_of_a_long_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (short, short_best) = run(6, &tmp.path().join("short"));
    let (long, _) = run(16, &tmp.path().join("long"));
    assert_eq!((short.len(), long.len()), (3, 8));
    same(&short, &long);
    // The prompt a 6-step run returns: the last record up to step 6 that was the best so far.
    let picked = long.iter().rfind(|r| r.step <= 6 && r.best).unwrap();
    assert_eq!(picked.token_ids, short_best);
    // The long run goes on to other prompts (else the comparison above would say little).
    let later: std::collections::HashSet<_> = long[3..].iter().map(|r| r.token_ids.clone()).collect();
    assert!(later.iter().any(|ids| *ids != short_best), "{later:?}");
}

/// `pez tune --resume DIR --steps N`: a finished short run taken on to N steps is the N-step run (its records and
/// best prompt); refused where it could not be.
#[test]
fn a_finished_run_extended_is_the_longer_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (ext, long_dir) = (tmp.path().join("ext"), tmp.path().join("long"));
    run(6, &ext);
    let art = pez_tune::extend(&ext, 16, &Device::Cpu).unwrap();
    let (long, long_best) = run(16, &long_dir);
    let extended = records(&ext);
    assert_eq!(extended.len(), 8);
    same(&extended, &long);
    assert_eq!((art.token_ids, art.config.steps), (long_best, 16));

    let refused = |dir: &Path, steps: usize| pez_tune::extend(dir, steps, &Device::Cpu).unwrap_err().to_string();
    assert!(
        refused(&ext, 16).contains("at step 16 already"),
        "{}",
        refused(&ext, 16)
    );
    let odd = tmp.path().join("odd");
    run(5, &odd);
    let e = refused(&odd, 8);
    assert!(e.contains("between holdout passes (every 2)"), "{e}");
}
