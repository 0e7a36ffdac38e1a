//! Where a prompt starts (`--init`), on the tiny GPT-2: the verbalizers tiled, the template's tokens tiled, or
//! tokens drawn with the seed; and the `random_init` switch of older runs' configurations read as `init`.

use candle_core::{DType, Device};
use pez_config::{Init, TuneConfig, TuneSettings};
use pez_hub::tokenizer;
use pez_tune::Run;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    pez_models::testing::fixtures().join("transfer")
}

/// The token ids the run starts from: its projection before any step (a token's own embedding is its nearest).
fn first_ids(init: Init, seed: u64, out: PathBuf) -> Vec<u32> {
    let f = fixtures();
    let cfg = TuneSettings {
        task: Some(f.join("task.toml").to_string_lossy().into()),
        model: Some(f.join("gpt2").to_string_lossy().into()),
        train: Some(f.join("dev.tsv")),
        holdout: Some(4),
        prompt_len: Some(5),
        steps: Some(2),
        skip_dev: Some(true),
        dtype: Some(pez_nn::Dtype::F32),
        init: Some(init),
        seed: Some(seed),
        out: Some(out),
        ..Default::default()
    }
    .resolve(&Device::Cpu)
    .unwrap();
    let lm = pez_models::load_lm(&cfg.model, DType::F32, &Device::Cpu).unwrap();
    let mut run = Run::open(cfg, None, &lm).unwrap();
    run.evaluate().unwrap().token_ids
}

#[test]
fn a_prompt_starts_from_the_labels_the_template_or_the_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let lm = pez_models::load_lm(fixtures().join("gpt2").to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
    let ids = |t: &str| tokenizer::encode(&lm.tokenizer, t).unwrap();
    let tiled = |v: Vec<u32>| -> Vec<u32> { v.iter().cycle().take(5).copied().collect() };
    let (neg, pos) = (ids(" negative")[0], ids(" positive")[0]);
    assert_eq!(first_ids(Init::Label, 0, tmp.path().join("l")), tiled(vec![neg, pos]));
    assert_eq!(
        first_ids(Init::Template, 0, tmp.path().join("t")),
        tiled(ids(" It was"))
    );
    let (r0, r0_again, r1) = (
        first_ids(Init::Random, 0, tmp.path().join("r0")),
        first_ids(Init::Random, 0, tmp.path().join("r0b")),
        first_ids(Init::Random, 1, tmp.path().join("r1")),
    );
    assert_eq!(r0, r0_again, "the seed fixes the draw");
    assert_ne!(r0, r1, "another seed draws other tokens");
}

#[test]
fn older_runs_random_init_switch_reads_as_init() {
    let cfg = TuneSettings::default().resolve(&Device::Cpu).unwrap();
    let mut v = serde_json::to_value(&cfg).unwrap();
    let o = v.as_object_mut().unwrap();
    assert_eq!(o.remove("init").unwrap(), "label");
    for (old, want) in [(true, Init::Random), (false, Init::Label)] {
        o.insert("random_init".into(), old.into());
        let c: TuneConfig = serde_json::from_value(serde_json::Value::Object(o.clone())).unwrap();
        assert_eq!(c.init, want);
    }
    o.remove("random_init");
    let c: TuneConfig = serde_json::from_value(serde_json::Value::Object(o.clone())).unwrap();
    assert_eq!(c.init, Init::Label, "neither written: the default");
}
