//! Gemma 3 (text): embeddings scaled by sqrt(d), RMSNorm with scale (1 + w) before and after both attention
//! and MLP, RMSNorm on queries and keys, interleaved sliding-window and global layers with their own rope bases,
//! grouped-query attention scaled by `query_pre_attn_scalar^-1/2`, tanh-GELU gated MLP, tied LM head.

use crate::ops::{self, after_past, apply_rope, attention, linear, merge_heads, rms_norm, split_heads};
use crate::weights::{gguf_f32, gguf_u32, Weights};
use crate::{CausalDecoder, KvCache, LmInfo, Packed};
use anyhow::Result;
use candle_core::quantized::gguf_file;
use candle_core::Tensor;
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
fn eps() -> f64 { 1e-6 }
fn pattern() -> usize { 6 }
fn ctx() -> usize { 32768 }
fn act() -> String { "gelu_pytorch_tanh".into() }

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
            None => (layer + 1) % self.sliding_window_pattern != 0,
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
            return ((theta_of(g).unwrap_or(1e6), factor_of(g)), (theta_of(l).unwrap_or(1e4), factor_of(l)));
        }
        let gf = self.rope_scaling.as_ref().map(factor_of).unwrap_or(1.0);
        ((self.rope_theta.unwrap_or(1e6), gf), (self.rope_local_base_freq.unwrap_or(1e4), 1.0))
    }
}

