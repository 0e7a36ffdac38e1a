//! Llama (SmolLM2): pre-RMSNorm decoder with rotary positions, grouped-query attention and a SwiGLU MLP.

use crate::ops::{self, after_past, apply_rope, attention, linear, merge_heads, rms_norm, split_heads};
use crate::weights::{gguf_f32, gguf_u32, Weights};
use crate::{CausalDecoder, KvCache, LmInfo, Packed};
use anyhow::Result;
use candle_core::quantized::gguf_file;
use candle_core::Tensor;
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
fn default_eps() -> f64 { 1e-5 }
fn default_theta() -> f64 { 10000.0 }
fn default_ctx() -> usize { 2048 }

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
}

struct Block {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

pub struct Llama {
    cfg: LlamaConfig,
    info: LmInfo,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    head: Tensor,
}

impl Llama {
    /// From Hugging Face tensor names (`model.layers.N...`).
    pub fn load(w: &Weights, mut cfg: LlamaConfig) -> Result<Self> {
        let embed = w.get("model.embed_tokens.weight")?;
        cfg.vocab_size = embed.dim(0)?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(Block {
                    input_norm: w.get(&format!("{p}.input_layernorm.weight"))?,
                    q: w.get(&format!("{p}.self_attn.q_proj.weight"))?,
                    k: w.get(&format!("{p}.self_attn.k_proj.weight"))?,
                    v: w.get(&format!("{p}.self_attn.v_proj.weight"))?,
                    o: w.get(&format!("{p}.self_attn.o_proj.weight"))?,
                    post_norm: w.get(&format!("{p}.post_attention_layernorm.weight"))?,
                    gate: w.get(&format!("{p}.mlp.gate_proj.weight"))?,
                    up: w.get(&format!("{p}.mlp.up_proj.weight"))?,
                    down: w.get(&format!("{p}.mlp.down_proj.weight"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head = match w.get_opt("lm_head.weight") {
            Some(h) if !cfg.tie_word_embeddings => h,
            _ => embed.clone(),
        };
        let info = LmInfo {
            arch: "llama".into(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            max_positions: cfg.max_position_embeddings,
            num_layers: blocks.len(),
            block_matmul_params: crate::count_params(blocks.iter().flat_map(|b| [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down])),
        };
        Ok(Self { norm: w.get("model.norm.weight")?, embed, blocks, head, info, cfg })
    }
}


impl CausalDecoder for Llama {
    fn info(&self) -> &LmInfo {
        &self.info
    }
    fn token_embeddings(&self) -> &Tensor {
        &self.embed
    }
    fn head(&self) -> &Tensor {
        &self.head
    }
    /// Hidden states of `embeds` at positions `past.len..` and the keys/values of every position.
    /// With `packed`, `embeds` is `[1, T, d]` holding several rows (see `Packed`).
    fn forward_after(&self, embeds: &Tensor, past: Option<&KvCache>, packed: Option<&Packed>) -> Result<(Tensor, KvCache)> {
        let c = &self.cfg;
        let (_, s, _) = embeds.dims3()?;
        let (dt, dev) = (embeds.dtype(), embeds.device());
        let hd = c.head_dim();
        let p = KvCache::len_of(past);
        let pos: Vec<f64> = ops::token_positions(s, p, packed).iter().map(|&x| x as f64).collect();
        let (cos, sin) = ops::rope_tables_at(&pos, hd, c.rope_theta, dt, dev)?;
        let mask = ops::attention_mask(s, p, packed, None, dt, dev)?;
        let kvh = c.num_key_value_heads.unwrap_or(c.num_attention_heads);
        let mut h = embeds.clone();
        let mut cache = Vec::with_capacity(self.blocks.len());
        for (i, b) in self.blocks.iter().enumerate() {
            let (past_k, past_v) = KvCache::layer(past, i);
            let x = rms_norm(&h, &b.input_norm, c.rms_norm_eps)?;
            let q = apply_rope(&split_heads(&linear(&x, &b.q, None)?, c.num_attention_heads)?, &cos, &sin)?;
            let k = after_past(past_k, &apply_rope(&split_heads(&linear(&x, &b.k, None)?, kvh)?, &cos, &sin)?)?;
            let v = after_past(past_v, &split_heads(&linear(&x, &b.v, None)?, kvh)?)?;
            let a = attention(&q, &k, &v, Some(&mask), 1.0 / (hd as f64).sqrt())?;
            cache.push((k, v));
            h = (h + linear(&merge_heads(&a)?, &b.o, None)?)?;
            let x = rms_norm(&h, &b.post_norm, c.rms_norm_eps)?;
            let m = ops::Activation::Silu.gated(&linear(&x, &b.gate, None)?, &linear(&x, &b.up, None)?)?;
            h = (h + linear(&m, &b.down, None)?)?;
        }
        Ok((rms_norm(&h, &self.norm, c.rms_norm_eps)?, KvCache { len: p + s, layers: cache }))
    }
}

impl Llama {
    /// From a llama.cpp GGUF file's tensors: renamed to Hugging Face's names, Q/K rows put back in its order.
    pub fn from_gguf(w: &Weights, content: &gguf_file::Content) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(content)?;
        let (heads, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads.unwrap_or(cfg.num_attention_heads));
        let mut renamed = std::collections::HashMap::new();
        for name in w.names() {
            let mut t = w.get(name)?;
            if name.ends_with("attn_q.weight") {
                t = unpermute_qk(&t, heads)?;
            } else if name.ends_with("attn_k.weight") {
                t = unpermute_qk(&t, kv)?;
            }
            renamed.insert(hf_name_from_gguf(name), t);
        }
        Self::load(&w.renamed(renamed), cfg)
    }
}

/// Undoes llama.cpp's reordering of Q/K rows (its rope pairs adjacent dims; Hugging Face's pairs the halves).
fn unpermute_qk(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / heads;
    Ok(w.reshape((heads, hd / 2, 2, inp))?.transpose(1, 2)?.reshape((out, inp))?)
}

/// Renames llama.cpp's tensor names to Hugging Face's for the Llama layout.
fn hf_name_from_gguf(name: &str) -> String {
    let map = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    for (g, h) in map {
        if name == g {
            return h.into();
        }
    }
    if let Some(rest) = name.strip_prefix("blk.") {
        let (i, t) = rest.split_once('.').unwrap_or((rest, ""));
        let t = match t {
            "attn_norm.weight" => "input_layernorm.weight",
            "attn_q.weight" => "self_attn.q_proj.weight",
            "attn_k.weight" => "self_attn.k_proj.weight",
            "attn_v.weight" => "self_attn.v_proj.weight",
            "attn_output.weight" => "self_attn.o_proj.weight",
            "ffn_norm.weight" => "post_attention_layernorm.weight",
            "ffn_gate.weight" => "mlp.gate_proj.weight",
            "ffn_up.weight" => "mlp.up_proj.weight",
            "ffn_down.weight" => "mlp.down_proj.weight",
            other => other,
        };
        return format!("model.layers.{i}.{t}");
    }
    name.into()
}
