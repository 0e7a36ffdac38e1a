//! Content-free calibration (Zhao et al. 2021) on a tiny random GPT-2: the offsets are the log of the mean label
//! probabilities of the content-free inputs, and calibrated labels are the argmax of raw / p_cf.

use candle_core::{DType, Device};
use pez_classify::{calibrated, LearnedPrompt, Predictor, Prompted, CONTENT_FREE};
use pez_tasks::{Calibration, TaskSpec};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    pez_models::testing::fixtures().join("transfer")
}

#[test]
fn content_free_offsets_and_calibrated_predictions() {
    let lm = pez_models::load_lm(fixtures().join("gpt2").to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
    let task = TaskSpec::resolve(fixtures().join("task.toml").to_str().unwrap()).unwrap();
    let examples = task.load("dev", None).unwrap().examples;
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    // Labels and label probabilities, as `pez eval` scores them.
    let predict = |p: &Prompted, texts: &[&str], batch| {
        let s = p.score(texts, batch, &mut |_| {}).unwrap();
        (
            s.iter().map(|x| x.label).collect::<Vec<_>>(),
            s.iter()
                .map(|x| x.logprobs.iter().map(|l| l.exp()).collect::<Vec<f32>>())
                .collect::<Vec<_>>(),
        )
    };
    let learned = |c| LearnedPrompt {
        calibration: c,
        ..LearnedPrompt::from_text(task.prompt.clone(), "film great bad movie", &lm).unwrap()
    };
    let raw = Prompted::new(&lm, learned(Calibration::None)).unwrap();
    let cal = Prompted::new(&lm, learned(Calibration::ContentFree)).unwrap();
    assert!(raw.offsets.is_none());
    // Independently: the raw label probabilities of the content-free texts, averaged.
    let cf = predict(&raw, &CONTENT_FREE, 8).1;
    let want: Vec<f32> = (0..2)
        .map(|l| (cf.iter().map(|p| p[l]).sum::<f32>() / cf.len() as f32).ln())
        .collect();
    let off = cal.offsets.clone().unwrap();
    for (o, w) in off.iter().zip(&want) {
        assert!((o - w).abs() < 1e-5, "offsets {off:?} vs {want:?}");
    }
    let (r, c) = (predict(&raw, &texts, 4), predict(&cal, &texts, 4));
    let mut flipped = 0;
    for (i, (pr, pc)) in r.1.iter().zip(&c.1).enumerate() {
        // p_cal ∝ p_raw / p_cf, normalised.
        let q: Vec<f32> = pr.iter().zip(&want).map(|(p, w)| p / w.exp()).collect();
        let z: f32 = q.iter().sum();
        for l in 0..2 {
            assert!((pc[l] - q[l] / z).abs() < 1e-5, "example {i}: {pc:?} vs {q:?}");
        }
        assert_eq!(c.0[i], if q[1] >= q[0] { 1 } else { 0 });
        flipped += (c.0[i] != r.0[i]) as usize;
    }
    eprintln!(
        "calibration changed {flipped} of {} labels; offsets {off:?}",
        texts.len()
    );
    // Calibrating a content-free input by its own bias makes it uninformative.
    let one = predict(&raw, &["N/A"], 1).1[0]
        .iter()
        .map(|p| p.ln())
        .collect::<Vec<_>>();
    let u = calibrated(&one, &one);
    assert!(u.iter().all(|x| (x.exp() - 0.5).abs() < 1e-6), "{u:?}");
}
