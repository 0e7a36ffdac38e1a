//! GPT-2: learned absolute positions, pre-LayerNorm blocks, tanh-GELU MLP, LM head tied to the token embeddings.

use crate::layers::LayerNorm as Ln;
use crate::ops::{self, after_past, attention, conv1d_linear, merge_heads, split_heads};
use crate::weights::Weights;
use crate::{CausalDecoder, KvCache, LmInfo, Packed};
use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_positions: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    pub activation_function: String,
}
fn default_eps() -> f64 { 1e-5 }
fn default_act() -> String { "gelu_new".into() }

struct Block {
    ln_1: Ln,
    c_attn: (Tensor, Tensor),
    attn_proj: (Tensor, Tensor),
    ln_2: Ln,
    c_fc: (Tensor, Tensor),
    mlp_proj: (Tensor, Tensor),
}

pub struct Gpt2 {
    cfg: Gpt2Config,
    info: LmInfo,
    act: ops::Activation,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: Ln,
}

impl Gpt2 {
    pub fn load(w: Weights, cfg: Gpt2Config) -> Result<Self> {
        let w = w.detect_prefix(&["transformer.", ""], "wte.weight");
        let pair = |p: &str| -> Result<(Tensor, Tensor)> {
            Ok((w.get(&format!("{p}.weight"))?, w.get(&format!("{p}.bias"))?))
        };
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let p = format!("h.{i}");
                Ok(Block {
                    ln_1: Ln::load(&w, &format!("{p}.ln_1"), cfg.layer_norm_epsilon)?,
                    c_attn: pair(&format!("{p}.attn.c_attn"))?,
                    attn_proj: pair(&format!("{p}.attn.c_proj"))?,
                    ln_2: Ln::load(&w, &format!("{p}.ln_2"), cfg.layer_norm_epsilon)?,
                    c_fc: pair(&format!("{p}.mlp.c_fc"))?,
                    mlp_proj: pair(&format!("{p}.mlp.c_proj"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let wte = w.get_shaped("wte.weight", &[cfg.vocab_size, cfg.n_embd])?;
        let info = LmInfo {
            arch: "gpt2".into(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.n_embd,
            max_positions: cfg.n_positions,
            num_layers: blocks.len(),
            block_matmul_params: crate::count_params(blocks.iter().flat_map(|b| [&b.c_attn.0, &b.attn_proj.0, &b.c_fc.0, &b.mlp_proj.0])),
        };
        Ok(Self {
            act: ops::Activation::from_hf(&cfg.activation_function)?,
            wpe: w.get("wpe.weight")?,
            ln_f: Ln::load(&w, "ln_f", cfg.layer_norm_epsilon)?,
            wte,
            blocks,
            info,
            cfg,
        })
    }
}


impl CausalDecoder for Gpt2 {
    fn info(&self) -> &LmInfo {
        &self.info
    }
    fn token_embeddings(&self) -> &Tensor {
        &self.wte
    }
    fn head(&self) -> &Tensor {
        &self.wte
    }
    /// Hidden states of `embeds` at positions `past.len..` and the keys/values of every position.
    /// With `packed`, `embeds` is `[1, T, d]` holding several rows (see `Packed`).
    fn forward_after(&self, embeds: &Tensor, past: Option<&KvCache>, packed: Option<&Packed>) -> Result<(Tensor, KvCache)> {
        let c = &self.cfg;
        let (_, s, d) = embeds.dims3()?;
        let p = KvCache::len_of(past);
        let pos = ops::token_positions(s, p, packed);
        let end = pos.iter().max().map_or(p, |m| m + 1);
        if end > c.n_positions {
            bail!("sequence of {end} tokens exceeds GPT-2's {} positions", c.n_positions);
        }
        let mask = ops::attention_mask(s, p, packed, None, embeds.dtype(), embeds.device())?;
        let mut h = embeds.broadcast_add(&ops::rows_at(&self.wpe, &pos)?)?;
        let mut cache = Vec::with_capacity(self.blocks.len());
        for (i, b) in self.blocks.iter().enumerate() {
            let (past_k, past_v) = KvCache::layer(past, i);
            let qkv = conv1d_linear(&b.ln_1.fwd(&h)?, &b.c_attn.0, &b.c_attn.1)?;
            let q = split_heads(&qkv.narrow(2, 0, d)?, c.n_head)?;
            let k = after_past(past_k, &split_heads(&qkv.narrow(2, d, d)?, c.n_head)?)?;
            let v = after_past(past_v, &split_heads(&qkv.narrow(2, 2 * d, d)?, c.n_head)?)?;
            let a = attention(&q, &k, &v, Some(&mask), 1.0 / ((d / c.n_head) as f64).sqrt())?;
            cache.push((k, v));
            h = (h + conv1d_linear(&merge_heads(&a)?, &b.attn_proj.0, &b.attn_proj.1)?)?;
            let m = self.act.apply(&conv1d_linear(&b.ln_2.fwd(&h)?, &b.c_fc.0, &b.c_fc.1)?)?;
            h = (h + conv1d_linear(&m, &b.mlp_proj.0, &b.mlp_proj.1)?)?;
        }
        Ok((self.ln_f.fwd(&h)?, KvCache { len: p + s, layers: cache }))
    }
}
