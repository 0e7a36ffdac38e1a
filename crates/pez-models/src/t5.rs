//! T5 v1.1 / T5-LM-adapt: encoder-decoder with RMS LayerNorm (no mean, no bias), bucketed relative position
//! biases (shared by all layers, no 1/sqrt(d) score scaling), gated-GELU (v1.1) or ReLU (original) MLP.
//! As a classifier it scores the decoder's first step: the encoder reads the input, the decoder reads the start
//! token, and the logits of that single step are the "next token" distribution.

use crate::ops::{self, attention, linear, merge_heads, rms_norm, split_heads};
use crate::weights::Weights;
use crate::{LanguageModel, LmInfo};
use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    #[serde(default = "buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "ff")]
    pub feed_forward_proj: String,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// transformers >= 5 always ties and records here whether the decoder output is rescaled (original T5) or
    /// not (v1.1, whose old configs say `tie_word_embeddings: false`).
    pub scale_decoder_outputs: Option<bool>,
    #[serde(default)]
    pub decoder_start_token_id: u32,
    #[serde(default = "ctx")]
    pub n_positions: usize,
}
fn buckets() -> usize { 32 }
fn max_distance() -> usize { 128 }
fn eps() -> f64 { 1e-6 }
fn ff() -> String { "relu".into() }
fn yes() -> bool { true }
fn ctx() -> usize { 512 }

