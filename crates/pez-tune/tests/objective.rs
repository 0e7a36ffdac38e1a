//! The tuning objective's gradient with a strong fluency term (w = 0.3), against central finite differences of
//! the objective's own loss, on the tiny GPT-2 checkpoint in f64; and the fluency term's pull on each token's
//! own vector (the tied head's reading), on every tiny decoder.

use candle_core::{DType, Device, Tensor};
use pez_core::Objective;
use pez_tune::BatchObjective;

#[test]
fn fluency_weighted_gradient_matches_finite_differences_at_w_0_3() {
    let fx = pez_models::testing::fixtures().join("transfer");
    let lm = pez_models::load_lm(fx.join("gpt2").to_str().unwrap(), DType::F64, &Device::Cpu).unwrap();
    let task = pez_tasks::TaskSpec::resolve(fx.join("task.toml").to_str().unwrap()).unwrap();
    let ids = [5u32, 9, 14, 3];
    let clf = pez_classify::Classifier::new(&lm, &task.prompt, ids.len()).unwrap();
    let batch = ["great fun", "bad movie", "dull"]
        .iter()
        .zip([1usize, 0, 0])
        .map(|(t, l)| (clf.encode(t).unwrap(), l))
        .collect();
    let mut obj = BatchObjective {
        clf: &clf,
        batch,
        fluency: 0.3,
        forward_s: None,
    };
    let prompt = (lm.model.embed_ids(&ids).unwrap()
        + pez_nn::testing::random(&[ids.len(), lm.model.info().hidden_size], 7, DType::F64) * 0.05)
        .unwrap();
    let (_, g) = obj.loss_and_grad(&prompt, &ids).unwrap();
    let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let gnorm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    let base = prompt.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let eps = 1e-3;
    let mut worst = 0f64;
    for k in 0..12 {
        let i = (k * 7919 + 13) % base.len();
        let mut loss_at = |d: f64| {
            let mut v = base.clone();
            v[i] += d;
            obj.loss_and_grad(&Tensor::from_vec(v, prompt.shape(), &Device::Cpu).unwrap(), &ids)
                .unwrap()
                .0 as f64
        };
        let fd = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
        // The loss comes back as f32: its rounding (~6e-8) over 2 eps bounds what the difference can resolve.
        let err = (fd - g[i]).abs() / fd.abs().max(g[i].abs()).max(0.05 * gnorm / (base.len() as f64).sqrt());
        worst = worst.max(err);
        assert!(
            err < 2e-2,
            "coordinate {i}: analytic {} vs finite difference {fd} (rel err {err:.2e})",
            g[i]
        );
    }
    eprintln!("fluency 0.3: worst relative error {worst:.2e} over 12 coordinates (|g| = {gnorm:.3e})");
    // The fluency term carries weight here: without it the gradient differs.
    let mut plain = BatchObjective {
        clf: &clf,
        batch: obj.batch.clone(),
        fluency: 0.0,
        forward_s: None,
    };
    let (_, g0) = plain.loss_and_grad(&prompt, &ids).unwrap();
    let d = (g0
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .zip(&g)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>())
    .sqrt();
    assert!(
        d > 0.1 * gnorm,
        "the fluency term moved the gradient by only {d:.3e} of {gnorm:.3e}"
    );
}

/// At a projected prompt the tuned fluency term has the measured value (mean NLL of the prompt's tokens), and
/// its gradient on the last prompt vector, which no later prompt position reads, is exactly the pull of the
/// tied head: minus the hidden state that predicts it, over the number of predicted tokens.
#[test]
fn fluency_loss_equals_the_measure_and_pulls_each_token_towards_its_prediction() {
    let fx = pez_models::testing::fixtures();
    let task = pez_tasks::TaskSpec::resolve(fx.join("transfer/task.toml").to_str().unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for arch in ["gpt2", "opt", "opt350", "llama", "gemma3"] {
        let dir = pez_models::testing::tiny_lm(tmp.path(), arch);
        let lm = pez_models::load_lm(dir.to_str().unwrap(), DType::F64, &Device::Cpu).unwrap();
        let ids = [5u32, 9, 14, 3, 7];
        let clf = pez_classify::Classifier::new(&lm, &task.prompt, ids.len()).unwrap();
        let var = candle_core::Var::from_tensor(&lm.model.embed_ids(&ids).unwrap()).unwrap();
        let prefix = clf.prefix(Some(var.as_tensor())).unwrap();
        let measured = clf.fluency(&prefix, &ids).unwrap().to_scalar::<f64>().unwrap();
        let loss = clf.fluency_loss(&prefix, &ids).unwrap();
        let tuned = loss.to_scalar::<f64>().unwrap();
        assert!(
            (measured - tuned).abs() < 1e-9 * measured.abs().max(1.0),
            "{arch}: {tuned} vs measured {measured}"
        );
        let g = loss
            .backward()
            .unwrap()
            .get(var.as_tensor())
            .unwrap()
            .get(ids.len() - 1)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let h = prefix.hidden.as_ref().unwrap();
        let predicted = ids.len() - clf.bos.is_none() as usize;
        let want = (h.get(h.dim(0).unwrap() - 2).unwrap() * (-1.0 / predicted as f64))
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let err = g.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
        let scale = want.iter().map(|v| v.abs()).fold(0f64, f64::max);
        assert!(
            scale > 0.0 && err < 1e-9 * scale,
            "{arch}: the last token's gradient is off by {err:.2e} (scale {scale:.2e})"
        );
        eprintln!("{arch}: fluency {tuned:.4} nats; last token's pull {scale:.3e}");
    }
}
