//! BERT encoder (all-MiniLM-L6-v2): word + position + token-type embeddings, post-LayerNorm blocks with erf-GELU,
//! mean pooling over real tokens (sentence-transformers).

use crate::ops::{self, attention, layer_norm, linear, merge_heads, split_heads};
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

struct Lin(Tensor, Tensor);
impl Lin {
    fn load(w: &Weights, p: &str) -> Result<Self> {
        Ok(Self(w.get(&format!("{p}.weight"))?, w.get(&format!("{p}.bias"))?))
    }
    fn fwd(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        linear(x, &self.0, Some(&self.1))
    }
}

struct Block {
    q: Lin,
    k: Lin,
    v: Lin,
    attn_out: Lin,
    attn_ln: Lin,
    inter: Lin,
    out: Lin,
    out_ln: Lin,
}

pub struct Bert {
    pub cfg: BertConfig,
    act: ops::Activation,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_ln: Lin,
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
                    attn_ln: Lin::load(&w, &format!("{p}.attention.output.LayerNorm"))?,
                    inter: Lin::load(&w, &format!("{p}.intermediate.dense"))?,
                    out: Lin::load(&w, &format!("{p}.output.dense"))?,
                    out_ln: Lin::load(&w, &format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            act: ops::Activation::from_hf(&cfg.hidden_act)?,
            word: w.get("embeddings.word_embeddings.weight")?,
            position: w.get("embeddings.position_embeddings.weight")?,
            token_type: w.get("embeddings.token_type_embeddings.weight")?,
            emb_ln: Lin::load(&w, "embeddings.LayerNorm")?,
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
        let eps = self.cfg.layer_norm_eps;
        let ln = |x: &Tensor, p: &Lin| layer_norm(x, &p.0, &p.1, eps);
        let e = embeds.broadcast_add(&self.position.narrow(0, 0, s)?)?.broadcast_add(&self.token_type.get(0)?)?;
        let mut h = ln(&e, &self.emb_ln)?;
        let mask = ops::key_padding_mask(lengths, s, embeds.dtype(), embeds.device())?;
        let heads = self.cfg.num_attention_heads;
        let scale = 1.0 / ((self.cfg.hidden_size / heads) as f64).sqrt();
        for b in &self.blocks {
            let (q, k, v) = (split_heads(&b.q.fwd(&h)?, heads)?, split_heads(&b.k.fwd(&h)?, heads)?, split_heads(&b.v.fwd(&h)?, heads)?);
            let a = b.attn_out.fwd(&merge_heads(&attention(&q, &k, &v, Some(&mask), scale)?)?)?;
            h = ln(&(h + a)?, &b.attn_ln)?;
            let m = b.out.fwd(&self.act.apply(&b.inter.fwd(&h)?)?)?;
            h = ln(&(h + m)?, &b.out_ln)?;
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