/// HF's `_relative_position_bucket`: exact buckets for small distances, log-spaced up to `max_distance`.
pub fn relative_position_bucket(rel: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> usize {
    let mut nb = num_buckets as i64;
    let mut bucket = 0i64;
    let mut n = rel;
    if bidirectional {
        nb /= 2;
        if rel > 0 {
            bucket += nb;
        }
        n = rel.abs();
    } else {
        n = -n.min(0);
    }
    let max_exact = nb / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let large = max_exact
            + ((n as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln()
                * (nb - max_exact) as f32) as i64;
        bucket += large.min(nb - 1);
    }
    bucket as usize
}

struct Attn {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
}

struct Ff {
    wi_0: Tensor,
    wi_1: Option<Tensor>,
    wo: Tensor,
}

struct EncoderBlock {
    attn_norm: Tensor,
    attn: Attn,
    ff_norm: Tensor,
    ff: Ff,
}

struct DecoderBlock {
    self_norm: Tensor,
    self_attn: Attn,
    cross_norm: Tensor,
    cross_attn: Attn,
    ff_norm: Tensor,
    ff: Ff,
}

pub struct T5 {
    cfg: T5Config,
    info: LmInfo,
    act: ops::Activation,
    shared: Tensor,
    enc_rel_bias: Tensor,
    dec_rel_bias: Tensor,
    encoder: Vec<EncoderBlock>,
    enc_norm: Tensor,
    decoder: Vec<DecoderBlock>,
    dec_norm: Tensor,
    head: Tensor,
}

impl T5 {
    pub fn load(w: &Weights, cfg: T5Config) -> Result<Self> {
        let attn = |p: &str| -> Result<Attn> {
            Ok(Attn {
                q: w.get(&format!("{p}.q.weight"))?,
                k: w.get(&format!("{p}.k.weight"))?,
                v: w.get(&format!("{p}.v.weight"))?,
                o: w.get(&format!("{p}.o.weight"))?,
            })
        };
        let gated = cfg.feed_forward_proj.starts_with("gated-");
        let ff = |p: &str| -> Result<Ff> {
            Ok(if gated {
                Ff {
                    wi_0: w.get(&format!("{p}.wi_0.weight"))?,
                    wi_1: Some(w.get(&format!("{p}.wi_1.weight"))?),
                    wo: w.get(&format!("{p}.wo.weight"))?,
                }
            } else {
                Ff { wi_0: w.get(&format!("{p}.wi.weight"))?, wi_1: None, wo: w.get(&format!("{p}.wo.weight"))? }
            })
        };
        let encoder = (0..cfg.num_layers)
            .map(|i| {
                let p = format!("encoder.block.{i}.layer");
                Ok(EncoderBlock {
                    attn_norm: w.get(&format!("{p}.0.layer_norm.weight"))?,
                    attn: attn(&format!("{p}.0.SelfAttention"))?,
                    ff_norm: w.get(&format!("{p}.1.layer_norm.weight"))?,
                    ff: ff(&format!("{p}.1.DenseReluDense"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..cfg.num_decoder_layers.unwrap_or(cfg.num_layers))
            .map(|i| {
                let p = format!("decoder.block.{i}.layer");
                Ok(DecoderBlock {
                    self_norm: w.get(&format!("{p}.0.layer_norm.weight"))?,
                    self_attn: attn(&format!("{p}.0.SelfAttention"))?,
                    cross_norm: w.get(&format!("{p}.1.layer_norm.weight"))?,
                    cross_attn: attn(&format!("{p}.1.EncDecAttention"))?,
                    ff_norm: w.get(&format!("{p}.2.layer_norm.weight"))?,
                    ff: ff(&format!("{p}.2.DenseReluDense"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let shared = w.get("shared.weight")?;
        // Original T5 ties the head to `shared` and rescales the decoder output by d_model^-1/2; v1.1 has its own
        // head (`lm_head.weight`) and no rescaling.
        let scale = cfg.scale_decoder_outputs.unwrap_or(cfg.tie_word_embeddings);
        let head = match w.get_opt("lm_head.weight") {
            Some(h) if !cfg.tie_word_embeddings || cfg.scale_decoder_outputs.is_some() => h,
            _ => shared.clone(),
        };
        let head = if scale { (head * (cfg.d_model as f64).powf(-0.5))? } else { head };
        let act_name = match cfg.feed_forward_proj.as_str() {
            "gated-gelu" => "gelu_new",
            s => s.trim_start_matches("gated-"),
        };
        let info = LmInfo {
            arch: "t5".into(),
            vocab_size: shared.dim(0)?,
            hidden_size: cfg.d_model,
            max_positions: cfg.n_positions,
            num_layers: encoder.len(),
            block_matmul_params: crate::count_params(encoder.iter().flat_map(|b| {
                [&b.attn.q, &b.attn.k, &b.attn.v, &b.attn.o, &b.ff.wi_0, &b.ff.wo].into_iter().chain(b.ff.wi_1.as_ref())
            })),
        };
        Ok(Self {
            act: ops::Activation::from_hf(act_name)?,
            enc_rel_bias: w.get("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")?,
            dec_rel_bias: w.get("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")?,
            enc_norm: w.get("encoder.final_layer_norm.weight")?,
            dec_norm: w.get("decoder.final_layer_norm.weight")?,
            shared,
            encoder,
            decoder,
            head,
            info,
            cfg,
        })
    }

    /// Position bias `[1, heads, q, k]` from the learned bucket table `[buckets, heads]`.
    fn position_bias(&self, table: &Tensor, q: usize, k: usize, bidirectional: bool, dev: &Device) -> Result<Tensor> {
        let c = &self.cfg;
        let idx: Vec<u32> = (0..q)
            .flat_map(|i| {
                (0..k).map(move |j| {
                    relative_position_bucket(j as i64 - i as i64, bidirectional, c.relative_attention_num_buckets,
                                             c.relative_attention_max_distance) as u32
                })
            })
            .collect();
        let b = table.index_select(&Tensor::new(idx.as_slice(), dev)?, 0)?; // [q*k, heads]
        Ok(b.reshape((q, k, c.num_heads))?.permute((2, 0, 1))?.unsqueeze(0)?)
    }

    fn attend(&self, a: &Attn, x: &Tensor, kv: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let h = self.cfg.num_heads;
        let q = split_heads(&linear(x, &a.q, None)?, h)?;
        let k = split_heads(&linear(kv, &a.k, None)?, h)?;
        let v = split_heads(&linear(kv, &a.v, None)?, h)?;
        Ok(linear(&merge_heads(&attention(&q, &k, &v, Some(bias), 1.0)?)?, &a.o, None)?)
    }

    fn feed_forward(&self, f: &Ff, x: &Tensor) -> Result<Tensor> {
        let gate = linear(x, &f.wi_0, None)?;
        let h = match &f.wi_1 {
            Some(wi_1) => self.act.gated(&gate, &linear(x, wi_1, None)?)?,
            None => self.act.apply(&gate)?,
        };
        Ok(linear(&h, &f.wo, None)?)
    }

    /// Encoder output `[b, s, d]` for right-padded input embeddings.
    pub fn encode(&self, embeds: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (_, s, _) = embeds.dims3()?;
        let (dt, dev) = (embeds.dtype(), embeds.device());
        let eps = self.cfg.layer_norm_epsilon;
        let pad = ops::key_padding_mask(lengths, s, dt, dev)?;
        let bias = self.position_bias(&self.enc_rel_bias, s, s, true, dev)?.to_dtype(dt)?.broadcast_add(&pad)?;
        let mut h = embeds.clone();
        for b in &self.encoder {
            let x = rms_norm(&h, &b.attn_norm, eps)?;
            h = (h + self.attend(&b.attn, &x, &x, &bias)?)?;
            h = (&h + self.feed_forward(&b.ff, &rms_norm(&h, &b.ff_norm, eps)?)?)?;
        }
        Ok(rms_norm(&h, &self.enc_norm, eps)?)
    }
}

impl LanguageModel for T5 {
    fn info(&self) -> &LmInfo {
        &self.info
    }
    fn token_embeddings(&self) -> &Tensor {
        &self.shared
    }
    /// The decoder's hidden state at its first step `[b, 1, d]` (the decoder reads only the start token).
    fn hidden_states(&self, embeds: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let enc = self.encode(embeds, lengths)?;
        let (b, s, _) = enc.dims3()?;
        let (dt, dev) = (enc.dtype(), enc.device());
        let eps = self.cfg.layer_norm_epsilon;
        let self_bias = self.position_bias(&self.dec_rel_bias, 1, 1, false, dev)?.to_dtype(dt)?;
        let cross_bias = ops::key_padding_mask(lengths, s, dt, dev)?;
        let start = self.embed_ids(&[self.cfg.decoder_start_token_id])?;
        let mut h = start.unsqueeze(0)?.broadcast_as((b, 1, self.cfg.d_model))?.contiguous()?;
        for blk in &self.decoder {
            let x = rms_norm(&h, &blk.self_norm, eps)?;
            h = (&h + self.attend(&blk.self_attn, &x, &x, &self_bias)?)?;
            let x = rms_norm(&h, &blk.cross_norm, eps)?;
            h = (&h + self.attend(&blk.cross_attn, &x, &enc, &cross_bias)?)?;
            h = (&h + self.feed_forward(&blk.ff, &rms_norm(&h, &blk.ff_norm, eps)?)?)?;
        }
        Ok(rms_norm(&h, &self.dec_norm, eps)?)
    }
    fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(linear(hidden, &self.head, None)?)
    }
    fn next_token_logits(&self, embeds: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let h = self.hidden_states(embeds, lengths)?;
        self.lm_head(&h.squeeze(1)?)
    }
}

