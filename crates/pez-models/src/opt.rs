//! OPT: learned positions offset by 2, pre-LayerNorm blocks (post-LN for opt-350m), ReLU MLP, optional
//! projections between a smaller word-embedding size and the hidden size (opt-350m), tied LM head.

use crate::layers::{LayerNorm as Ln, Linear as Lin};
use crate::ops::{self, after_past, attention, linear, merge_heads, split_heads};
use crate::weights::Weights;
use crate::{CausalDecoder, KvCache, LmInfo, Packed};
use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct OptConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub word_embed_proj_dim: Option<usize>,
    pub ffn_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "yes")]
    pub do_layer_norm_before: bool,
    #[serde(default = "relu")]
    pub activation_function: String,
    #[serde(default = "yes")]
    pub enable_bias: bool,
}
fn yes() -> bool { true }
fn relu() -> String { "relu".into() }

/// OPT's learned positions start at index 2 (a fairseq legacy).
const POSITION_OFFSET: usize = 2;

struct Block {
    q: Lin,
    k: Lin,
    v: Lin,
    out: Lin,
    attn_ln: Ln,
    fc1: Lin,
    fc2: Lin,
    final_ln: Ln,
}

pub struct Opt {
    cfg: OptConfig,
    info: LmInfo,
    act: ops::Activation,
    embed: Tensor,
    positions: Tensor,
    project_in: Option<Tensor>,
    project_out: Option<Tensor>,
    blocks: Vec<Block>,
    final_ln: Option<Ln>,
}

impl Opt {
    pub fn load(w: Weights, cfg: OptConfig) -> Result<Self> {
        let w = w.detect_prefix(&["model.decoder.", "decoder."], "embed_tokens.weight");
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("layers.{i}");
                Ok(Block {
                    q: Lin::load_optional_bias(&w, &format!("{p}.self_attn.q_proj"))?,
                    k: Lin::load_optional_bias(&w, &format!("{p}.self_attn.k_proj"))?,
                    v: Lin::load_optional_bias(&w, &format!("{p}.self_attn.v_proj"))?,
                    out: Lin::load_optional_bias(&w, &format!("{p}.self_attn.out_proj"))?,
                    attn_ln: Ln::load(&w, &format!("{p}.self_attn_layer_norm"), 1e-5)?,
                    fc1: Lin::load_optional_bias(&w, &format!("{p}.fc1"))?,
                    fc2: Lin::load_optional_bias(&w, &format!("{p}.fc2"))?,
                    final_ln: Ln::load(&w, &format!("{p}.final_layer_norm"), 1e-5)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_ln = if w.contains("final_layer_norm.weight") {
            Some(Ln::load(&w, "final_layer_norm", 1e-5)?)
        } else {
            None
        };
        let info = LmInfo {
            arch: "opt".into(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.word_embed_proj_dim.unwrap_or(cfg.hidden_size),
            max_positions: cfg.max_position_embeddings,
            num_layers: blocks.len(),
            block_matmul_params: crate::count_params(blocks.iter().flat_map(|b| [&b.q.w, &b.k.w, &b.v.w, &b.out.w, &b.fc1.w, &b.fc2.w])),
        };
        Ok(Self {
            act: ops::Activation::from_hf(&cfg.activation_function)?,
            embed: w.get("embed_tokens.weight")?,
            positions: w.get("embed_positions.weight")?,
            project_in: w.get_opt("project_in.weight"),
            project_out: w.get_opt("project_out.weight"),
            blocks,
            final_ln,
            info,
            cfg,
        })
    }
}

impl CausalDecoder for Opt {
    fn info(&self) -> &LmInfo {
        &self.info
    }
    fn token_embeddings(&self) -> &Tensor {
        &self.embed
    }
    fn head(&self) -> &Tensor {
        &self.embed
    }
    /// Hidden states of `embeds` at positions `past.len..` and the keys/values of every position.
    /// With `packed`, `embeds` is `[1, T, d]` holding several rows (see `Packed`).
    fn forward_after(&self, embeds: &Tensor, past: Option<&KvCache>, packed: Option<&Packed>) -> Result<(Tensor, KvCache)> {
        let c = &self.cfg;
        let (_, s, _) = embeds.dims3()?;
        let p = KvCache::len_of(past);
        let pos: Vec<usize> = ops::token_positions(s, p, packed).iter().map(|&x| x + POSITION_OFFSET).collect();
        let end = pos.iter().max().map_or(p, |m| m + 1 - POSITION_OFFSET);
        if end > c.max_position_embeddings {
            bail!("sequence of {end} tokens exceeds OPT's {} positions", c.max_position_embeddings);
        }
        let mask = ops::attention_mask(s, p, packed, None, embeds.dtype(), embeds.device())?;
        let mut h = match &self.project_in {
            Some(p) => linear(embeds, p, None)?,
            None => embeds.clone(),
        };
        h = h.broadcast_add(&ops::rows_at(&self.positions, &pos)?)?;
        let heads = c.num_attention_heads;
        let scale = 1.0 / ((c.hidden_size / heads) as f64).sqrt();
        let pre = c.do_layer_norm_before;
        let mut cache = Vec::with_capacity(self.blocks.len());
        for (i, b) in self.blocks.iter().enumerate() {
            let (past_k, past_v) = KvCache::layer(past, i);
            let x = if pre { b.attn_ln.fwd(&h)? } else { h.clone() };
            let k = after_past(past_k, &split_heads(&b.k.fwd(&x)?, heads)?)?;
            let v = after_past(past_v, &split_heads(&b.v.fwd(&x)?, heads)?)?;
            let a = attention(&split_heads(&b.q.fwd(&x)?, heads)?, &k, &v, Some(&mask), scale)?;
            cache.push((k, v));
            h = (h + b.out.fwd(&merge_heads(&a)?)?)?;
            if !pre {
                h = b.attn_ln.fwd(&h)?;
            }
            let x = if pre { b.final_ln.fwd(&h)? } else { h.clone() };
            h = (h + b.fc2.fwd(&self.act.apply(&b.fc1.fwd(&x)?)?)?)?;
            if !pre {
                h = b.final_ln.fwd(&h)?;
            }
        }
        if let Some(ln) = &self.final_ln {
            h = ln.fwd(&h)?;
        }
        if let Some(p) = &self.project_out {
            h = linear(&h, p, None)?;
        }
        Ok((h, KvCache { len: p + s, layers: cache }))
    }
}
