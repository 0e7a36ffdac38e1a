//! Llama (SmolLM2): pre-RMSNorm decoder with rotary positions, grouped-query attention and a SwiGLU MLP.

use crate::decoder::{gated_mlp, LayerOut, LayerPast, Pass, Rope, SelfAttention};
use crate::{CausalDecoder, KvCache, LmInfo};
use anyhow::Result;
use candle_core::quantized::gguf_file;
use candle_core::Tensor;
use pez_hub::gguf::{gguf_f32, gguf_u32};
use pez_nn::{Activation, Linear, Mlp, Packed, RmsNorm, Weights};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_ctx")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<serde_json::Value>,
}
fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    10000.0
}
fn default_ctx() -> usize {
    2048
}

impl LlamaConfig {
    pub fn from_gguf(c: &gguf_file::Content) -> Result<Self> {
        let a = "llama";
        Ok(Self {
            vocab_size: 0, // taken from the embedding matrix
            hidden_size: gguf_u32(c, &format!("{a}.embedding_length"))?,
            intermediate_size: gguf_u32(c, &format!("{a}.feed_forward_length"))?,
            num_hidden_layers: gguf_u32(c, &format!("{a}.block_count"))?,
            num_attention_heads: gguf_u32(c, &format!("{a}.attention.head_count"))?,
            num_key_value_heads: gguf_u32(c, &format!("{a}.attention.head_count_kv")).ok(),
            head_dim: None,
            rms_norm_eps: gguf_f32(c, &format!("{a}.attention.layer_norm_rms_epsilon"))?,
            rope_theta: gguf_f32(c, &format!("{a}.rope.freq_base")).unwrap_or(10000.0),
            max_position_embeddings: gguf_u32(c, &format!("{a}.context_length")).unwrap_or(2048),
            tie_word_embeddings: true,
            bos_token_id: gguf_u32(c, "tokenizer.ggml.bos_token_id").ok().map(|x| x as u32),
            eos_token_id: gguf_u32(c, "tokenizer.ggml.eos_token_id").ok().map(|x| x.into()),
        })
    }
    fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
}

/// `h + attn(norm(h))`, then `h + mlp(norm(h))`.
struct Block {
    input_norm: RmsNorm,
    attn: SelfAttention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn load(w: &Weights, c: &LlamaConfig) -> Result<Self> {
        let scale = 1.0 / (c.head_dim() as f64).sqrt();
        Ok(Self {
            input_norm: RmsNorm::load(&w.pp("input_layernorm"), c.rms_norm_eps)?,
            attn: SelfAttention::load(&w.pp("self_attn"), c.num_attention_heads, c.kv_heads(), scale)?,
            post_norm: RmsNorm::load(&w.pp("post_attention_layernorm"), c.rms_norm_eps)?,
            mlp: gated_mlp(&w.pp("mlp"), Activation::Silu)?,
        })
    }

    fn forward(&self, h: &Tensor, rope: &Rope, mask: &Tensor, past: LayerPast) -> Result<LayerOut> {
        let (a, kv) = self
            .attn
            .forward(&self.input_norm.forward(h)?, Some(rope), mask, past)?;
        let h = (h + a)?;
        let m = self.mlp.forward(&self.post_norm.forward(&h)?)?;
        Ok(((h + m)?, kv))
    }
}

pub struct Llama {
    cfg: LlamaConfig,
    info: LmInfo,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    head: Linear,
}

impl Llama {
    /// From Hugging Face tensor names (`model.layers.N...`).
    pub fn load(w: &Weights, mut cfg: LlamaConfig) -> Result<Self> {
        let m = w.pp("model");
        let embed = m.get("embed_tokens.weight")?;
        cfg.vocab_size = embed.dim(0)?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(&m.pp("layers").pp(i), &cfg))
            .collect::<Result<Vec<_>>>()?;
        let head = match w.get_opt("lm_head.weight") {
            Some(h) if !cfg.tie_word_embeddings => h,
            _ => embed.clone(),
        };
        let head = Linear::new(head, None, w.precision())?;
        let info = LmInfo {
            arch: "llama".into(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            max_positions: cfg.max_position_embeddings,
            num_layers: blocks.len(),
            block_matmul_params: crate::count_params(
                blocks.iter().flat_map(|b| b.attn.weights().chain(b.mlp.weights())),
            ),
        };
        Ok(Self {
            norm: RmsNorm::load(&m.pp("norm"), cfg.rms_norm_eps)?,
            embed,
            blocks,
            head,
            info,
            cfg,
        })
    }

    /// From a llama.cpp GGUF file (its tensors renamed to Hugging Face's, Q/K rows put back in its order).
    pub fn from_gguf(w: &Weights, content: &gguf_file::Content) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(content)?;
        Self::load(
            &pez_hub::gguf::to_hf(w, "llama", cfg.num_attention_heads, cfg.kv_heads())?,
            cfg,
        )
    }
}

impl CausalDecoder for Llama {
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
        let (rope, mask) = (
            pass.rope(self.cfg.head_dim(), self.cfg.rope_theta, 1.0)?,
            pass.mask(None)?,
        );
        let (h, cache) = pass.run(embeds.clone(), &self.blocks, |b, _, h, past| {
            b.forward(h, &rope, &mask, past)
        })?;
        Ok((self.norm.forward(&h)?, cache))
    }
}
