//! The transfer pipeline on tiny random GPT-2, OPT and T5 checkpoints (with a word-level tokenizer), against an
//! independent computation with transformers (scripts/make_fixtures.py, job `transfer`).

use candle_core::{DType, Device};
use pez_classify::{LearnedPrompt, Predictor, Prompted};
use pez_core::Method;
use pez_tasks::TaskSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(serde::Deserialize)]
struct Expected {
    prompts: Vec<String>,
    correct: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    margin: BTreeMap<String, BTreeMap<String, Vec<f32>>>,
}

fn fixtures() -> PathBuf {
    pez_models::testing::fixtures().join("transfer")
}

fn artifact(dir: &std::path::Path, method: Method, prompt: &str, holdout: f64, fluency: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let a = pez_config::PromptArtifact {
        format: 1,
        prompt: prompt.into(),
        token_ids: vec![],
        method,
        source_model: "tiny".into(),
        task: "tiny-sst2".into(),
        prompt_format: pez_tasks::PromptFormat::polarity(),
        calibration: Default::default(),
        holdout_accuracy: Some(holdout),
        dev_accuracy: None,
        dev_per_class: None,
        fluency_log_ppl: None,
        step: 1,
        seed: 0,
        config: pez_config::TuneSettings {
            fluency: Some(fluency),
            ..Default::default()
        }
        .resolve(&candle_core::Device::Cpu)
        .unwrap(),
    };
    a.write(&dir.join("prompt.json")).unwrap();
}

/// transformers' results, and a folder with two "pez+fluency" runs of its prompts: `a` (holdout 0.9), `b` (0.5).
fn two_fluent_runs() -> (Expected, tempfile::TempDir) {
    let exp: Expected =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap();
    let runs = tempfile::tempdir().unwrap();
    artifact(&runs.path().join("a"), Method::Pez, &exp.prompts[1], 0.9, 0.003);
    artifact(&runs.path().join("b"), Method::Pez, &exp.prompts[2], 0.5, 0.003);
    (exp, runs)
}

#[test]
fn transfer_grid_matches_transformers_on_tiny_gpt2_opt_t5() {
    let task_file = fixtures().join("task.toml");
    // Two "pez+fluency" prompts (the better one by holdout should be kept with --top 1) and one "pez" prompt.
    let (exp, runs) = two_fluent_runs();
    artifact(&runs.path().join("c"), Method::Pez, &exp.prompts[2], 0.7, 0.0);
    artifact(&runs.path().join("d"), Method::Soft, "ignored", 1.0, 0.0);
    let grid = pez_transfer::Grid::new(task_file.to_str().unwrap(), &[runs.path().to_path_buf()], 1, None).unwrap();
    assert_eq!(
        grid.methods.keys().collect::<Vec<_>>(),
        vec!["pez", "pez+fluency"],
        "soft prompts are skipped"
    );
    assert_eq!(
        grid.methods["pez+fluency"][0].1.prompt, exp.prompts[1],
        "top-1 by holdout accuracy"
    );

    let mut all = vec![];
    for arch in ["gpt2", "opt", "t5"] {
        let model = fixtures().join(arch);
        let scores = grid
            .score_model(
                model.to_str().unwrap(),
                (&candle_core::Device::Cpu, pez_nn::Dtype::F32),
                5,
                pez_tasks::Calibration::None,
                &mut |_| {},
            )
            .unwrap();
        let want = &exp.correct[arch];
        for s in &scores {
            assert_eq!(&s.correct, &want[&s.prompt], "{arch} {} {:?}", s.method, s.prompt);
        }
        assert_eq!(scores.len(), 3);
        // The logit margins agree numerically, not only the decisions.
        let lm = pez_models::load_lm(model.to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
        let task = TaskSpec::resolve(task_file.to_str().unwrap()).unwrap();
        let data = task.load("dev", None).unwrap().examples;
        for prompt in &exp.prompts {
            let p = Prompted::new(&lm, LearnedPrompt::from_text(task.prompt.clone(), prompt, &lm).unwrap()).unwrap();
            let texts: Vec<&str> = data.iter().map(|e| e.text.as_str()).collect();
            let scored = p.score(&texts, 4, &mut |_| {}).unwrap();
            for (s, m) in scored.iter().zip(&exp.margin[arch][prompt]) {
                let ours = s.logprobs[1] - s.logprobs[0];
                assert!(
                    (ours - m).abs() < 1e-3,
                    "{arch} {prompt:?}: margin {ours} vs transformers {m}"
                );
            }
        }
        all.extend(scores);
    }
    let out = tempfile::tempdir().unwrap();
    pez_transfer::report::write_all(out.path(), "tiny-sst2", &all, "test").unwrap();
    let csv = std::fs::read_to_string(out.path().join("transfer.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * 3);
    let t5_empty: f64 = exp.correct["t5"][""].iter().map(|&c| c as f64).sum::<f64>() / 12.0;
    assert!(
        csv.contains(&format!("empty,{},{t5_empty:.6}", fixtures().join("t5").display())),
        "{csv}"
    );
    assert!(std::fs::read_to_string(out.path().join("transfer.svg"))
        .unwrap()
        .starts_with("<svg"));
}

/// An `ensemble.json` among the prompts is scored on each target as one classifier, as `Ensemble` scores it there,
/// beside its members' own rows.
#[test]
fn an_ensemble_transfers_as_one_classifier() {
    let task_file = fixtures().join("task.toml");
    let (exp, runs) = two_fluent_runs();
    let runs_of = [(0, runs.path().join("a")), (1, runs.path().join("b"))];
    let e = pez_config::EnsembleArtifact::choose(&runs_of, 2, runs.path(), pez_tasks::Calibration::None).unwrap();
    e.write(&runs.path().join("ensemble.json")).unwrap();
    let grid = pez_transfer::Grid::new(task_file.to_str().unwrap(), &[runs.path().to_path_buf()], 2, None).unwrap();
    assert_eq!(grid.ensembles.len(), 1);
    assert_eq!(
        grid.methods["pez+fluency"].len(),
        2,
        "the members are found as prompts too"
    );
    for arch in ["gpt2", "opt"] {
        let model = fixtures().join(arch);
        let scores = grid
            .score_model(
                model.to_str().unwrap(),
                (&Device::Cpu, pez_nn::Dtype::F32),
                5,
                pez_tasks::Calibration::None,
                &mut |_| {},
            )
            .unwrap();
        let s = scores.iter().find(|s| s.method == "ensemble").expect("an ensemble row");
        assert_eq!(s.prompt, format!("{} + {}", exp.prompts[1], exp.prompts[2]));
        let lm = pez_models::load_lm(model.to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
        let task = TaskSpec::resolve(task_file.to_str().unwrap()).unwrap();
        let data = task.load("dev", None).unwrap().examples;
        let members = [&exp.prompts[1], &exp.prompts[2]]
            .iter()
            .map(|p| LearnedPrompt::from_text(task.prompt.clone(), p, &lm).unwrap())
            .collect();
        let ens = pez_classify::Ensemble::new(&lm, members).unwrap();
        let want = pez_classify::evaluate(&ens, &data, 2, 3, &mut |_| {})
            .unwrap()
            .correct(&data);
        assert_eq!(s.correct, want, "{arch}");
    }
}
