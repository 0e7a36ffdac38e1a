//! SmolLM2-135M-Instruct (real GGUF weights, from scripts/setup.sh) against transformers loading the same file.

mod common;
use candle_core::{DType, Device, Tensor};
use common::NextToken;
use pez_hub::tokenizer;
use pez_models::load_lm;
use serde::Deserialize;

fn model_path() -> std::path::PathBuf {
    let p = pez_hub::models_dir().join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} missing: run scripts/setup.sh first", p.display());
    p
}

#[test]
fn next_token_logprobs_match_transformers() {
    let lm = load_lm(model_path().to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
    let cases: Vec<NextToken> =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("smollm2/next_token.json")).unwrap()).unwrap();
    let mut worst = 0f32;
    for c in cases {
        assert_eq!(
            tokenizer::encode(&lm.tokenizer, &c.text).unwrap(),
            c.ids,
            "token ids of {:?}",
            c.text
        );
        let emb = lm.model.embed_ids(&c.ids).unwrap().unsqueeze(0).unwrap();
        let h = lm.model.hidden_states(&emb, &[c.ids.len()]).unwrap();
        let lp = pez_nn::ops::log_softmax_last(&lm.model.lm_head(&h).unwrap())
            .unwrap()
            .get(0)
            .unwrap();
        for (pos, (ids, want)) in c.top_ids.iter().zip(&c.top_logprobs).enumerate() {
            let got = lp
                .get(pos)
                .unwrap()
                .index_select(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap(), 0)
                .unwrap();
            let got = got.to_vec1::<f32>().unwrap();
            for (g, w) in got.iter().zip(want) {
                worst = worst.max((g - w).abs());
            }
        }
    }
    eprintln!("SmolLM2 max |log p ours - transformers| over top-20 tokens at every position: {worst:.2e}");
    assert!(worst < 1e-3, "log-probs differ by {worst}");
}

#[derive(Deserialize)]
struct DevIds {
    ids: Vec<Vec<u32>>,
}

#[test]
fn tokenizer_matches_transformers_on_sst2_dev() {
    let (_, content) = {
        let mut f = std::fs::File::open(model_path()).unwrap();
        ((), candle_core::quantized::gguf_file::Content::read(&mut f).unwrap())
    };
    let tok = tokenizer::from_gguf(&content).unwrap();
    let want: DevIds =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("smollm2/sst2_dev_ids.json")).unwrap()).unwrap();
    let dev = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/sst2/dev.tsv"
    ))
    .expect("../shared/data/sst2/dev.tsv");
    let rows: Vec<&str> = dev.lines().skip(1).map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(rows.len(), 872);
    assert_eq!(want.ids.len(), rows.len());
    let mut mismatches = 0;
    for (r, w) in rows.iter().zip(&want.ids) {
        if &tokenizer::encode(&tok, r).unwrap() != w {
            mismatches += 1;
        }
    }
    assert_eq!(
        mismatches,
        0,
        "{mismatches} of {} sentences tokenized differently",
        rows.len()
    );
}

/// In bf16 (bf16 products, f32 accumulation) the next token's top 5 are the f32 model's top 5, in the same order,
/// for every fixture text; the log-probabilities stay within bf16's few-percent of f32's.
#[test]
fn bf16_keeps_the_f32_top5_next_tokens() {
    let f32_lm = load_lm(model_path().to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
    let bf16_lm = load_lm(model_path().to_str().unwrap(), DType::BF16, &Device::Cpu).unwrap();
    let cases: Vec<NextToken> =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("smollm2/next_token.json")).unwrap()).unwrap();
    let top5 = |lm: &pez_models::LoadedLm, ids: &[u32]| -> (Vec<usize>, Vec<f32>) {
        let emb = lm.model.embed_ids(ids).unwrap().unsqueeze(0).unwrap();
        let lp = pez_nn::ops::log_softmax_last(&lm.model.next_token_logits(&emb, &[ids.len()]).unwrap())
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut order: Vec<usize> = (0..lp.len()).collect();
        order.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]));
        order.truncate(5);
        let top = order.iter().map(|&i| lp[i]).collect();
        (order, top)
    };
    let mut worst = 0f32;
    for c in &cases {
        let ((ia, la), (ib, lb)) = (top5(&f32_lm, &c.ids), top5(&bf16_lm, &c.ids));
        assert_eq!(ia, ib, "top-5 next tokens after {:?}: f32 {ia:?}, bf16 {ib:?}", c.text);
        worst = la.iter().zip(&lb).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
    }
    eprintln!(
        "SmolLM2 bf16: the f32 top-5 next tokens after all {} texts; max |log p bf16 - f32| among them {worst:.3}",
        cases.len()
    );
    assert!(worst < 0.1, "bf16 log-probs differ from f32's by {worst}");
}
