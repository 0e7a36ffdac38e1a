//! Golden tests (our logits vs transformers on tiny random checkpoints) and input-gradient checks for every
//! causal language model.

mod common;
use candle_core::{DType, Device, Tensor};
use common::*;
use pez_models::load::load_hf_model;
use pez_models::{embed_batch, LanguageModel};

fn golden(name: &str) {
    let model = load_hf_model(&fixture(name), DType::F32, &Device::Cpu).unwrap();
    let exp = expected(name);
    let lengths = usizes(&exp["lengths"]);
    let rows: Vec<Vec<u32>> = ids(&exp["input_ids"])
        .into_iter()
        .zip(&lengths)
        .map(|(r, &l)| r[..l].to_vec())
        .collect();
    let (emb, lengths) = embed_batch(model.as_ref(), &rows).unwrap();
    let logits = model.lm_head(&model.hidden_states(&emb, &lengths).unwrap()).unwrap();
    let err = max_abs_diff_rows(&logits, &exp["logits"], &lengths);
    eprintln!("{name}: max |ours - transformers| = {err:.2e}");
    assert!(err < 1e-4, "{name}: logits differ from transformers by {err}");
    // The next-token shortcut reads the same numbers at the last real position.
    let next = model.next_token_logits(&emb, &lengths).unwrap();
    for (i, &l) in lengths.iter().enumerate() {
        let want = exp["logits"].get(i).unwrap().get(l - 1).unwrap();
        assert!(max_abs_diff(&next.get(i).unwrap(), &want) < 1e-4);
    }
}

