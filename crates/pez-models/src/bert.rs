//! BERT encoder (all-MiniLM-L6-v2): word + position + token-type embeddings, post-LayerNorm blocks with erf-GELU,
//! mean pooling over real tokens (sentence-transformers).

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use pez_hub::checkpoint::{read_config, safetensors_dir};
use pez_nn::masks::key_padding_mask;
use pez_nn::matmul::Precision;
use pez_nn::ops::{attention_at, merge_heads, split_heads};
use pez_nn::{Activation, LayerNorm, Linear, Weights};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "act")]
    pub hidden_act: String,
}
fn eps() -> f64 {
    1e-12
}
fn act() -> String {
    "gelu".into()
}

struct Block {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_ln: LayerNorm,
    inter: Linear,
    out: Linear,
    out_ln: LayerNorm,
}

impl Block {
    fn load(w: &Weights, eps: f64) -> Result<Self> {
        let l = |n: &str| Linear::load(&w.pp(n));
        Ok(Self {
            q: l("attention.self.query")?,
            k: l("attention.self.key")?,
            v: l("attention.self.value")?,
            attn_out: l("attention.output.dense")?,
            attn_ln: LayerNorm::load(&w.pp("attention.output.LayerNorm"), eps)?,
            inter: l("intermediate.dense")?,
            out: l("output.dense")?,
            out_ln: LayerNorm::load(&w.pp("output.LayerNorm"), eps)?,
        })
    }
}

pub struct Bert {
    pub cfg: BertConfig,
    act: Activation,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_ln: LayerNorm,
    blocks: Vec<Block>,
    precision: Precision,
}

impl Bert {
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load(&safetensors_dir(dir, dtype, device)?, read_config(dir)?)
    }

    pub fn load(w: &Weights, cfg: BertConfig) -> Result<Self> {
        let w = w.under_first(&["bert", "model"], "embeddings.word_embeddings.weight");
        let eps = cfg.layer_norm_eps;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(&w.pp("encoder.layer").pp(i), eps))
            .collect::<Result<Vec<_>>>()?;
        let e = w.pp("embeddings");
        Ok(Self {
            act: Activation::from_hf(&cfg.hidden_act)?,
            word: e.get("word_embeddings.weight")?,
            position: e.get("position_embeddings.weight")?,
            token_type: e.get("token_type_embeddings.weight")?,
            emb_ln: LayerNorm::load(&e.pp("LayerNorm"), eps)?,
            blocks,
            precision: w.precision(),
            cfg,
        })
    }

    /// Word embeddings `[vocab, d]`: the space PEZ projects in.
    pub fn token_embeddings(&self) -> &Tensor {
        &self.word
    }

    /// Last hidden states `[b, s, d]` for right-padded word embeddings (token type 0 everywhere).
    pub fn hidden_states(&self, embeds: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (_, s, _) = embeds.dims3()?;
        let e = embeds
            .broadcast_add(&self.position.narrow(0, 0, s)?)?
            .broadcast_add(&self.token_type.get(0)?)?;
        let mut h = self.emb_ln.forward(&e)?;
        let mask = key_padding_mask(lengths, s, embeds.dtype(), embeds.device())?;
        let heads = self.cfg.num_attention_heads;
        let scale = 1.0 / ((self.cfg.hidden_size / heads) as f64).sqrt();
        for b in &self.blocks {
            let (q, k, v) = (
                split_heads(&b.q.forward(&h)?, heads)?,
                split_heads(&b.k.forward(&h)?, heads)?,
                split_heads(&b.v.forward(&h)?, heads)?,
            );
            let a = b.attn_out.forward(&merge_heads(&attention_at(
                &q,
                &k,
                &v,
                Some(&mask),
                scale,
                self.precision,
            )?)?)?;
            h = b.attn_ln.forward(&(h + a)?)?;
            let m = b.out.forward(&self.act.apply(&b.inter.forward(&h)?)?)?;
            h = b.out_ln.forward(&(h + m)?)?;
        }
        Ok(h)
    }

    /// Mean of the hidden states over each row's real tokens: `[b, d]` (sentence-transformers pooling).
    pub fn mean_pool(&self, hidden: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (b, s, _) = hidden.dims3()?;
        let mut w = vec![0f32; b * s];
        for (i, &l) in lengths.iter().enumerate() {
            for j in 0..l {
                w[i * s + j] = 1.0 / l as f32;
            }
        }
        let w = Tensor::from_vec(w, (b, s, 1), hidden.device())?.to_dtype(hidden.dtype())?;
        Ok(hidden.broadcast_mul(&w)?.sum(1)?)
    }

    /// Sentence features `[b, d]` (widened to f32 from bf16): mean-pooled last hidden states.
    pub fn encode(&self, embeds: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        Ok(pez_nn::dtype::widened(
            &self.mean_pool(&self.hidden_states(embeds, lengths)?, lengths)?,
        )?)
    }
}
