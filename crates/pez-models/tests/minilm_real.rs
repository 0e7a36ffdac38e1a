//! all-MiniLM-L6-v2 (real safetensors, from scripts/setup.sh) against transformers: token ids and mean-pooled
//! sentence features.

mod common;
use candle_core::{DType, Device, Tensor};
use pez_models::bert::Bert;

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    mean_pooled: Vec<f32>,
}

#[test]
fn minilm_features_match_transformers() {
    let dir = pez_hub::models_dir().join("all-MiniLM-L6-v2");
    assert!(dir.exists(), "{} missing: run scripts/setup.sh first", dir.display());
    let bert = Bert::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();
    let tok = pez_hub::tokenizer::from_dir(&dir).unwrap();
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("minilm_real/features.json")).unwrap()).unwrap();
    let mut worst = 0f32;
    for c in cases {
        let ids = tok.encode(c.text.as_str(), true).unwrap().get_ids().to_vec();
        assert_eq!(ids, c.ids, "{:?}", c.text);
        let x = bert
            .token_embeddings()
            .index_select(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap(), 0)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let f = bert
            .encode(&x, &[ids.len()])
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        worst = f
            .iter()
            .zip(&c.mean_pooled)
            .map(|(a, b)| (a - b).abs())
            .fold(worst, f32::max);
    }
    eprintln!("MiniLM max |ours - transformers| = {worst:.2e}");
    assert!(worst < 1e-4);
}
