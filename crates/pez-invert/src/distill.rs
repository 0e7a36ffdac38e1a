//! Prompt distillation: a short prompt whose text features match a long prompt's, next to the two baselines a
//! user would try first (the long prompt cut to the same length, and the best of as many random prompts).

use crate::{invert, score_ids, InvertConfig, TextEncoder};
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokenizers::Tokenizer;

#[derive(Debug, Clone, Serialize)]
pub struct Distillation {
    pub original_tokens: usize,
    pub length: usize,
    pub prompt: String,
    pub token_ids: Vec<u32>,
    pub cosine: f64,
    pub best_step: usize,
    pub truncated: String,
    pub truncated_cosine: f64,
    pub random_best_cosine: f64,
    pub random_prompts: usize,
    pub config: InvertConfig,
}

/// Distils `prompt` to `ratio` of its tokens (at least one). `own_tokens`: the short prompt may use only the long
/// prompt's own tokens (else the whole vocabulary, as the paper). The random baseline draws as many prompts as PEZ
/// takes steps, from the same tokens PEZ may use.
/// `progress(step, best cosine so far)` is called after each PEZ step.
pub fn distill(
    enc: &dyn TextEncoder,
    tok: &Tokenizer,
    prompt: &str,
    ratio: f64,
    own_tokens: bool,
    mut cfg: InvertConfig,
    progress: impl FnMut(usize, f64),
) -> Result<Distillation> {
    if !(ratio > 0.0 && ratio <= 1.0) {
        bail!("--ratio must be in (0, 1], got {ratio}");
    }
    let ids = tok
        .encode(prompt, false)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .get_ids()
        .to_vec();
    if ids.is_empty() {
        bail!("the prompt is empty");
    }
    let len = ((ids.len() as f64 * ratio).round() as usize).max(1);
    let emb = enc.token_embeddings();
    let target = enc.features(&emb.index_select(&Tensor::new(ids.as_slice(), emb.device())?, 0)?)?;
    cfg.prompt_len = len;
    cfg.only = own_tokens.then(|| ids.clone());
    let best = invert(enc, tok, &target, &cfg, progress)?;
    let truncated_cosine = score_ids(enc, &ids[..len], &target)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xBA5E);
    let mut random_best = f64::MIN;
    for _ in 0..cfg.steps {
        let r: Vec<u32> = (0..len).map(|_| best.pool[rng.gen_range(0..best.pool.len())]).collect();
        random_best = random_best.max(score_ids(enc, &r, &target)?);
    }
    Ok(Distillation {
        original_tokens: ids.len(),
        length: len,
        prompt: best.prompt,
        token_ids: best.token_ids,
        cosine: best.cosine,
        best_step: best.step,
        truncated: tok.decode(&ids[..len], true).unwrap_or_default(),
        truncated_cosine,
        random_best_cosine: random_best,
        random_prompts: cfg.steps,
        config: cfg,
    })
}
