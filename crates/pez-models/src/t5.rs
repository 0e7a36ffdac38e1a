//! T5 v1.1 / T5-LM-adapt: encoder-decoder with RMS LayerNorm (no mean, no bias), bucketed relative position
//! biases (shared by all layers, no 1/sqrt(d) score scaling), gated-GELU (v1.1) or ReLU (original) MLP.
//! As a classifier it scores the decoder's first step: the encoder reads the input, the decoder reads the start
//! token, and the logits of that single step are the "next token" distribution.

use crate::{LanguageModel, LmInfo};
use anyhow::Result;
use candle_core::{Device, Tensor};
use pez_nn::masks::key_padding_mask;
use pez_nn::matmul::Precision;
use pez_nn::ops::{attention_at, merge_heads, split_heads};
use pez_nn::{Activation, Linear, Mlp, RmsNorm, Weights};
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
fn buckets() -> usize {
    32
}
fn max_distance() -> usize {
    128
}
fn eps() -> f64 {
    1e-6
}
fn ff() -> String {
    "relu".into()
}
fn yes() -> bool {
    true
}
fn ctx() -> usize {
    512
}

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

/// Attention without score scaling (T5 folds it into the weights); the position bias comes in as the mask.
struct Attn {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    precision: Precision,
}

impl Attn {
    fn load(w: &Weights) -> Result<Self> {
        let l = |n: &str| Linear::load(&w.pp(n));
        Ok(Self {
            q: l("q")?,
            k: l("k")?,
            v: l("v")?,
            o: l("o")?,
            precision: w.precision(),
        })
    }

    fn forward(&self, x: &Tensor, kv: &Tensor, bias: &Tensor, heads: usize) -> Result<Tensor> {
        let q = split_heads(&self.q.forward(x)?, heads)?;
        let k = split_heads(&self.k.forward(kv)?, heads)?;
        let v = split_heads(&self.v.forward(kv)?, heads)?;
        Ok(self.o.forward(&merge_heads(&attention_at(
            &q,
            &k,
            &v,
            Some(bias),
            1.0,
            self.precision,
        )?)?)?)
    }

    fn weights(&self) -> impl Iterator<Item = &Tensor> {
        [&self.q, &self.k, &self.v, &self.o].into_iter().map(|l| &l.w)
    }
}

/// `wi_0` is the gate of v1.1's gated MLP (`wi` the only input map of the original's).
fn mlp(w: &Weights, gated: bool, act: Activation) -> Result<Mlp> {
    let l = |n: &str| Linear::load(&w.pp(n));
    Ok(if gated {
        Mlp {
            gate: Some(l("wi_0")?),
            up: l("wi_1")?,
            down: l("wo")?,
            act,
        }
    } else {
        Mlp {
            gate: None,
            up: l("wi")?,
            down: l("wo")?,
            act,
        }
    })
}

struct EncoderBlock {
    attn_norm: RmsNorm,
    attn: Attn,
    ff_norm: RmsNorm,
    ff: Mlp,
}

struct DecoderBlock {
    self_norm: RmsNorm,
    self_attn: Attn,
    cross_norm: RmsNorm,
    cross_attn: Attn,
    ff_norm: RmsNorm,
    ff: Mlp,
}

pub struct T5 {
    cfg: T5Config,
    info: LmInfo,
    shared: Tensor,
    enc_rel_bias: Tensor,
    dec_rel_bias: Tensor,
    encoder: Vec<EncoderBlock>,
    enc_norm: RmsNorm,
    decoder: Vec<DecoderBlock>,
    dec_norm: RmsNorm,
    head: Linear,
}

