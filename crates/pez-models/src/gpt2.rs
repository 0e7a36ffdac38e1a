//! GPT-2: learned absolute positions, pre-LayerNorm blocks, tanh-GELU MLP, LM head tied to the token embeddings.

use crate::decoder::{LayerOut, LayerPast, Pass, SelfAttention};
use crate::{CausalDecoder, KvCache, LmInfo};
use anyhow::{bail, Result};
use candle_core::Tensor;
use pez_nn::{ops, Activation, LayerNorm, Linear, Mlp, Packed, Weights};
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
fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}

/// `h + attn(ln_1(h))`, then `h + mlp(ln_2(h))`.
struct Block {
    ln_1: LayerNorm,
    attn: SelfAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

/// GPT-2's `Conv1D`: a weight stored `[in, out]` and a bias.
fn conv1d(w: &Weights) -> Result<Linear> {
    Linear::from_in_out(w.get("weight")?, Some(w.get("bias")?), w.precision())
}

impl Block {
    fn load(w: &Weights, c: &Gpt2Config, act: Activation) -> Result<Self> {
        // `c_attn` holds the query, key and value maps side by side: `[d, 3d]` and `[3d]`.
        let (w_qkv, b_qkv, d) = (w.get("attn.c_attn.weight")?, w.get("attn.c_attn.bias")?, c.n_embd);
        let part = |j: usize| {
            Linear::from_in_out(
                w_qkv.narrow(1, j * d, d)?,
                Some(b_qkv.narrow(0, j * d, d)?),
                w.precision(),
            )
        };
        let scale = 1.0 / ((d / c.n_head) as f64).sqrt();
        let attn = SelfAttention {
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            o: conv1d(&w.pp("attn.c_proj"))?,
            heads: c.n_head,
            kv_heads: c.n_head,
            scale,
            qk_norm: None,
            precision: w.precision(),
        };
        Ok(Self {
            ln_1: LayerNorm::load(&w.pp("ln_1"), c.layer_norm_epsilon)?,
            attn,
            ln_2: LayerNorm::load(&w.pp("ln_2"), c.layer_norm_epsilon)?,
            mlp: Mlp {
                gate: None,
                up: conv1d(&w.pp("mlp.c_fc"))?,
                down: conv1d(&w.pp("mlp.c_proj"))?,
                act,
            },
        })
    }

    fn forward(&self, h: &Tensor, mask: &Tensor, past: LayerPast) -> Result<LayerOut> {
        let (a, kv) = self.attn.forward(&self.ln_1.forward(h)?, None, mask, past)?;
        let h = (h + a)?;
        let m = self.mlp.forward(&self.ln_2.forward(&h)?)?;
        Ok(((h + m)?, kv))
    }
}

pub struct Gpt2 {
    cfg: Gpt2Config,
    info: LmInfo,
    wte: Tensor,
    head: Linear,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt2 {
    pub fn load(w: &Weights, cfg: Gpt2Config) -> Result<Self> {
        let w = w.under_first(&["transformer"], "wte.weight");
        let act = Activation::from_hf(&cfg.activation_function)?;
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::load(&w.pp("h").pp(i), &cfg, act))
            .collect::<Result<Vec<_>>>()?;
        let info = LmInfo {
            arch: "gpt2".into(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.n_embd,
            max_positions: cfg.n_positions,
            num_layers: blocks.len(),
            block_matmul_params: crate::count_params(
                blocks.iter().flat_map(|b| b.attn.weights().chain(b.mlp.weights())),
            ),
        };
        let wte = w.get_shaped("wte.weight", &[cfg.vocab_size, cfg.n_embd])?;
        Ok(Self {
            head: Linear::new(wte.clone(), None, w.precision())?,
            wte,
            wpe: w.get("wpe.weight")?,
            ln_f: LayerNorm::load(&w.pp("ln_f"), cfg.layer_norm_epsilon)?,
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
        if pass.end() > self.cfg.n_positions {
            bail!(
                "sequence of {} tokens exceeds GPT-2's {} positions",
                pass.end(),
                self.cfg.n_positions
            );
        }
        let mask = pass.mask(None)?;
        let h = embeds.broadcast_add(&ops::rows_at(&self.wpe, &pass.positions)?)?;
        let (h, cache) = pass.run(h, &self.blocks, |b, _, h, past| b.forward(h, &mask, past))?;
        Ok((self.ln_f.forward(&h)?, cache))
    }
}
