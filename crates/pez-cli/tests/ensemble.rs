//! Ensembles end to end on the tiny GPT-2: `pez tune --seeds 3 --ensemble 2` writes `ensemble.json` (the two best
//! runs by holdout, its dev accuracy as `pez eval` measures it), `pez eval` of it combines its members' label
//! probabilities, and an ensemble of one prompt evaluates exactly as that prompt. Each run keeps its dev
//! predictions, equal to `pez eval`'s. Runs already there are kept only if they were tuned as asked.

mod common;

use common::{fixtures, ok, pez, tune_tiny};
use serde_json::Value;
use std::path::Path;

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// `pez eval --json` of a prompt or ensemble file on the fixture task, and its per-text predictions.
fn eval(file: &Path, tmp: &Path, extra: &[&str]) -> (Value, Vec<Value>) {
    let f = fixtures().join("transfer");
    let preds = tmp.join("predictions.jsonl");
    let o = ok(pez()
        .args([
            "eval",
            f.join("task.toml").to_str().unwrap(),
            "--model",
            f.join("gpt2").to_str().unwrap(),
        ])
        .args([
            "--prompt-file",
            file.to_str().unwrap(),
            "--json",
            "--predictions",
            preds.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap());
    let lines = std::fs::read_to_string(&preds).unwrap();
    (
        serde_json::from_slice(&o.stdout).unwrap(),
        lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
    )
}

fn probs(v: &Value) -> Vec<f64> {
    v["probs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect()
}

#[test]
fn tune_seeds_with_an_ensemble_writes_the_best_by_holdout_and_eval_combines_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let o = ok(tune_tiny(&root)
        .args(["--seeds", "3", "--ensemble", "2", "--top", "3", "--dtype", "f32"])
        .output()
        .unwrap());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("ensemble of 2"), "{stdout}");
    let e = json(&root.join("ensemble.json"));
    let summary = json(&root.join("summary.json"));
    // Its members: the summary's two best seeds by holdout (ties: lower seed first), best first.
    let seeds: Vec<u64> = e["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seed"].as_u64().unwrap())
        .collect();
    let top: Vec<u64> = summary["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(seeds, top[..2], "{e}");
    assert_eq!(e["kind"], "ensemble");
    assert_eq!(e["combine"], "mean_logprob");

    // pez eval of the ensemble: the dev accuracy tune wrote, and each text's probabilities the normalised
    // geometric mean of its members' (from pez eval of each member's prompt.json).
    let (whole, preds) = eval(&root, tmp.path(), &[]);
    assert_eq!(whole["accuracy"]["accuracy"], e["dev_accuracy"], "{whole}");
    assert_eq!(whole["members"].as_array().unwrap().len(), 2);
    let each: Vec<Vec<Value>> = seeds
        .iter()
        .map(|s| eval(&root.join(format!("s{s}")), tmp.path(), &[]).1)
        .collect();
    // Each run kept its dev predictions (for paired tests between runs): pez eval's, label for label.
    for (s, m) in seeds.iter().zip(&each) {
        let kept = std::fs::read_to_string(root.join(format!("s{s}/dev_predictions.jsonl"))).unwrap();
        let kept: Vec<Value> = kept.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(kept.len(), m.len());
        for (k, e) in kept.iter().zip(m) {
            assert_eq!(
                (&k["index"], &k["label_index"]),
                (&e["index"], &e["label_index"]),
                "seed {s}"
            );
            for (p, q) in probs(k).iter().zip(probs(e)) {
                assert!((p - q).abs() < 1e-6, "seed {s}: {k} vs {e}");
            }
        }
    }
    for (i, p) in preds.iter().enumerate() {
        let logs: Vec<f64> = (0..2)
            .map(|l| each.iter().map(|m| probs(&m[i])[l].ln()).sum::<f64>() / 2.0)
            .collect();
        let z: f64 = logs.iter().map(|x| x.exp()).sum();
        for (l, got) in probs(p).iter().enumerate() {
            assert!(
                (got - logs[l].exp() / z).abs() < 1e-5,
                "text {i}: {p} vs members {logs:?}"
            );
        }
    }

    // An ensemble of one prompt: the same labels and probabilities as that prompt's own file.
    let mut one = e.clone();
    one["members"].as_array_mut().unwrap().truncate(1);
    let dir = tmp.path().join("one");
    std::fs::create_dir_all(&dir).unwrap();
    let m = one["members"][0]["prompt_file"].as_str().unwrap().to_string();
    one["members"][0]["prompt_file"] = root.join(m).to_str().unwrap().into();
    std::fs::write(dir.join("ensemble.json"), one.to_string()).unwrap();
    for cal in [&[][..], &["--calibration", "content-free"][..]] {
        let (a, pa) = eval(&dir.join("ensemble.json"), tmp.path(), cal);
        let (b, pb) = eval(&root.join(format!("s{}", seeds[0])), tmp.path(), cal);
        assert_eq!(a["accuracy"], b["accuracy"], "{cal:?}");
        for (x, y) in pa.iter().zip(&pb) {
            assert_eq!(x["label_index"], y["label_index"], "{cal:?}");
            for (p, q) in probs(x).iter().zip(probs(y)) {
                assert!((p - q).abs() < 1e-6, "{cal:?}: {x} vs {y}");
            }
        }
    }
}

#[test]
fn runs_already_there_are_kept_only_if_tuned_as_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let seeds3 = ["--seeds", "3", "--ensemble", "2", "--dtype", "f32"];
    ok(tune_tiny(&root).args(seeds3).output().unwrap());
    // The runs again: kept as they are for another calibration of the ensemble (it calibrates its members), and
    // refused, untouched, for another setting of their tuning.
    let metrics = std::fs::read_to_string(root.join("s1/metrics.jsonl")).unwrap();
    let o = ok(tune_tiny(&root)
        .args(seeds3)
        .args(["--calibration", "content-free"])
        .output()
        .unwrap());
    assert!(String::from_utf8_lossy(&o.stderr).contains("finished in"));
    let o = tune_tiny(&root)
        .args(seeds3)
        .args(["--fluency", "0.5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("`fluency` is 0.0, not 0.5"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(root.join("s1/metrics.jsonl")).unwrap(), metrics);
    // A setting left to its default counts too: runs from random words are not the default start's.
    let random = tmp.path().join("random");
    let two = ["--seeds", "2", "--dtype", "f32"];
    ok(tune_tiny(&random)
        .args(two)
        .args(["--init", "random"])
        .output()
        .unwrap());
    let o = tune_tiny(&random).args(two).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(r#"`init` is "random", not "label""#),
        "{err}"
    );
}

#[test]
fn an_ensemble_needs_seeds_enough() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, want) in [
        (&["--ensemble", "2"][..], "needs --seeds"),
        (&["--seeds", "2", "--ensemble", "3"][..], "more prompts than --seeds"),
        (&["--seeds", "2", "--ensemble", "0"][..], "0 is not in 1.."),
    ] {
        let o = tune_tiny(&tmp.path().join("x")).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!tmp.path().join("x").exists(), "{args:?} wrote its folder");
    }
}
