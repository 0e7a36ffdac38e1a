//! Golden tests and input-gradient checks for T5, BERT and the CLIP towers (tiny random checkpoints made by
//! scripts/make_fixtures.py with transformers).

mod common;
use candle_core::{DType, Device, Tensor};
use common::*;
use pez_models::bert::Bert;
use pez_models::clip::Clip;
use pez_models::embed_batch;
use pez_models::load::load_hf_model;

fn rows(exp: &std::collections::HashMap<String, Tensor>) -> (Vec<Vec<u32>>, Vec<usize>) {
    let lengths = usizes(&exp["lengths"]);
    let rows = ids(&exp["input_ids"])
        .into_iter()
        .zip(&lengths)
        .map(|(r, &l)| r[..l].to_vec())
        .collect();
    (rows, lengths)
}

#[test]
fn t5_golden() {
    let m = load_hf_model(&fixture("t5"), DType::F32, &Device::Cpu).unwrap();
    let exp = expected("t5");
    let (rows, _) = rows(&exp);
    let (emb, lengths) = embed_batch(m.as_ref(), &rows).unwrap();
    let t5 = pez_models::t5::T5::load(
        &pez_hub::checkpoint::safetensors_dir(&fixture("t5"), DType::F32, &Device::Cpu).unwrap(),
        pez_hub::checkpoint::read_config(&fixture("t5")).unwrap(),
    )
    .unwrap();
    let enc_err = max_abs_diff_rows(&t5.encode(&emb, &lengths).unwrap(), &exp["encoder_hidden"], &lengths);
    let err = max_abs_diff(&m.next_token_logits(&emb, &lengths).unwrap(), &exp["logits"]);
    eprintln!("t5: encoder {enc_err:.2e}, first decoder step logits {err:.2e}");
    assert!(enc_err < 1e-4 && err < 1e-4);
}

#[test]
fn t5_grad() {
    let m = load_hf_model(&fixture("t5"), DType::F64, &Device::Cpu).unwrap();
    let x = random(&[2, 6, m.info().hidden_size], 3, DType::F64);
    let w = random(&[2, m.info().vocab_size], 4, DType::F64);
    let loss = |x: &Tensor| {
        let lp = pez_nn::ops::log_softmax_last(&m.next_token_logits(x, &[6, 4]).unwrap()).unwrap();
        (lp * &w).unwrap().sum_all().unwrap()
    };
    check_grad(&x, loss, 24, 1e-3);
}

#[test]
fn t5_relative_buckets_match_transformers() {
    use pez_models::t5::relative_position_bucket as b;
    // Values printed by transformers 5.24 T5Attention._relative_position_bucket(num_buckets=32, max_distance=128).
    let bi: Vec<usize> = [-200, -64, -20, -8, -7, -1, 0, 1, 7, 8, 20, 64, 200]
        .iter()
        .map(|&r| b(r, true, 32, 128))
        .collect();
    assert_eq!(bi, vec![15, 14, 10, 8, 7, 1, 0, 17, 23, 24, 26, 30, 31]);
    let uni: Vec<usize> = [-200, -64, -20, -16, -15, -1, 0, 5]
        .iter()
        .map(|&r| b(r, false, 32, 128))
        .collect();
    assert_eq!(uni, vec![31, 26, 17, 16, 15, 1, 0, 0]);
}

#[test]
fn bert_golden() {
    let m = Bert::from_dir(&fixture("bert"), DType::F32, &Device::Cpu).unwrap();
    let exp = expected("bert");
    let (rows, lengths) = rows(&exp);
    let s = lengths[0];
    let flat: Vec<u32> = rows
        .iter()
        .flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(0, s - r.len())))
        .collect();
    let emb = m
        .token_embeddings()
        .index_select(&Tensor::new(flat.as_slice(), &Device::Cpu).unwrap(), 0)
        .unwrap()
        .reshape((2, s, 32))
        .unwrap();
    let h = m.hidden_states(&emb, &lengths).unwrap();
    let err = max_abs_diff_rows(&h, &exp["hidden"], &lengths);
    let perr = max_abs_diff(&m.mean_pool(&h, &lengths).unwrap(), &exp["mean_pooled"]);
    eprintln!("bert: hidden {err:.2e}, mean pooled {perr:.2e}");
    assert!(err < 1e-4 && perr < 1e-4);
}

