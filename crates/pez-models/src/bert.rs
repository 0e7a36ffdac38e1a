//! BERT encoder (all-MiniLM-L6-v2): word + position + token-type embeddings, post-LayerNorm blocks with erf-GELU,
//! mean pooling over real tokens (sentence-transformers).

use crate::layers::{LayerNorm, Linear as Lin};
use crate::ops::{self, attention, merge_heads, split_heads};
use crate::weights::{read_config, Weights};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
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
fn eps() -> f64 { 1e-12 }
fn act() -> String { "gelu".into() }

struct Block {
    q: Lin,
    k: Lin,
    v: Lin,
    attn_out: Lin,
    attn_ln: LayerNorm,
    inter: Lin,
    out: Lin,
    out_ln: LayerNorm,
}

pub struct Bert {
    pub cfg: BertConfig,
    act: ops::Activation,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_ln: LayerNorm,
    blocks: Vec<Block>,
}

impl Bert {
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let w = Weights::from_safetensors_dir(dir, dtype, device)?;
        Self::load(w, read_config(dir)?)
    }

    pub fn load(w: Weights, cfg: BertConfig) -> Result<Self> {
        let w = w.detect_prefix(&["bert.", "model."], "embeddings.word_embeddings.weight");
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(Block {
                    q: Lin::load(&w, &format!("{p}.attention.self.query"))?,
                    k: Lin::load(&w, &format!("{p}.attention.self.key"))?,
                    v: Lin::load(&w, &format!("{p}.attention.self.value"))?,
                    attn_out: Lin::load(&w, &format!("{p}.attention.output.dense"))?,
                    attn_ln: LayerNorm::load(&w, &format!("{p}.attention.output.LayerNorm"), cfg.layer_norm_eps)?,
                    inter: Lin::load(&w, &format!("{p}.intermediate.dense"))?,
                    out: Lin::load(&w, &format!("{p}.output.dense"))?,
                    out_ln: LayerNorm::load(&w, &format!("{p}.output.LayerNorm"), cfg.layer_norm_eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            act: ops::Activation::from_hf(&cfg.hidden_act)?,
            word: w.get("embeddings.word_embeddings.weight")?,
            position: w.get("embeddings.position_embeddings.weight")?,
            token_type: w.get("embeddings.token_type_embeddings.weight")?,
            emb_ln: LayerNorm::load(&w, "embeddings.LayerNorm", cfg.layer_norm_eps)?,
            blocks,
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
        let e = embeds.broadcast_add(&self.position.narrow(0, 0, s)?)?.broadcast_add(&self.token_type.get(0)?)?;
        let mut h = self.emb_ln.fwd(&e)?;
        let mask = ops::key_padding_mask(lengths, s, embeds.dtype(), embeds.device())?;
        let heads = self.cfg.num_attention_heads;
        let scale = 1.0 / ((self.cfg.hidden_size / heads) as f64).sqrt();
        for b in &self.blocks {
            let (q, k, v) = (split_heads(&b.q.fwd(&h)?, heads)?, split_heads(&b.k.fwd(&h)?, heads)?, split_heads(&b.v.fwd(&h)?, heads)?);
            let a = b.attn_out.fwd(&merge_heads(&attention(&q, &k, &v, Some(&mask), scale)?)?)?;
            h = b.attn_ln.fwd(&(h + a)?)?;
            let m = b.out.fwd(&self.act.apply(&b.inter.fwd(&h)?)?)?;
            h = b.out_ln.fwd(&(h + m)?)?;
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

    /// Sentence features `[b, d]`: mean-pooled last hidden states.
    pub fn encode(&self, embeds: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        self.mean_pool(&self.hidden_states(embeds, lengths)?, lengths)
    }
}