struct Block {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    post_attn_norm: Tensor,
    pre_ff_norm: Tensor,
    post_ff_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

pub struct Gemma3 {
    cfg: Gemma3Config,
    info: LmInfo,
    act: ops::Activation,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
}

impl Gemma3 {
    /// From Hugging Face tensor names. `norms_hold_one_plus_w`: GGUF files store RMSNorm scales as 1 + w already.
    pub fn load(w: &Weights, mut cfg: Gemma3Config, norms_hold_one_plus_w: bool) -> Result<Self> {
        let w = Weights::clone_with_prefix(w, &["model.language_model.", "language_model.model.", "model."], "embed_tokens.weight");
        let norm = |name: &str| -> Result<Tensor> {
            let t = w.get(name)?;
            Ok(if norms_hold_one_plus_w { t } else { (t + 1.0)? })
        };
        let embed = w.get("embed_tokens.weight")?;
        cfg.vocab_size = embed.dim(0)?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("layers.{i}");
                Ok(Block {
                    input_norm: norm(&format!("{p}.input_layernorm.weight"))?,
                    q: w.get(&format!("{p}.self_attn.q_proj.weight"))?,
                    k: w.get(&format!("{p}.self_attn.k_proj.weight"))?,
                    v: w.get(&format!("{p}.self_attn.v_proj.weight"))?,
                    o: w.get(&format!("{p}.self_attn.o_proj.weight"))?,
                    q_norm: norm(&format!("{p}.self_attn.q_norm.weight"))?,
                    k_norm: norm(&format!("{p}.self_attn.k_norm.weight"))?,
                    post_attn_norm: norm(&format!("{p}.post_attention_layernorm.weight"))?,
                    pre_ff_norm: norm(&format!("{p}.pre_feedforward_layernorm.weight"))?,
                    post_ff_norm: norm(&format!("{p}.post_feedforward_layernorm.weight"))?,
                    gate: w.get(&format!("{p}.mlp.gate_proj.weight"))?,
                    up: w.get(&format!("{p}.mlp.up_proj.weight"))?,
                    down: w.get(&format!("{p}.mlp.down_proj.weight"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let info = LmInfo {
            arch: "gemma3".into(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            max_positions: cfg.max_position_embeddings,
            num_layers: blocks.len(),
            block_matmul_params: crate::count_params(blocks.iter().flat_map(|b| [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down])),
        };
        Ok(Self {
            act: ops::Activation::from_hf(&cfg.hidden_activation)?,
            norm: norm("norm.weight")?,
            embed,
            blocks,
            info,
            cfg,
        })
    }
}


impl CausalDecoder for Gemma3 {
    fn info(&self) -> &LmInfo {
        &self.info
    }
    fn token_embeddings(&self) -> &Tensor {
        &self.embed
    }
    fn head(&self) -> &Tensor {
        &self.embed
    }
    /// Hidden states of `embeds` at positions `past.len..` and the keys/values of every position.
    /// With `packed`, `embeds` is `[1, T, d]` holding several rows (see `Packed`).
    fn forward_after(&self, embeds: &Tensor, past: Option<&KvCache>, packed: Option<&Packed>) -> Result<(Tensor, KvCache)> {
        let c = &self.cfg;
        let (_, s, _) = embeds.dims3()?;
        let (dt, dev) = (embeds.dtype(), embeds.device());
        let p = KvCache::len_of(past);
        let ((g_theta, g_factor), (l_theta, l_factor)) = c.rope();
        // Absolute positions of the tokens; linear rope scaling divides them by `factor`.
        let positions = ops::token_positions(s, p, packed);
        let tables = |theta: f64, factor: f64| -> Result<(Tensor, Tensor)> {
            let pos: Vec<f64> = positions.iter().map(|&i| i as f64 / factor).collect();
            Ok(ops::rope_tables_at(&pos, c.head_dim, theta, dt, dev)?)
        };
        let global = tables(g_theta, g_factor)?;
        let local = tables(l_theta, l_factor)?;
        let global_mask = ops::attention_mask(s, p, packed, None, dt, dev)?;
        let local_mask = ops::attention_mask(s, p, packed, Some(c.sliding_window), dt, dev)?;
        let eps = c.rms_norm_eps;
        let scale = 1.0 / c.query_pre_attn_scalar.sqrt();
        let mut h = (embeds * (c.hidden_size as f64).sqrt())?;
        let mut cache = Vec::with_capacity(self.blocks.len());
        for (i, b) in self.blocks.iter().enumerate() {
            let (past_k, past_v) = KvCache::layer(past, i);
            let ((cos, sin), mask) = if c.is_sliding(i) { (&local, &local_mask) } else { (&global, &global_mask) };
            let x = rms_norm(&h, &b.input_norm, eps)?;
            let q = rms_norm(&split_heads(&linear(&x, &b.q, None)?, c.num_attention_heads)?, &b.q_norm, eps)?;
            let k = rms_norm(&split_heads(&linear(&x, &b.k, None)?, c.num_key_value_heads)?, &b.k_norm, eps)?;
            let v = split_heads(&linear(&x, &b.v, None)?, c.num_key_value_heads)?;
            let (q, k) = (apply_rope(&q, cos, sin)?, after_past(past_k, &apply_rope(&k, cos, sin)?)?);
            let v = after_past(past_v, &v)?;
            let a = linear(&merge_heads(&attention(&q, &k, &v, Some(mask), scale)?)?, &b.o, None)?;
            cache.push((k, v));
            h = (h + rms_norm(&a, &b.post_attn_norm, eps)?)?;
            let x = rms_norm(&h, &b.pre_ff_norm, eps)?;
            let m = self.act.gated(&linear(&x, &b.gate, None)?, &linear(&x, &b.up, None)?)?;
            h = (h + rms_norm(&linear(&m, &b.down, None)?, &b.post_ff_norm, eps)?)?;
        }
        Ok((rms_norm(&h, &self.norm, eps)?, KvCache { len: p + s, layers: cache }))
    }
}

impl Gemma3 {
    /// From a llama.cpp GGUF file's tensors (renamed to Hugging Face's; its norm scales already hold 1 + w).
    pub fn from_gguf(w: &Weights, content: &gguf_file::Content) -> Result<Self> {
        let cfg = Gemma3Config::from_gguf(content)?;
        let renamed = w.names().map(|n| Ok((hf_name_from_gguf(n), w.get(n)?))).collect::<Result<_>>()?;
        Self::load(&w.renamed(renamed), cfg, true)
    }
}

/// Renames llama.cpp's Gemma 3 tensor names to Hugging Face's (without the `model.` prefix).
fn hf_name_from_gguf(name: &str) -> String {
    match name {
        "token_embd.weight" => return "embed_tokens.weight".into(),
        "output_norm.weight" => return "norm.weight".into(),
        _ => {}
    }
    if let Some(rest) = name.strip_prefix("blk.") {
        let (i, t) = rest.split_once('.').unwrap_or((rest, ""));
        let t = match t {
            "attn_norm.weight" => "input_layernorm.weight",
            "attn_q.weight" => "self_attn.q_proj.weight",
            "attn_k.weight" => "self_attn.k_proj.weight",
            "attn_v.weight" => "self_attn.v_proj.weight",
            "attn_output.weight" => "self_attn.o_proj.weight",
            "attn_q_norm.weight" => "self_attn.q_norm.weight",
            "attn_k_norm.weight" => "self_attn.k_norm.weight",
            "post_attention_norm.weight" => "post_attention_layernorm.weight",
            "ffn_norm.weight" => "pre_feedforward_layernorm.weight",
            "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
            "ffn_gate.weight" => "mlp.gate_proj.weight",
            "ffn_up.weight" => "mlp.up_proj.weight",
            "ffn_down.weight" => "mlp.down_proj.weight",
            other => other,
        };
        return format!("layers.{i}.{t}");
    }
    name.into()
}