/// loss = sum over rows of <w, log_softmax(next-token logits)> + a term on every position's hidden state, so
/// gradients flow through every block at every position.
fn grad(name: &str) {
    let model = load_hf_model(&fixture(name), DType::F64, &Device::Cpu).unwrap();
    let m: &dyn LanguageModel = model.as_ref();
    let d = m.info().hidden_size;
    let x = random(&[2, 6, d], 1, DType::F64);
    let lengths = [6usize, 4];
    let v = m.info().vocab_size;
    let w = random(&[2, v], 2, DType::F64);
    let loss = |x: &Tensor| {
        let lp = pez_nn::ops::log_softmax_last(&m.next_token_logits(x, &lengths).unwrap()).unwrap();
        let h = m.hidden_states(x, &lengths).unwrap();
        (lp * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .add(&h.sqr().unwrap().sum_all().unwrap().affine(0.01, 0.0).unwrap())
            .unwrap()
    };
    check_grad(&x, loss, 24, 1e-3);
}

macro_rules! model_tests {
    ($($name:ident),*) => {$(
        mod $name {
            #[test] fn golden() { super::golden(stringify!($name)) }
            #[test] fn grad() { super::grad(stringify!($name)) }
        }
    )*};
}
model_tests!(gpt2, opt, opt350, llama, gemma3);

/// A shared prefix run once and continued from its key/value cache gives the hidden states of running
/// `[prefix ; row]` whole, and gradients reach the prefix through the cache.
fn prefix_cache(name: &str) {
    let model = load_hf_model(&fixture(name), DType::F64, &Device::Cpu).unwrap();
    let m: &dyn LanguageModel = model.as_ref();
    let dec = m.as_decoder().expect("a causal decoder continues from a cache");
    let d = m.info().hidden_size;
    let (p, s) = (3, 7);
    let prefix = random(&[1, p, d], 3, DType::F64);
    let rows = random(&[2, s, d], 4, DType::F64);
    let lengths = [s, 4];
    let whole = Tensor::cat(&[&prefix.broadcast_as((2, p, d)).unwrap(), &rows], 1).unwrap();
    let want = m.hidden_states(&whole, &[p + s, p + 4]).unwrap();
    let (hp, cache) = dec.forward_after(&prefix, None, None).unwrap();
    let (hr, cache2) = dec.forward_after(&rows, Some(&cache), None).unwrap();
    assert_eq!((cache.len, cache2.len), (p, p + s));
    let err_prefix = max_abs_diff(&hp.get(0).unwrap(), &want.get(0).unwrap().narrow(0, 0, p).unwrap());
    let err_rows = max_abs_diff_rows(&hr, &want.narrow(1, p, s).unwrap(), &lengths);
    eprintln!("{name}: cached vs whole: prefix {err_prefix:.2e}, rows {err_rows:.2e}");
    assert!(
        err_prefix < 1e-10 && err_rows < 1e-10,
        "{name}: cache changes the result ({err_prefix}, {err_rows})"
    );
    // The same rows packed into one sequence without padding give the same hidden states.
    let packed = pez_nn::Packed::new(&lengths);
    let flat = Tensor::cat(
        &[
            &rows.get(0).unwrap().narrow(0, 0, s).unwrap(),
            &rows.get(1).unwrap().narrow(0, 0, 4).unwrap(),
        ],
        0,
    )
    .unwrap();
    let hk = dec
        .forward_after(&flat.unsqueeze(0).unwrap(), Some(&cache), Some(&packed))
        .unwrap()
        .0
        .get(0)
        .unwrap();
    let err_packed = max_abs_diff(&hk.narrow(0, 0, s).unwrap(), &hr.get(0).unwrap()).max(max_abs_diff(
        &hk.narrow(0, s, 4).unwrap(),
        &hr.get(1).unwrap().narrow(0, 0, 4).unwrap(),
    ));
    eprintln!("{name}: packed vs padded rows {err_packed:.2e}");
    assert!(err_packed < 1e-10, "{name}: packing changes the result ({err_packed})");
    assert_eq!(packed.last_tokens(), vec![s - 1, s + 3]);
    let v = m.info().vocab_size;
    let w = random(&[2, v], 5, DType::F64);
    let packed_loss = |pre: &Tensor| {
        let (hp, cache) = dec.forward_after(pre, None, None).unwrap();
        let h = dec
            .forward_after(&flat.unsqueeze(0).unwrap(), Some(&cache), Some(&packed))
            .unwrap()
            .0
            .get(0)
            .unwrap();
        let last = pez_nn::ops::rows_at(&h, &packed.last_tokens()).unwrap();
        let lp = pez_nn::ops::log_softmax_last(&m.lm_head(&last).unwrap()).unwrap();
        (lp * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .add(&hp.sqr().unwrap().sum_all().unwrap().affine(0.01, 0.0).unwrap())
            .unwrap()
    };
    check_grad(&prefix, packed_loss, 12, 1e-3);
    let loss = |pre: &Tensor| {
        let (hp, cache) = dec.forward_after(pre, None, None).unwrap();
        let (hr, _) = dec.forward_after(&rows, Some(&cache), None).unwrap();
        let last = pez_nn::ops::gather_rows(&hr, &[s - 1, 3]).unwrap();
        let lp = pez_nn::ops::log_softmax_last(&m.lm_head(&last).unwrap()).unwrap();
        (lp * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .add(&hp.sqr().unwrap().sum_all().unwrap().affine(0.01, 0.0).unwrap())
            .unwrap()
    };
    check_grad(&prefix, loss, 12, 1e-3);
}

mod prefix_cache {
    #[test]
    fn gpt2() {
        super::prefix_cache("gpt2")
    }
    #[test]
    fn opt() {
        super::prefix_cache("opt")
    }
    #[test]
    fn opt350() {
        super::prefix_cache("opt350")
    }
    #[test]
    fn llama() {
        super::prefix_cache("llama")
    }
    #[test]
    fn gemma3() {
        super::prefix_cache("gemma3")
    }
}

/// Every causal decoder says it is one (the prefix cache and packing depend on it); T5 says it is not.
#[test]
fn models_say_whether_they_are_causal_decoders() {
    for name in ["gpt2", "opt", "opt350", "llama", "gemma3"] {
        let m = load_hf_model(&fixture(name), DType::F32, &Device::Cpu).unwrap();
        assert!(m.as_decoder().is_some(), "{name}");
        assert_eq!(m.as_decoder().unwrap().info().arch, m.info().arch);
    }
    let t5 = load_hf_model(&fixture("t5"), DType::F32, &Device::Cpu).unwrap();
    assert!(t5.as_decoder().is_none());
}
