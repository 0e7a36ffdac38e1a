//! Hugging Face hub cache layout: a repository found under $HF_HUB_CACHE resolves and loads; a missing one fails
//! with a message that says how to get it (HF_HUB_OFFLINE=1 keeps this test off the network).

mod common;
use candle_core::{DType, Device};

#[test]
fn hub_cache_snapshot_resolves_and_missing_models_say_how_to_get_them() {
    let cache = tempfile::tempdir().unwrap();
    let snap = cache.path().join("models--tiny-org--tiny-gpt2/snapshots/0123abc");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(cache.path().join("models--tiny-org--tiny-gpt2/refs")).unwrap();
    std::fs::write(cache.path().join("models--tiny-org--tiny-gpt2/refs/main"), "0123abc").unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(common::fixture("transfer/gpt2").join(f), snap.join(f)).unwrap();
    }
    std::env::set_var("HF_HUB_CACHE", cache.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let lm = pez_models::load_lm("tiny-org/tiny-gpt2", DType::F32, &Device::Cpu).unwrap();
    assert_eq!(lm.model.info().arch, "gpt2");
    let err = pez_models::load_lm("gpt2-xl", DType::F32, &Device::Cpu).err().unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("openai-community/gpt2-xl") && msg.contains("huggingface-cli download"),
        "{msg}"
    );

    // An open_clip-only repository (open_clip_config.json, no config.json) resolves and loads as well.
    let snap = cache.path().join("models--tiny-org--tiny-openclip/snapshots/4567def");
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["open_clip_config.json", "open_clip_model.safetensors"] {
        std::fs::copy(common::fixture("openclip_native").join(f), snap.join(f)).unwrap();
    }
    let pez_hub::ModelSpec::HfDir(dir) = pez_hub::ModelSpec::resolve("tiny-org/tiny-openclip").unwrap() else {
        panic!("not a directory")
    };
    let clip = pez_models::clip::Clip::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(clip.text.context_length(), 16);
}
