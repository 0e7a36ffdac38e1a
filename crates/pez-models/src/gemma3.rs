//! Gemma 3 (text): embeddings scaled by sqrt(d), RMSNorm with scale (1 + w) before and after both attention
//! and MLP, RMSNorm on queries and keys, interleaved sliding-window and global layers with their own rope bases,
//! grouped-query attention scaled by `query_pre_attn_scalar^-1/2`, tanh-GELU gated MLP, tied LM head.

use crate::decoder::{gated_mlp, LayerOut, LayerPast, Pass, Rope, SelfAttention};
use crate::{CausalDecoder, KvCache, LmInfo};
use anyhow::Result;
use candle_core::quantized::gguf_file;
use candle_core::Tensor;
use pez_hub::gguf::{gguf_f32, gguf_u32};
use pez_nn::{Activation, Linear, Mlp, Packed, RmsNorm, Weights};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Gemma3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub query_pre_attn_scalar: f64,
    #[serde(default = "eps")]
    pub rms_norm_eps: f64,
    pub sliding_window: usize,
    /// `sliding_attention` / `full_attention` per layer; older configs give `sliding_window_pattern` instead.
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "pattern", alias = "_sliding_window_pattern")]
    pub sliding_window_pattern: usize,
    pub rope_theta: Option<f64>,
    pub rope_local_base_freq: Option<f64>,
    pub rope_parameters: Option<serde_json::Value>,
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "ctx")]
    pub max_position_embeddings: usize,
    #[serde(default = "act")]
    pub hidden_activation: String,
}
fn eps() -> f64 {
    1e-6
}
fn pattern() -> usize {
    6
}
fn ctx() -> usize {
    32768
}
fn act() -> String {
    "gelu_pytorch_tanh".into()
}

impl Gemma3Config {
    pub fn from_gguf(c: &gguf_file::Content) -> Result<Self> {
        let a = "gemma3";
        let heads = gguf_u32(c, &format!("{a}.attention.head_count"))?;
        let head_dim = gguf_u32(c, &format!("{a}.attention.key_length"))?;
        Ok(Self {
            vocab_size: 0,
            hidden_size: gguf_u32(c, &format!("{a}.embedding_length"))?,
            intermediate_size: gguf_u32(c, &format!("{a}.feed_forward_length"))?,
            num_hidden_layers: gguf_u32(c, &format!("{a}.block_count"))?,
            num_attention_heads: heads,
            num_key_value_heads: gguf_u32(c, &format!("{a}.attention.head_count_kv"))?,
            head_dim,
            // llama.cpp scales queries by head_dim^-1/2 for Gemma 3, i.e. query_pre_attn_scalar = head_dim.
            query_pre_attn_scalar: head_dim as f64,
            rms_norm_eps: gguf_f32(c, &format!("{a}.attention.layer_norm_rms_epsilon"))?,
            sliding_window: gguf_u32(c, &format!("{a}.attention.sliding_window"))?,
            layer_types: None,
            sliding_window_pattern: 6,
            rope_theta: Some(gguf_f32(c, &format!("{a}.rope.freq_base")).unwrap_or(1e6)),
            rope_local_base_freq: Some(10000.0),
            rope_parameters: None,
            rope_scaling: gguf_f32(c, &format!("{a}.rope.scaling.factor"))
                .ok()
                .map(|f| serde_json::json!({"rope_type": "linear", "factor": f})),
            max_position_embeddings: gguf_u32(c, &format!("{a}.context_length")).unwrap_or(32768),
            hidden_activation: act(),
        })
    }

    fn is_sliding(&self, layer: usize) -> bool {
        match &self.layer_types {
            Some(t) => t[layer] == "sliding_attention",
            None => !(layer + 1).is_multiple_of(self.sliding_window_pattern),
        }
    }

    /// (rope base, linear position scale) for global and local layers.
    fn rope(&self) -> ((f64, f64), (f64, f64)) {
        let theta_of = |v: &serde_json::Value| v.get("rope_theta").and_then(|x| x.as_f64());
        let factor_of = |v: &serde_json::Value| match v.get("rope_type").and_then(|x| x.as_str()) {
            Some("linear") => v.get("factor").and_then(|x| x.as_f64()).unwrap_or(1.0),
            _ => 1.0,
        };
        if let Some(p) = &self.rope_parameters {
            let (g, l) = (&p["full_attention"], &p["sliding_attention"]);
            return (
                (theta_of(g).unwrap_or(1e6), factor_of(g)),
                (theta_of(l).unwrap_or(1e4), factor_of(l)),
            );
        }
        let gf = self.rope_scaling.as_ref().map(factor_of).unwrap_or(1.0);
        (
            (self.rope_theta.unwrap_or(1e6), gf),
            (self.rope_local_base_freq.unwrap_or(1e4), 1.0),
        )
    }
}

