//! OPT: learned positions offset by 2, pre-LayerNorm blocks (post-LN for opt-350m), ReLU MLP, optional
//! projections between a smaller word-embedding size and the hidden size (opt-350m), tied LM head.

use crate::decoder::{LayerOut, LayerPast, Pass, SelfAttention};
use crate::{CausalDecoder, KvCache, LmInfo};
use anyhow::{bail, Result};
use candle_core::Tensor;
use pez_nn::{ops, Activation, LayerNorm, Linear, Mlp, Packed, Weights};
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
fn yes() -> bool {
    true
}
fn relu() -> String {
    "relu".into()
}

/// OPT's learned positions start at index 2 (a fairseq legacy).
const POSITION_OFFSET: usize = 2;

/// Pre-LN: `h + attn(ln(h))`, `h + mlp(ln(h))`; post-LN (opt-350m): `ln(h + attn(h))`, `ln(h + mlp(h))`.
struct Block {
    attn: SelfAttention,
    attn_ln: LayerNorm,
    mlp: Mlp,
    final_ln: LayerNorm,
    pre: bool,
}

impl Block {
    fn load(w: &Weights, c: &OptConfig, act: Activation) -> Result<Self> {
        let l = |n: &str| Linear::load(&w.pp(n));
        let heads = c.num_attention_heads;
        let scale = 1.0 / ((c.hidden_size / heads) as f64).sqrt();
        let a = "self_attn";
        let attn = SelfAttention {
            q: l(&format!("{a}.q_proj"))?,
            k: l(&format!("{a}.k_proj"))?,
            v: l(&format!("{a}.v_proj"))?,
            o: l(&format!("{a}.out_proj"))?,
            heads,
            kv_heads: heads,
            scale,
            qk_norm: None,
            precision: w.precision(),
        };
        Ok(Self {
            attn,
            attn_ln: LayerNorm::load(&w.pp("self_attn_layer_norm"), 1e-5)?,
            mlp: Mlp {
                gate: None,
                up: l("fc1")?,
                down: l("fc2")?,
                act,
            },
            final_ln: LayerNorm::load(&w.pp("final_layer_norm"), 1e-5)?,
            pre: c.do_layer_norm_before,
        })
    }

    fn forward(&self, h: &Tensor, mask: &Tensor, past: LayerPast) -> Result<LayerOut> {
        if self.pre {
            let (a, kv) = self.attn.forward(&self.attn_ln.forward(h)?, None, mask, past)?;
            let h = (h + a)?;
            let m = self.mlp.forward(&self.final_ln.forward(&h)?)?;
            Ok(((h + m)?, kv))
        } else {
            let (a, kv) = self.attn.forward(h, None, mask, past)?;
            let h = self.attn_ln.forward(&(h + a)?)?;
            let m = self.mlp.forward(&h)?;
            Ok((self.final_ln.forward(&(h + m)?)?, kv))
        }
    }
}

pub struct Opt {
    cfg: OptConfig,
    info: LmInfo,
    embed: Tensor,
    head: Linear,
    positions: Tensor,
    project_in: Option<Linear>,
    project_out: Option<Linear>,
    blocks: Vec<Block>,
    final_ln: Option<LayerNorm>,
}

impl Opt {
    pub fn load(w: &Weights, cfg: OptConfig) -> Result<Self> {
        let w = w.under_first(&["model.decoder", "decoder"], "embed_tokens.weight");
        let act = Activation::from_hf(&cfg.activation_function)?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(&w.pp("layers").pp(i), &cfg, act))
            .collect::<Result<Vec<_>>>()?;
        let final_ln = if w.contains("final_layer_norm.weight") {
            Some(LayerNorm::load(&w.pp("final_layer_norm"), 1e-5)?)
        } else {
            None
        };
        let projection = |n: &str| {
            w.get_opt(&format!("{n}.weight"))
                .map(|p| Linear::new(p, None, w.precision()))
                .transpose()
        };
        let info = LmInfo {
            arch: "opt".into(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.word_embed_proj_dim.unwrap_or(cfg.hidden_size),
            max_positions: cfg.max_position_embeddings,
            num_layers: blocks.len(),
            block_matmul_params: crate::count_params(
                blocks.iter().flat_map(|b| b.attn.weights().chain(b.mlp.weights())),
            ),
        };
        let embed = w.get("embed_tokens.weight")?;
        Ok(Self {
            head: Linear::new(embed.clone(), None, w.precision())?, // tied: the same tensor
            embed,
            positions: w.get("embed_positions.weight")?,
            project_in: projection("project_in")?,
            project_out: projection("project_out")?,
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
    fn head(&self) -> &Linear {
        &self.head
    }
    fn forward_after(
        &self,
        embeds: &Tensor,
        past: Option<&KvCache>,
        packed: Option<&Packed>,
    ) -> Result<(Tensor, KvCache)> {
        let pass = Pass::new(embeds, past, packed)?;
        if pass.end() > self.cfg.max_position_embeddings {
            bail!(
                "sequence of {} tokens exceeds OPT's {} positions",
                pass.end(),
                self.cfg.max_position_embeddings
            );
        }
        let mask = pass.mask(None)?;
        let h = match &self.project_in {
            Some(p) => p.forward(embeds)?,
            None => embeds.clone(),
        };
        let pos: Vec<usize> = pass.positions.iter().map(|&x| x + POSITION_OFFSET).collect();
        let h = h.broadcast_add(&ops::rows_at(&self.positions, &pos)?)?;
        let (mut h, cache) = pass.run(h, &self.blocks, |b, _, h, past| b.forward(h, &mask, past))?;
        if let Some(ln) = &self.final_ln {
            h = ln.forward(&h)?;
        }
        if let Some(p) = &self.project_out {
            h = p.forward(&h)?;
        }
        Ok((h, cache))
    }
}
