//! `pez invert` and `pez score` end to end on the tiny random CLIP fixture (with a word-level CLIP-style
//! tokenizer) and two shared images: the reported best cosine is what `pez score` gives for the printed prompt.

use pez_models::testing::fixtures;
use std::path::Path;
use std::process::Command;

#[test]
fn invert_then_score_agree_on_the_tiny_clip() {
    invert_then_score("openclip", &["config.json", "model.safetensors"]);
}

/// The same with a model in open_clip's own layout (made by open_clip, weights as a PyTorch pickle).
#[test]
fn invert_then_score_agree_on_an_open_clip_layout_model() {
    invert_then_score(
        "openclip_native_bin",
        &["open_clip_config.json", "open_clip_pytorch_model.bin"],
    );
}

/// `--dtype bf16` as a GPU runs it (bf16 tensors; `PEZ_OPS=composed` runs that path on the CPU) inverts to a
/// cosine close to f32's, and `pez score` in bf16 agrees with what it reports.
#[test]
fn invert_in_bf16_tensors_stays_close_to_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_clip(tmp.path(), "openclip", &["config.json", "model.safetensors"]);
    let imgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/clip_images");
    let (a, b) = (imgs.join("chelsea.png"), imgs.join("rocket.jpg"));
    let invert = |dtype: &str, ops: &str| {
        let out = tmp.path().join(format!("inv-{dtype}"));
        let o = Command::new(env!("CARGO_BIN_EXE_pez"))
            .env("PEZ_OPS", ops)
            .args([
                "invert",
                a.to_str().unwrap(),
                b.to_str().unwrap(),
                "--model",
                model.to_str().unwrap(),
                "--prompt-len",
                "4",
                "--steps",
                "60",
                "--dtype",
                dtype,
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("inversion.json")).unwrap()).unwrap();
        (
            rec["prompt"].as_str().unwrap().to_string(),
            rec["cosine"].as_f64().unwrap(),
        )
    };
    let ((_, c32), (prompt, c16)) = (invert("f32", "kernels"), invert("bf16", "composed"));
    assert!(
        (c32 - c16).abs() < 0.01,
        "best cosine {c32} in f32, {c16} in bf16 tensors"
    );
    let s = Command::new(env!("CARGO_BIN_EXE_pez"))
        .env("PEZ_OPS", "composed")
        .args([
            "score",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--text",
            &prompt,
            "--dtype",
            "bf16",
        ])
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let sc: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert!(
        (sc["cosine"].as_f64().unwrap() - c16).abs() < 1e-3,
        "invert reported {c16}, score gives {} for {prompt:?}",
        sc["cosine"]
    );
}

/// A CLIP model directory from a tiny fixture, with a word-level CLIP-style tokenizer.
fn tiny_clip(tmp: &Path, fixture: &str, files: &[&str]) -> std::path::PathBuf {
    let fx = fixtures();
    let model = tmp.join("tiny-clip");
    std::fs::create_dir_all(&model).unwrap();
    for f in files {
        std::fs::copy(fx.join(fixture).join(f), model.join(f)).unwrap();
    }
    let words = [
        "[UNK]", "It", "was", "negative", "positive", "the", "a", "film", "movie", "great", "bad", "good", "awful",
        "fun", "dull", "plot", "actors", "story", "is", "not", "very", "really", "best", "worst", "boring", "lovely",
    ];
    let mut vocab: serde_json::Map<String, serde_json::Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), i.into()))
        .collect();
    vocab.insert("<|startoftext|>".into(), 62.into());
    vocab.insert("<|endoftext|>".into(), 63.into());
    let tok = serde_json::json!({"version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 62, "content": "<|startoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                         {"id": 63, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}});
    std::fs::write(model.join("tokenizer.json"), tok.to_string()).unwrap();
    model
}

fn invert_then_score(fixture: &str, files: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_clip(tmp.path(), fixture, files);
    let imgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/clip_images");
    let (a, b) = (imgs.join("chelsea.png"), imgs.join("rocket.jpg"));
    let out = tmp.path().join("inv");
    let o = Command::new(env!("CARGO_BIN_EXE_pez"))
        .args([
            "invert",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--prompt-len",
            "4",
            "--steps",
            "60",
            "--block",
            "film",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("inversion.json")).unwrap()).unwrap();
    let prompt = rec["prompt"].as_str().unwrap();
    assert_eq!(rec["token_ids"].as_array().unwrap().len(), 4);
    assert!(!prompt.contains("film"), "blocked word in {prompt:?}");
    let s = Command::new(env!("CARGO_BIN_EXE_pez"))
        .args([
            "score",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--text",
            prompt,
        ])
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let sc: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    let (c1, c2) = (rec["cosine"].as_f64().unwrap(), sc["cosine"].as_f64().unwrap());
    assert!(
        (c1 - c2).abs() < 1e-5,
        "invert reported {c1}, score gives {c2} for {prompt:?}"
    );
}