/// Sandwich norms: `h + norm(attn(norm(h)))`, then `h + norm(mlp(norm(h)))`.
struct Block {
    input_norm: RmsNorm,
    attn: SelfAttention,
    post_attn_norm: RmsNorm,
    pre_ff_norm: RmsNorm,
    post_ff_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    /// `norm` reads an RMSNorm's scale (1 + w) by name.
    fn load(
        w: &Weights,
        c: &Gemma3Config,
        act: Activation,
        norm: &dyn Fn(&Weights) -> Result<RmsNorm>,
    ) -> Result<Self> {
        let a = w.pp("self_attn");
        let mut attn = SelfAttention::load(
            &a,
            c.num_attention_heads,
            c.num_key_value_heads,
            1.0 / c.query_pre_attn_scalar.sqrt(),
        )?;
        attn.qk_norm = Some((norm(&a.pp("q_norm"))?, norm(&a.pp("k_norm"))?));
        Ok(Self {
            input_norm: norm(&w.pp("input_layernorm"))?,
            attn,
            post_attn_norm: norm(&w.pp("post_attention_layernorm"))?,
            pre_ff_norm: norm(&w.pp("pre_feedforward_layernorm"))?,
            post_ff_norm: norm(&w.pp("post_feedforward_layernorm"))?,
            mlp: gated_mlp(&w.pp("mlp"), act)?,
        })
    }

    fn forward(&self, h: &Tensor, rope: &Rope, mask: &Tensor, past: LayerPast) -> Result<LayerOut> {
        let (a, kv) = self
            .attn
            .forward(&self.input_norm.forward(h)?, Some(rope), mask, past)?;
        let h = (h + self.post_attn_norm.forward(&a)?)?;
        let m = self.mlp.forward(&self.pre_ff_norm.forward(&h)?)?;
        Ok(((h + self.post_ff_norm.forward(&m)?)?, kv))
    }
}

pub struct Gemma3 {
    cfg: Gemma3Config,
    info: LmInfo,
    embed: Tensor,
    head: Linear,
    blocks: Vec<Block>,
    norm: RmsNorm,
}

impl Gemma3 {
    /// From Hugging Face tensor names. `norms_hold_one_plus_w`: GGUF files store RMSNorm scales as 1 + w already.
    pub fn load(w: &Weights, mut cfg: Gemma3Config, norms_hold_one_plus_w: bool) -> Result<Self> {
        let m = w.under_first(
            &["model.language_model", "language_model.model", "model"],
            "embed_tokens.weight",
        );
        let eps = cfg.rms_norm_eps;
        let norm = |w: &Weights| -> Result<RmsNorm> {
            let t = w.get("weight")?;
            Ok(RmsNorm::new(if norms_hold_one_plus_w { t } else { (t + 1.0)? }, eps))
        };
        let embed = m.get("embed_tokens.weight")?;
        cfg.vocab_size = embed.dim(0)?;
        let act = Activation::from_hf(&cfg.hidden_activation)?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(&m.pp("layers").pp(i), &cfg, act, &norm))
            .collect::<Result<Vec<_>>>()?;
        let info = LmInfo {
            arch: "gemma3".into(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            max_positions: cfg.max_position_embeddings,
            num_layers: blocks.len(),
            block_matmul_params: crate::count_params(
                blocks.iter().flat_map(|b| b.attn.weights().chain(b.mlp.weights())),
            ),
        };
        Ok(Self {
            norm: norm(&m.pp("norm"))?,
            head: Linear::new(embed.clone(), None, w.precision())?,
            embed,
            blocks,
            info,
            cfg,
        })
    }

    /// From a llama.cpp GGUF file's tensors (renamed to Hugging Face's; its norm scales already hold 1 + w).
    pub fn from_gguf(w: &Weights, content: &gguf_file::Content) -> Result<Self> {
        let cfg = Gemma3Config::from_gguf(content)?;
        Self::load(
            &pez_hub::gguf::to_hf(w, "gemma3", cfg.num_attention_heads, cfg.num_key_value_heads)?,
            cfg,
            true,
        )
    }
}

impl CausalDecoder for Gemma3 {
    fn info(&self) -> &LmInfo {
        &self.info
    }
    fn token_embeddings(&self) -> &Tensor {
        &self.embed
    }
    fn head(&self) -> &Linear {
        &self.head
    }
    /// Sliding-window layers and global layers each have their own mask and rope base.
    fn forward_after(
        &self,
        embeds: &Tensor,
        past: Option<&KvCache>,
        packed: Option<&Packed>,
    ) -> Result<(Tensor, KvCache)> {
        let c = &self.cfg;
        let pass = Pass::new(embeds, past, packed)?;
        let ((g_theta, g_factor), (l_theta, l_factor)) = c.rope();
        let global = (pass.rope(c.head_dim, g_theta, g_factor)?, pass.mask(None)?);
        let local = (
            pass.rope(c.head_dim, l_theta, l_factor)?,
            pass.mask(Some(c.sliding_window))?,
        );
        let h = (embeds * (c.hidden_size as f64).sqrt())?;
        let (h, cache) = pass.run(h, &self.blocks, |b, i, h, past| {
            let (rope, mask) = if c.is_sliding(i) { &local } else { &global };
            b.forward(h, rope, mask, past)
        })?;
        Ok((self.norm.forward(&h)?, cache))
    }
}
