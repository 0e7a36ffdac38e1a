//! CLIP text and vision towers (OpenAI CLIP with quick-GELU; OpenCLIP models converted to the Hugging Face
//! layout with GELU). Text: token + position embeddings, causal pre-LN transformer, final LayerNorm, the
//! hidden state at the end-of-text token, linear projection. Vision: patch embedding, class token, pre-LN,
//! transformer, LayerNorm of the class token, linear projection.

use crate::layers::{LayerNorm, Linear as Lin};
use crate::ops::{self, attention, linear, merge_heads, split_heads};
use crate::weights::{read_config, Weights};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct TowerConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "act")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub image_size: usize,
    #[serde(default)]
    pub patch_size: usize,
}
fn act() -> String { "quick_gelu".into() }
fn eps() -> f64 { 1e-5 }

#[derive(Debug, Clone, Deserialize)]
pub struct ClipConfig {
    pub text_config: TowerConfig,
    pub vision_config: TowerConfig,
    pub projection_dim: usize,
}

struct Block {
    ln1: LayerNorm,
    q: Lin,
    k: Lin,
    v: Lin,
    out: Lin,
    ln2: LayerNorm,
    fc1: Lin,
    fc2: Lin,
}

/// The transformer shared by both towers.
struct Encoder {
    cfg: TowerConfig,
    act: ops::Activation,
    blocks: Vec<Block>,
}

impl Encoder {
    fn load(w: &Weights, p: &str, cfg: TowerConfig) -> Result<Self> {
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("{p}.encoder.layers.{i}");
                Ok(Block {
                    ln1: LayerNorm::load(w, &format!("{p}.layer_norm1"), cfg.layer_norm_eps)?,
                    q: Lin::load(w, &format!("{p}.self_attn.q_proj"))?,
                    k: Lin::load(w, &format!("{p}.self_attn.k_proj"))?,
                    v: Lin::load(w, &format!("{p}.self_attn.v_proj"))?,
                    out: Lin::load(w, &format!("{p}.self_attn.out_proj"))?,
                    ln2: LayerNorm::load(w, &format!("{p}.layer_norm2"), cfg.layer_norm_eps)?,
                    fc1: Lin::load(w, &format!("{p}.mlp.fc1"))?,
                    fc2: Lin::load(w, &format!("{p}.mlp.fc2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { act: ops::Activation::from_hf(&cfg.hidden_act)?, blocks, cfg })
    }

    fn forward(&self, mut h: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let heads = self.cfg.num_attention_heads;
        let scale = 1.0 / ((self.cfg.hidden_size / heads) as f64).sqrt();
        for b in &self.blocks {
            let x = b.ln1.fwd(&h)?;
            let (q, k, v) = (split_heads(&b.q.fwd(&x)?, heads)?, split_heads(&b.k.fwd(&x)?, heads)?, split_heads(&b.v.fwd(&x)?, heads)?);
            h = (h + b.out.fwd(&merge_heads(&attention(&q, &k, &v, mask, scale)?)?)?)?;
            let x = b.ln2.fwd(&h)?;
            h = (&h + b.fc2.fwd(&self.act.apply(&b.fc1.fwd(&x)?)?)?)?;
        }
        Ok(h)
    }
}

pub struct ClipText {
    token: Tensor,
    position: Tensor,
    encoder: Encoder,
    final_ln: LayerNorm,
    projection: Tensor,
}

impl ClipText {
    pub fn load(w: &Weights, cfg: TowerConfig) -> Result<Self> {
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            token: w.get("text_model.embeddings.token_embedding.weight")?,
            position: w.get("text_model.embeddings.position_embedding.weight")?,
            final_ln: LayerNorm::load(w, "text_model.final_layer_norm", eps)?,
            projection: w.get("text_projection.weight")?,
            encoder: Encoder::load(w, "text_model", cfg)?,
        })
    }

    pub fn token_embeddings(&self) -> &Tensor {
        &self.token
    }

    pub fn context_length(&self) -> usize {
        self.position.dim(0).unwrap_or(77)
    }

    /// Last hidden states `[b, s, d]` (causal attention, so padding after the end-of-text token is inert).
    pub fn hidden_states(&self, embeds: &Tensor) -> Result<Tensor> {
        let (_, s, _) = embeds.dims3()?;
        if s > self.context_length() {
            bail!("{s} tokens exceed CLIP's context of {}", self.context_length());
        }
        let h = embeds.broadcast_add(&self.position.narrow(0, 0, s)?)?;
        let mask = ops::causal_mask(s, None, embeds.dtype(), embeds.device())?;
        Ok(self.final_ln.fwd(&self.encoder.forward(h, Some(&mask))?)?)
    }

    /// Projected text features `[b, proj]`, pooled at each row's end-of-text position.
    pub fn features(&self, embeds: &Tensor, eot: &[usize]) -> Result<Tensor> {
        let h = self.hidden_states(embeds)?;
        Ok(linear(&ops::gather_rows(&h, eot)?, &self.projection, None)?)
    }
}

pub struct ClipVision {
    class: Tensor,
    patch: Tensor,
    position: Tensor,
    pre_ln: LayerNorm,
    encoder: Encoder,
    post_ln: LayerNorm,
    projection: Tensor,
}

impl ClipVision {
    pub fn load(w: &Weights, cfg: TowerConfig) -> Result<Self> {
        let p = "vision_model";
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            class: w.get(&format!("{p}.embeddings.class_embedding"))?,
            patch: w.get(&format!("{p}.embeddings.patch_embedding.weight"))?,
            position: w.get(&format!("{p}.embeddings.position_embedding.weight"))?,
            pre_ln: LayerNorm::load(w, &format!("{p}.pre_layrnorm"), eps)?,
            post_ln: LayerNorm::load(w, &format!("{p}.post_layernorm"), eps)?,
            projection: w.get("visual_projection.weight")?,
            encoder: Encoder::load(w, p, cfg)?,
        })
    }

    pub fn image_size(&self) -> usize {
        self.encoder.cfg.image_size
    }

    /// Projected image features `[b, proj]` for normalised pixels `[b, 3, H, W]`.
    pub fn features(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, hgt, wid) = pixels.dims4()?;
        let p = self.encoder.cfg.patch_size;
        let d = self.encoder.cfg.hidden_size;
        let (gh, gw) = (hgt / p, wid / p);
        // A stride-p convolution is a matmul over non-overlapping patches laid out as (c, py, px).
        let patches = pixels
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, gh * gw, c * p * p))?;
        let x = linear(&patches, &self.patch.reshape((d, c * p * p))?, None)?;
        let cls = self.class.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let h = Tensor::cat(&[&cls.contiguous()?, &x], 1)?.broadcast_add(&self.position)?;
        let h = self.encoder.forward(self.pre_ln.fwd(&h)?, None)?;
        let pooled = self.post_ln.fwd(&h.narrow(1, 0, 1)?.squeeze(1)?)?;
        Ok(linear(&pooled, &self.projection, None)?)
    }
}

/// Both towers of a Hugging Face `CLIPModel` directory.
pub struct Clip {
    pub text: ClipText,
    pub vision: ClipVision,
}

impl Clip {
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg: ClipConfig = read_config(dir)?;
        let w = Weights::from_safetensors_dir(dir, dtype, device)?;
        Ok(Self { text: ClipText::load(&w, cfg.text_config)?, vision: ClipVision::load(&w, cfg.vision_config)? })
    }
}