impl T5 {
    pub fn load(w: &Weights, cfg: T5Config) -> Result<Self> {
        let eps = cfg.layer_norm_epsilon;
        let norm = |w: &Weights| RmsNorm::load(&w.pp("layer_norm"), eps);
        let act_name = match cfg.feed_forward_proj.as_str() {
            "gated-gelu" => "gelu_new",
            s => s.trim_start_matches("gated-"),
        };
        let (act, gated) = (
            Activation::from_hf(act_name)?,
            cfg.feed_forward_proj.starts_with("gated-"),
        );
        let encoder = (0..cfg.num_layers)
            .map(|i| {
                let l = w.pp("encoder.block").pp(i).pp("layer");
                Ok(EncoderBlock {
                    attn_norm: norm(&l.pp(0))?,
                    attn: Attn::load(&l.pp("0.SelfAttention"))?,
                    ff_norm: norm(&l.pp(1))?,
                    ff: mlp(&l.pp("1.DenseReluDense"), gated, act)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..cfg.num_decoder_layers.unwrap_or(cfg.num_layers))
            .map(|i| {
                let l = w.pp("decoder.block").pp(i).pp("layer");
                Ok(DecoderBlock {
                    self_norm: norm(&l.pp(0))?,
                    self_attn: Attn::load(&l.pp("0.SelfAttention"))?,
                    cross_norm: norm(&l.pp(1))?,
                    cross_attn: Attn::load(&l.pp("1.EncDecAttention"))?,
                    ff_norm: norm(&l.pp(2))?,
                    ff: mlp(&l.pp("2.DenseReluDense"), gated, act)?,
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
        let head = Linear::new(
            if scale {
                (head * (cfg.d_model as f64).powf(-0.5))?
            } else {
                head
            },
            None,
            w.precision(),
        )?;
        let info = LmInfo {
            arch: "t5".into(),
            vocab_size: shared.dim(0)?,
            hidden_size: cfg.d_model,
            max_positions: cfg.n_positions,
            num_layers: encoder.len(),
            block_matmul_params: crate::count_params(
                encoder.iter().flat_map(|b| b.attn.weights().chain(b.ff.weights())),
            ),
        };
        let rel_bias = |part: &str| {
            w.get(&format!(
                "{part}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
            ))
        };
        Ok(Self {
            enc_rel_bias: rel_bias("encoder")?,
            dec_rel_bias: rel_bias("decoder")?,
            enc_norm: RmsNorm::load(&w.pp("encoder.final_layer_norm"), eps)?,
            dec_norm: RmsNorm::load(&w.pp("decoder.final_layer_norm"), eps)?,
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
                    relative_position_bucket(
                        j as i64 - i as i64,
                        bidirectional,
                        c.relative_attention_num_buckets,
                        c.relative_attention_max_distance,
                    ) as u32
                })
            })
            .collect();
        let b = table.index_select(&Tensor::new(idx.as_slice(), dev)?, 0)?; // [q*k, heads]
        Ok(b.reshape((q, k, c.num_heads))?.permute((2, 0, 1))?.unsqueeze(0)?)
    }

    /// Encoder output `[b, s, d]` for right-padded input embeddings.
    pub fn encode(&self, embeds: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (_, s, _) = embeds.dims3()?;
        let (dt, dev) = (embeds.dtype(), embeds.device());
        let heads = self.cfg.num_heads;
        let pad = key_padding_mask(lengths, s, dt, dev)?;
        let bias = self
            .position_bias(&self.enc_rel_bias, s, s, true, dev)?
            .to_dtype(dt)?
            .broadcast_add(&pad)?;
        let mut h = embeds.clone();
        for b in &self.encoder {
            let x = b.attn_norm.forward(&h)?;
            h = (h + b.attn.forward(&x, &x, &bias, heads)?)?;
            h = (&h + b.ff.forward(&b.ff_norm.forward(&h)?)?)?;
        }
        Ok(self.enc_norm.forward(&h)?)
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
        let heads = self.cfg.num_heads;
        let self_bias = self.position_bias(&self.dec_rel_bias, 1, 1, false, dev)?.to_dtype(dt)?;
        let cross_bias = key_padding_mask(lengths, s, dt, dev)?;
        let start = self.embed_ids(&[self.cfg.decoder_start_token_id])?;
        let mut h = start
            .unsqueeze(0)?
            .broadcast_as((b, 1, self.cfg.d_model))?
            .contiguous()?;
        for blk in &self.decoder {
            let x = blk.self_norm.forward(&h)?;
            h = (&h + blk.self_attn.forward(&x, &x, &self_bias, heads)?)?;
            let x = blk.cross_norm.forward(&h)?;
            h = (&h + blk.cross_attn.forward(&x, &enc, &cross_bias, heads)?)?;
            h = (&h + blk.ff.forward(&blk.ff_norm.forward(&h)?)?)?;
        }
        Ok(self.dec_norm.forward(&h)?)
    }
    fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(pez_nn::dtype::widened(&self.head.forward(hidden)?)?)
    }
    fn next_token_logits(&self, embeds: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let h = self.hidden_states(embeds, lengths)?;
        self.lm_head(&h.squeeze(1)?)
    }
}
