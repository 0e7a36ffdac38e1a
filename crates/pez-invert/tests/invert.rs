//! PEZ on feature targets: recovery on a tiny random CLIP text tower, and the blocklist.

use candle_core::{DType, Device};
use pez_invert::encoder::ClipEncoder;
use pez_invert::{invert, score_ids, InvertConfig, TextEncoder};
use pez_models::clip::Clip;
use pez_models::testing::fixtures;

/// The tiny CLIP (vocab 64; <sot> = 62, <eot> = 63) with the 24-word tokenizer of the transfer fixtures.
fn tiny() -> (ClipEncoder, tokenizers::Tokenizer) {
    let clip = Clip::from_dir(&fixtures().join("openclip"), DType::F32, &Device::Cpu).unwrap();
    let tok = tokenizers::Tokenizer::from_file(fixtures().join("transfer/gpt2/tokenizer.json")).unwrap();
    (
        ClipEncoder {
            text: clip.text,
            sot: 62,
            eot: 63,
        },
        tok,
    )
}

#[test]
fn pez_recovers_a_known_prompt_through_a_tiny_clip_text_tower() {
    let (enc, tok) = tiny();
    let target_ids = tok.encode("great film fun plot", false).unwrap().get_ids().to_vec();
    let target = enc
        .features(
            &enc.token_embeddings()
                .index_select(
                    &candle_core::Tensor::new(target_ids.as_slice(), &Device::Cpu).unwrap(),
                    0,
                )
                .unwrap(),
        )
        .unwrap();
    let cfg = InvertConfig {
        prompt_len: 4,
        steps: 300,
        ..InvertConfig::default()
    };
    let best = (0..3)
        .map(|seed| invert(&enc, &tok, &target, &InvertConfig { seed, ..cfg.clone() }, |_, _| {}).unwrap())
        .max_by(|a, b| a.cosine.total_cmp(&b.cosine))
        .unwrap();
    eprintln!(
        "target {target_ids:?}, found {:?} {:?} cosine {:.4}",
        best.token_ids, best.prompt, best.cosine
    );
    assert!(best.cosine >= 0.99, "cosine {}", best.cosine);
    assert!((score_ids(&enc, &best.token_ids, &target).unwrap() - best.cosine).abs() < 1e-5);
}

#[test]
fn blocked_substrings_never_appear_across_seeds() {
    let (enc, tok) = tiny();
    let target_ids = tok.encode("great film fun plot", false).unwrap().get_ids().to_vec();
    let target = enc
        .features(
            &enc.token_embeddings()
                .index_select(
                    &candle_core::Tensor::new(target_ids.as_slice(), &Device::Cpu).unwrap(),
                    0,
                )
                .unwrap(),
        )
        .unwrap();
    let block = vec!["GREAT".to_string(), "fil".to_string(), "un".to_string()];
    let allowed = pez_hub::tokenizer::unblocked_tokens(&tok, 64, &block);
    for w in ["great", "film", "fun"] {
        let id = tok.token_to_id(w).unwrap() as usize;
        assert!(!allowed[id], "{w} should be blocked");
    }
    for seed in 0..20 {
        let r = invert(
            &enc,
            &tok,
            &target,
            &InvertConfig {
                prompt_len: 4,
                steps: 40,
                seed,
                block: block.clone(),
                ..InvertConfig::default()
            },
            |_, _| {},
        )
        .unwrap();
        for &i in &r.token_ids {
            let t = tok.decode(&[i], false).unwrap().to_lowercase();
            assert!(
                !t.contains("great") && !t.contains("fil") && !t.contains("un"),
                "seed {seed}: blocked token {t:?} in {:?}",
                r.prompt
            );
            assert!(allowed[i as usize]);
        }
    }
}

#[test]
fn an_allowlist_keeps_prompts_to_its_tokens_and_the_pool_says_so() {
    let (enc, tok) = tiny();
    let target_ids = tok.encode("great film fun plot", false).unwrap().get_ids().to_vec();
    let target = enc
        .features(
            &enc.token_embeddings()
                .index_select(
                    &candle_core::Tensor::new(target_ids.as_slice(), &Device::Cpu).unwrap(),
                    0,
                )
                .unwrap(),
        )
        .unwrap();
    let only: Vec<u32> = ["bad", "dull", "plot", "story"]
        .iter()
        .map(|w| tok.token_to_id(w).unwrap())
        .collect();
    for seed in 0..10 {
        let r = invert(
            &enc,
            &tok,
            &target,
            &InvertConfig {
                prompt_len: 3,
                steps: 30,
                seed,
                only: Some(only.clone()),
                ..InvertConfig::default()
            },
            |_, _| {},
        )
        .unwrap();
        assert!(
            r.token_ids.iter().all(|i| only.contains(i)),
            "seed {seed}: {:?} outside {only:?}",
            r.token_ids
        );
        let mut pool = r.pool.clone();
        pool.sort();
        let mut want = only.clone();
        want.sort();
        assert_eq!(pool, want);
    }
}
