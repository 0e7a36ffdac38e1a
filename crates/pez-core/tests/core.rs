//! Optimizers against PyTorch/transformers, projection against brute force, and PEZ recovering a known prompt.

use candle_core::{DType, Device, Tensor};
use pez_core::{Adafactor, AdamW, Method, Objective, Optimizer, OptimizerKind, Pez, Projector};
use serde::Deserialize;

#[derive(Deserialize)]
struct Traj {
    lr: f64,
    #[serde(default)]
    weight_decay: f64,
    steps: Vec<Vec<f32>>,
}
#[derive(Deserialize)]
struct Fixture {
    p0: Vec<f32>,
    grads: Vec<Vec<f32>>,
    rows: usize,
    cols: usize,
    adafactor: Traj,
    adamw: Traj,
}

fn fixture() -> Fixture {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/optim.json")).unwrap(),
    )
    .unwrap()
}

fn check(opt: &mut Optimizer, t: &Traj, f: &Fixture, name: &str) {
    let mut p = f.p0.clone();
    for (i, (g, want)) in f.grads.iter().zip(&t.steps).enumerate() {
        opt.update(&mut p, g, f.rows, f.cols, t.lr);
        let err = p.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "{name} step {}: max |ours - torch| = {err}", i + 1);
    }
}

#[test]
fn adafactor_matches_transformers() {
    let f = fixture();
    check(
        &mut Optimizer::Adafactor(Adafactor::default()),
        &f.adafactor,
        &f,
        "adafactor",
    );
}

#[test]
fn adamw_matches_pytorch() {
    let f = fixture();
    let mut o = Optimizer::AdamW(AdamW {
        weight_decay: f.adamw.weight_decay,
        ..AdamW::default()
    });
    check(&mut o, &f.adamw, &f, "adamw");
}

fn random(shape: (usize, usize), seed: u64) -> Tensor {
    let mut s = seed;
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn projection_is_exact_cosine_nearest_neighbour_and_honours_deny_lists() {
    let vocab = random((500, 16), 1);
    // Scale rows differently: cosine, not dot product or L2, must decide.
    let scales: Vec<f32> = (0..500).map(|i| 0.1 + (i % 7) as f32).collect();
    let vocab = vocab
        .broadcast_mul(&Tensor::from_vec(scales, (500, 1), &Device::Cpu).unwrap())
        .unwrap();
    let queries = random((40, 16), 2);
    let mut allowed = vec![true; 500];
    let proj = Projector::new(&vocab, &allowed).unwrap();
    let got = proj.nearest(&queries).unwrap();
    let brute = |allowed: &[bool]| -> Vec<u32> {
        let v = vocab.to_vec2::<f32>().unwrap();
        queries
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|q| {
                let nq = q.iter().map(|x| x * x).sum::<f32>().sqrt();
                (0..500)
                    .filter(|&i| allowed[i])
                    .map(|i| {
                        let dot: f32 = q.iter().zip(&v[i]).map(|(a, b)| a * b).sum();
                        (i, dot / (nq * v[i].iter().map(|x| x * x).sum::<f32>().sqrt()))
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap()
                    .0 as u32
            })
            .collect()
    };
    assert_eq!(got, brute(&allowed));
    // Deny every token chosen above: none may come back, and the new choice is the best remaining one.
    for &i in &got {
        allowed[i as usize] = false;
    }
    let proj = Projector::new(&vocab, &allowed).unwrap();
    let again = proj.nearest(&queries).unwrap();
    assert!(again.iter().all(|&i| allowed[i as usize]));
    assert_eq!(again, brute(&allowed));
}

/// Loss: 1 - cosine between the final hidden states (all positions) of the prompt and of a target sequence,
/// through the tiny Llama fixture.
struct MatchTarget<'a> {
    model: &'a dyn pez_models::LanguageModel,
    target: Tensor,
}

impl MatchTarget<'_> {
    fn features(&self, x: &Tensor) -> Tensor {
        let h = self
            .model
            .hidden_states(&x.unsqueeze(0).unwrap(), &[x.dim(0).unwrap()])
            .unwrap();
        h.flatten_all().unwrap()
    }
}

impl Objective for MatchTarget<'_> {
    fn loss_and_grad(&mut self, prompt: &Tensor, _ids: &[u32]) -> anyhow::Result<(f32, Tensor)> {
        let var = candle_core::Var::from_tensor(prompt)?;
        let f = self.features(var.as_tensor());
        let cos =
            (&f * &self.target)?.sum_all()? / (f.sqr()?.sum_all()?.sqrt()? * self.target.sqr()?.sum_all()?.sqrt()?)?;
        let loss = (cos?.neg()? + 1.0)?;
        let g = loss.backward()?.get(var.as_tensor()).unwrap().clone();
        Ok((loss.to_scalar::<f32>()?, g))
    }
}

#[test]
fn pez_recovers_a_target_prompt_on_a_tiny_model() {
    let dir = pez_models::testing::fixtures().join("llama");
    let model = pez_models::load::load_hf_model(&dir, DType::F32, &Device::Cpu).unwrap();
    let m = model.as_ref();
    let target_ids = [5u32, 17, 42, 9];
    let mut obj = MatchTarget {
        model: m,
        target: Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
    };
    obj.target = obj.features(&m.embed_ids(&target_ids).unwrap());
    let projector = Projector::new(m.token_embeddings(), &[true; 64]).unwrap();
    let mut best = (f32::MAX, vec![]);
    for seed in 0..2u64 {
        let init = random((4, 32), 100 + seed).affine(0.1, 0.0).unwrap();
        let opt = Optimizer::new(OptimizerKind::Adamw, 0.0);
        let mut pez = Pez::new(
            Method::Pez,
            Projector::new(m.token_embeddings(), &[true; 64]).unwrap(),
            &init,
            opt,
            300,
            0.1,
            seed,
        )
        .unwrap();
        for _ in 0..300 {
            let r = pez.step(&mut obj).unwrap();
            if r.loss < best.0 {
                best = (r.loss, r.ids.clone());
            }
        }
    }
    let (loss, ids) = best;
    eprintln!("best hard prompt {ids:?} (target {target_ids:?}), loss {loss:.2e}");
    assert_eq!(ids, target_ids, "PEZ did not recover the target (best loss {loss})");
    assert!(loss < 1e-5);
    // The recovered prompt projects onto itself.
    assert_eq!(projector.nearest(&m.embed_ids(&ids).unwrap()).unwrap(), ids);
}
