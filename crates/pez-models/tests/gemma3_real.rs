//! Gemma 3 270M (real Q4_K_M GGUF weights, from scripts/setup.sh) against transformers loading the same file:
//! next-token log-probs and the SentencePiece tokenizer rebuilt from the GGUF metadata.

mod common;
use candle_core::{DType, Device, Tensor};
use common::NextToken;
use pez_hub::tokenizer;
use pez_models::load_lm;
use serde::Deserialize;

#[derive(Deserialize)]
struct DevIds {
    ids: Vec<Vec<u32>>,
}

#[test]
fn gemma3_logprobs_and_tokenizer_match_transformers() {
    let lm = load_lm("gemma3-270m", DType::F32, &Device::Cpu).unwrap();
    assert_eq!(lm.bos, Some(2), "Gemma expects <bos>");
    let cases: Vec<NextToken> =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("gemma3_real/next_token.json")).unwrap())
            .unwrap();
    let mut worst = 0f32;
    for c in cases {
        let ids: Vec<u32> = lm
            .bos
            .into_iter()
            .chain(tokenizer::encode(&lm.tokenizer, &c.text).unwrap())
            .collect();
        assert_eq!(ids, c.ids, "token ids of {:?}", c.text);
        let emb = lm.model.embed_ids(&ids).unwrap().unsqueeze(0).unwrap();
        let h = lm.model.hidden_states(&emb, &[ids.len()]).unwrap();
        let lp = pez_nn::ops::log_softmax_last(&lm.model.lm_head(&h).unwrap())
            .unwrap()
            .get(0)
            .unwrap();
        for (pos, (top, want)) in c.top_ids.iter().zip(&c.top_logprobs).enumerate() {
            let got = lp
                .get(pos)
                .unwrap()
                .index_select(&Tensor::new(top.as_slice(), &Device::Cpu).unwrap(), 0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (g, w) in got.iter().zip(want) {
                worst = worst.max((g - w).abs());
            }
        }
    }
    eprintln!("Gemma 3 max |log p ours - transformers| over top-20 tokens at every position: {worst:.2e}");
    assert!(worst < 1e-3, "log-probs differ by {worst}");

    let want: DevIds =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("gemma3_real/sst2_dev_ids.json")).unwrap())
            .unwrap();
    let dev = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/sst2/dev.tsv"
    ))
    .unwrap();
    let rows: Vec<&str> = dev.lines().skip(1).map(|l| l.split('\t').next().unwrap()).collect();
    let bad: Vec<&str> = rows
        .iter()
        .zip(&want.ids)
        .filter(|(r, w)| &tokenizer::encode(&lm.tokenizer, r).unwrap() != *w)
        .map(|(r, _)| *r)
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} sentences tokenized differently, e.g. {:?}",
        bad.len(),
        rows.len(),
        bad.first()
    );
}