#[test]
fn bert_grad() {
    let m = Bert::from_dir(&fixture("bert"), DType::F64, &Device::Cpu).unwrap();
    let x = random(&[2, 6, 32], 5, DType::F64);
    let w = random(&[2, 32], 6, DType::F64);
    check_grad(
        &x,
        |x| (m.encode(x, &[6, 4]).unwrap() * &w).unwrap().sum_all().unwrap(),
        24,
        1e-3,
    );
}

fn clip_golden(name: &str) {
    let m = Clip::from_dir(&fixture(name), DType::F32, &Device::Cpu).unwrap();
    let exp = expected(name);
    let ids: Vec<u32> = common::ids(&exp["input_ids"]).concat();
    let emb = m
        .text
        .token_embeddings()
        .index_select(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap(), 0)
        .unwrap()
        .reshape((2, 7, 32))
        .unwrap();
    let eot = usizes(&exp["eot"]);
    let herr = max_abs_diff(&m.text.hidden_states(&emb).unwrap(), &exp["text_hidden"]);
    let terr = max_abs_diff(&m.text.features(&emb, &eot).unwrap(), &exp["text_features"]);
    let ierr = max_abs_diff(
        &m.vision.features(&exp["pixel_values"]).unwrap(),
        &exp["image_features"],
    );
    eprintln!("{name}: text hidden {herr:.2e}, text features {terr:.2e}, image features {ierr:.2e}");
    assert!(herr < 1e-4 && terr < 1e-4 && ierr < 1e-4);
}

#[test]
fn clip_golden_quick_gelu() {
    clip_golden("clip")
}

#[test]
fn openclip_golden_gelu() {
    clip_golden("openclip")
}

/// open_clip's own layout (made by open_clip, not transformers): safetensors and PyTorch pickle weights.
fn openclip_native_golden(name: &str) {
    let dir = fixture(name);
    let m = Clip::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();
    let exp = expected(name);
    let ids: Vec<u32> = common::ids(&exp["input_ids"]).concat();
    let emb = m
        .text
        .token_embeddings()
        .index_select(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap(), 0)
        .unwrap()
        .reshape((2, 16, 32))
        .unwrap();
    let terr = max_abs_diff(
        &m.text.features(&emb, &usizes(&exp["eot"])).unwrap(),
        &exp["text_features"],
    );
    let ierr = max_abs_diff(
        &m.vision.features(&exp["pixel_values"]).unwrap(),
        &exp["image_features"],
    );
    eprintln!("{name}: text features {terr:.2e}, image features {ierr:.2e}");
    assert!(terr < 1e-4 && ierr < 1e-4);
    let (mean, std) = pez_models::clip::image_mean_std(&dir).unwrap().expect("preprocess_cfg");
    assert_eq!((mean, std), ([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]));
}

#[test]
fn openclip_native_safetensors_golden() {
    openclip_native_golden("openclip_native")
}

#[test]
fn openclip_native_pickle_golden() {
    openclip_native_golden("openclip_native_bin")
}

#[test]
fn openclip_native_refuses_unsupported_towers() {
    let dir = std::env::temp_dir().join(format!("pez-openclip-attnpool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("openclip_native");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("open_clip_config.json")).unwrap()).unwrap();
    cfg["model_cfg"]["vision_cfg"]["attentional_pool"] = true.into();
    std::fs::write(dir.join("open_clip_config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        src.join("open_clip_model.safetensors"),
        dir.join("open_clip_model.safetensors"),
    )
    .unwrap();
    let err = Clip::from_dir(&dir, DType::F32, &Device::Cpu)
        .err()
        .expect("must refuse")
        .to_string();
    assert!(err.contains("attentional_pool"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clip_text_grad() {
    let m = Clip::from_dir(&fixture("openclip"), DType::F64, &Device::Cpu).unwrap();
    let x = random(&[2, 6, 32], 7, DType::F64);
    let w = random(&[2, 24], 8, DType::F64);
    check_grad(
        &x,
        |x| (m.text.features(x, &[5, 3]).unwrap() * &w).unwrap().sum_all().unwrap(),
        24,
        1e-3,
    );
}
