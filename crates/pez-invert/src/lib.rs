//! PEZ against feature targets: find a short hard prompt whose text features match target features (other
//! prompts' or images'). Loss = 1 - mean cosine(text features, each target); best prompt = the best projected
//! prompt by mean cosine, measured before each update (as the reference).

pub mod distill;
pub mod encoder;
pub mod image;

use anyhow::{bail, Result};
use candle_core::{Tensor, Var, D};
use pez_core::{Method, Objective, Optimizer, OptimizerKind, Pez, Projector};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokenizers::Tokenizer;

pub use encoder::TextEncoder;

/// Mean cosine between `features: [1, f]` and each row of `targets: [n, f]`.
pub fn mean_cosine(features: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let f = features.broadcast_div(&features.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?;
    let t = targets.broadcast_div(&targets.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?;
    f.matmul(&t.t()?)?.mean_all()
}

struct FeatureObjective<'a> {
    encoder: &'a dyn TextEncoder,
    targets: Tensor,
}

impl Objective for FeatureObjective<'_> {
    fn loss_and_grad(&mut self, prompt: &Tensor, _ids: &[u32]) -> Result<(f32, Tensor)> {
        let v = Var::from_tensor(prompt)?;
        let cos = mean_cosine(&self.encoder.features(v.as_tensor())?, &self.targets)?;
        let loss = (cos.neg()? + 1.0)?;
        let g = loss
            .backward()?
            .get(v.as_tensor())
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no gradient reached the prompt"))?;
        Ok((loss.to_scalar::<f32>()?, g))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InvertConfig {
    pub prompt_len: usize,
    pub steps: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub block: Vec<String>,
    /// If given, the only token ids a prompt may use (still subject to `block`), e.g. a long prompt's own tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<u32>>,
}

impl Default for InvertConfig {
    /// The paper's image-inversion settings (AdamW lr 0.1, weight decay 0.1), 16 tokens, 3000 steps.
    fn default() -> Self {
        Self {
            prompt_len: 16,
            steps: 3000,
            lr: 0.1,
            weight_decay: 0.1,
            seed: 0,
            block: vec![],
            only: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Inversion {
    pub prompt: String,
    pub token_ids: Vec<u32>,
    /// Mean cosine of the best prompt's features to the targets.
    pub cosine: f64,
    pub step: usize,
    /// The token ids the prompt could use (after the blocklist), for baselines drawn from the same tokens.
    #[serde(skip)]
    pub pool: Vec<u32>,
}

/// Runs PEZ from a random allowed-token prompt towards `targets: [n, f]`.
pub fn invert(
    encoder: &dyn TextEncoder,
    tok: &Tokenizer,
    targets: &Tensor,
    cfg: &InvertConfig,
    mut progress: impl FnMut(usize, f64),
) -> Result<Inversion> {
    let emb = encoder.token_embeddings();
    let mut allowed = pez_hub::tokenizer::unblocked_tokens(tok, emb.dim(0)?, &cfg.block);
    if let Some(only) = &cfg.only {
        let keep: std::collections::HashSet<u32> = only.iter().copied().collect();
        allowed
            .iter_mut()
            .enumerate()
            .for_each(|(i, a)| *a &= keep.contains(&(i as u32)));
    }
    let pool: Vec<u32> = allowed
        .iter()
        .enumerate()
        .filter(|(_, &a)| a)
        .map(|(i, _)| i as u32)
        .collect();
    if pool.is_empty() {
        bail!(
            "no token is left to choose from (the blocklist, or the blocklist with the allowlist, excludes every one)"
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let init_ids: Vec<u32> = (0..cfg.prompt_len)
        .map(|_| pool[rng.gen_range(0..pool.len())])
        .collect();
    let init = emb.index_select(&Tensor::new(init_ids.as_slice(), emb.device())?, 0)?;
    let projector = Projector::new(emb, &allowed)?;
    let mut pez = Pez::new(
        Method::Pez,
        projector,
        &init,
        Optimizer::new(OptimizerKind::Adamw, cfg.weight_decay),
        cfg.steps,
        cfg.lr,
        cfg.seed,
    )?;
    let mut obj = FeatureObjective {
        encoder,
        targets: targets.clone(),
    };
    let mut best = Inversion {
        prompt: String::new(),
        token_ids: vec![],
        cosine: f64::MIN,
        step: 0,
        pool: vec![],
    };
    for step in 0..cfg.steps {
        // The loss is evaluated at the projected prompt before the update: that is the hard prompt's score.
        let r = pez.step(&mut obj)?;
        let cos = 1.0 - r.loss as f64;
        if cos > best.cosine {
            best.prompt = tok.decode(&r.ids, true).map_err(|e| anyhow::anyhow!("{e}"))?;
            (best.token_ids, best.cosine, best.step) = (r.ids, cos, step);
        }
        progress(step, best.cosine);
    }
    best.pool = pool;
    Ok(best)
}

/// Mean cosine of a fixed token sequence's features to the targets (for baselines and `pez score`).
pub fn score_ids(encoder: &dyn TextEncoder, ids: &[u32], targets: &Tensor) -> Result<f64> {
    let emb = encoder
        .token_embeddings()
        .index_select(&Tensor::new(ids, encoder.token_embeddings().device())?, 0)?;
    Ok(mean_cosine(&encoder.features(&emb)?, targets)?.to_scalar::<f32>()? as f64)
}
