//! Ensembles on a tiny random GPT-2: an ensemble of one prompt scores as that prompt, and an ensemble's label
//! log-probabilities are the mean of its members' (each calibrated on its own where asked), normalised.

use candle_core::{DType, Device};
use pez_classify::ensemble::MeanOf;
use pez_classify::{Ensemble, LearnedPrompt, Predictor, Prompted, Scored};
use pez_models::LoadedLm;
use pez_tasks::{Calibration, TaskSpec};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    pez_models::testing::fixtures().join("transfer")
}

const PROMPTS: [&str; 3] = ["film great bad movie", "terrible awful good", "the a of"];

fn setup() -> (LoadedLm, TaskSpec, Vec<String>) {
    let lm = pez_models::load_lm(fixtures().join("gpt2").to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
    let task = TaskSpec::resolve(fixtures().join("task.toml").to_str().unwrap()).unwrap();
    let texts = task
        .load("dev", None)
        .unwrap()
        .examples
        .into_iter()
        .map(|e| e.text)
        .collect();
    (lm, task, texts)
}

fn learned(lm: &LoadedLm, task: &TaskSpec, text: &str, calibration: Calibration) -> LearnedPrompt {
    LearnedPrompt {
        calibration,
        ..LearnedPrompt::from_text(task.prompt.clone(), text, lm).unwrap()
    }
}

fn score(p: &dyn Predictor, texts: &[String], batch: usize) -> Vec<Scored> {
    let t: Vec<&str> = texts.iter().map(String::as_str).collect();
    p.score(&t, batch, &mut |_| {}).unwrap()
}

#[test]
fn an_ensemble_of_one_prompt_scores_as_that_prompt() {
    let (lm, task, texts) = setup();
    for c in [Calibration::None, Calibration::ContentFree] {
        let one = Ensemble::new(&lm, vec![learned(&lm, &task, PROMPTS[0], c)]).unwrap();
        let alone = Prompted::new(&lm, learned(&lm, &task, PROMPTS[0], c)).unwrap();
        assert_eq!(one.max_text_tokens, alone.clf.max_text_tokens);
        let (e, p) = (score(&one, &texts, 4), score(&alone, &texts, 4));
        for (i, (x, y)) in e.iter().zip(&p).enumerate() {
            assert_eq!(
                (x.label, x.tokens, x.truncated),
                (y.label, y.tokens, y.truncated),
                "{c}: text {i}"
            );
            for (a, b) in x.logprobs.iter().zip(&y.logprobs) {
                assert!(
                    (a - b).abs() < 1e-6,
                    "{c}: text {i}: {:?} vs {:?}",
                    x.logprobs,
                    y.logprobs
                );
            }
        }
    }
}

#[test]
fn ensemble_scores_are_the_normalised_mean_of_its_members() {
    let (lm, task, texts) = setup();
    for c in [Calibration::None, Calibration::ContentFree] {
        let members: Vec<Prompted> = PROMPTS
            .iter()
            .map(|t| Prompted::new(&lm, learned(&lm, &task, t, c)).unwrap())
            .collect();
        let each: Vec<Vec<Scored>> = members.iter().map(|m| score(m, &texts, 3)).collect();
        let e = Ensemble::new(&lm, PROMPTS.iter().map(|t| learned(&lm, &task, t, c)).collect()).unwrap();
        let got = score(&e, &texts, 5);
        let mut disagree = 0;
        for (i, g) in got.iter().enumerate() {
            // Independently, in f64: p(l) ∝ exp(mean over members of log p_m(l)).
            let mean: Vec<f64> = (0..2)
                .map(|l| each.iter().map(|m| m[i].logprobs[l] as f64).sum::<f64>() / each.len() as f64)
                .collect();
            let z = mean.iter().map(|x| x.exp()).sum::<f64>().ln();
            for l in 0..2 {
                assert!(
                    (g.logprobs[l] as f64 - (mean[l] - z)).abs() < 1e-5,
                    "{c}: text {i}: {g:?} vs {mean:?}"
                );
            }
            assert_eq!(g.label, if mean[1] >= mean[0] { 1 } else { 0 }, "{c}: text {i}");
            assert_eq!(g.tokens, each.iter().map(|m| m[i].tokens).sum::<usize>());
            assert_eq!(g.raw_logprobs.is_some(), c == Calibration::ContentFree);
            disagree += each.iter().any(|m| m[i].label != g.label) as usize;
        }
        // The check means something only if the members do not all agree.
        assert!(disagree > 0, "{c}: every member gave every text the ensemble's label");
    }
}

#[test]
fn members_with_different_formats_are_refused() {
    let (lm, task, _) = setup();
    let mut other = learned(&lm, &task, PROMPTS[1], Calibration::None);
    other.format.template = format!("{} so", other.format.template);
    let err = Ensemble::new(&lm, vec![learned(&lm, &task, PROMPTS[0], Calibration::None), other])
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("differ in their prompt format"), "{err:#}");
    assert!(Ensemble::new(&lm, vec![]).is_err());
}

#[test]
fn mean_of_predictors_combines_as_an_ensemble() {
    let (lm, task, texts) = setup();
    let e = Ensemble::new(
        &lm,
        PROMPTS
            .iter()
            .map(|t| learned(&lm, &task, t, Calibration::None))
            .collect(),
    )
    .unwrap();
    let boxed: Vec<Box<dyn Predictor>> = PROMPTS
        .iter()
        .map(|t| Box::new(Prompted::new(&lm, learned(&lm, &task, t, Calibration::None)).unwrap()) as Box<dyn Predictor>)
        .collect();
    let (a, b) = (score(&e, &texts, 4), score(&MeanOf(boxed), &texts, 4));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.label, x.tokens), (y.label, y.tokens));
        for (p, q) in x.logprobs.iter().zip(&y.logprobs) {
            assert!((p - q).abs() < 1e-6, "{x:?} vs {y:?}");
        }
    }
}
