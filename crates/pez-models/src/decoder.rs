//! What the four causal decoders (GPT-2, OPT, Llama, Gemma 3) share: one forward pass after a cached prefix
//! (`Pass`: positions, masks and rotary tables of the new tokens, and the loop over the layers that extends the
//! cache) and self-attention that continues cached keys and values (`SelfAttention`). Each decoder writes only
//! its own layer.

use crate::KvCache;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use pez_nn::matmul::Precision;
use pez_nn::ops::{self, after_past, attention_at, merge_heads, split_heads};
use pez_nn::{masks, Activation, Linear, Mlp, Packed, RmsNorm, Weights};

/// One layer's cached keys and values (none for an empty cache).
pub type LayerPast<'a> = (Option<&'a Tensor>, Option<&'a Tensor>);

/// A layer's output: hidden states, and its keys and values (cached ones first) for the next pass.
pub type LayerOut = (Tensor, (Tensor, Tensor));

/// `s` new tokens after `past` cached positions, in one row or several packed rows (`Packed`).
pub struct Pass<'a> {
    past: Option<&'a KvCache>,
    packed: Option<&'a Packed>,
    /// Absolute positions of the new tokens.
    pub positions: Vec<usize>,
    dtype: DType,
    device: Device,
}

impl<'a> Pass<'a> {
    /// For `embeds: [b, s, d]` (or `[1, T, d]` with `packed`).
    pub fn new(embeds: &Tensor, past: Option<&'a KvCache>, packed: Option<&'a Packed>) -> Result<Self> {
        let (_, s, _) = embeds.dims3()?;
        let positions = masks::token_positions(s, KvCache::len_of(past), packed);
        Ok(Self {
            past,
            packed,
            positions,
            dtype: embeds.dtype(),
            device: embeds.device().clone(),
        })
    }

    fn past_len(&self) -> usize {
        KvCache::len_of(self.past)
    }

    /// One past the last position any token reads: what a learned position table must hold.
    pub fn end(&self) -> usize {
        self.positions.iter().max().map_or(self.past_len(), |m| m + 1)
    }

    /// The additive mask `[s, past + s]`: causal, per row when packed, within `window` positions if given.
    pub fn mask(&self, window: Option<usize>) -> Result<Tensor> {
        Ok(masks::attention_mask(
            self.positions.len(),
            self.past_len(),
            self.packed,
            window,
            self.dtype,
            &self.device,
        )?)
    }

    /// Rotary tables at the tokens' positions divided by `factor` (linear rope scaling; 1 for none).
    pub fn rope(&self, head_dim: usize, theta: f64, factor: f64) -> Result<Rope> {
        let pos: Vec<f64> = self.positions.iter().map(|&p| p as f64 / factor).collect();
        let (cos, sin) = ops::rope_tables_at(&pos, head_dim, theta, self.dtype, &self.device)?;
        Ok(Rope { cos, sin })
    }

    /// Runs `layer(l, i, h, past)` over the layers in order, each continuing its own cached keys and values;
    /// returns the last hidden states and the cache extended by this pass.
    pub fn run<L>(
        &self,
        embeds: Tensor,
        layers: &[L],
        layer: impl Fn(&L, usize, &Tensor, LayerPast) -> Result<LayerOut>,
    ) -> Result<(Tensor, KvCache)> {
        let mut h = embeds;
        let mut cache = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            let (next, kv) = layer(l, i, &h, KvCache::layer(self.past, i))?;
            h = next;
            cache.push(kv);
        }
        Ok((
            h,
            KvCache {
                len: self.past_len() + self.positions.len(),
                layers: cache,
            },
        ))
    }
}

/// Rotary position tables `[s, head_dim]` of one pass.
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// `x * cos + rotate_half(x) * sin` for `x: [b, h, s, head_dim]`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::apply_rope(x, &self.cos, &self.sin)?)
    }
}

/// Multi-head self-attention with grouped key/value heads, optional per-head RMSNorm of queries and keys
/// (Gemma 3) and rotary positions, continuing a layer's cached keys and values.
pub struct SelfAttention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub heads: usize,
    pub kv_heads: usize,
    pub scale: f64,
    pub qk_norm: Option<(RmsNorm, RmsNorm)>,
    /// Of the score and mixing products.
    pub precision: Precision,
}

impl SelfAttention {
    /// `{q,k,v,o}_proj` under `w` (the Hugging Face names of Llama and Gemma), scores scaled by `scale`.
    pub fn load(w: &Weights, heads: usize, kv_heads: usize, scale: f64) -> Result<Self> {
        let l = |n: &str| Linear::load(&w.pp(n));
        Ok(Self {
            q: l("q_proj")?,
            k: l("k_proj")?,
            v: l("v_proj")?,
            o: l("o_proj")?,
            heads,
            kv_heads,
            scale,
            qk_norm: None,
            precision: w.precision(),
        })
    }

    /// `x: [b, s, d]` -> the attention output `[b, s, d]` and this layer's keys and values after `past`.
    pub fn forward(&self, x: &Tensor, rope: Option<&Rope>, mask: &Tensor, past: LayerPast) -> Result<LayerOut> {
        let q = split_heads(&self.q.forward(x)?, self.heads)?;
        let k = split_heads(&self.k.forward(x)?, self.kv_heads)?;
        let v = split_heads(&self.v.forward(x)?, self.kv_heads)?;
        let (q, k) = match &self.qk_norm {
            Some((qn, kn)) => (qn.forward(&q)?, kn.forward(&k)?),
            None => (q, k),
        };
        let (q, k) = match rope {
            Some(r) => (r.apply(&q)?, r.apply(&k)?),
            None => (q, k),
        };
        let (k, v) = (after_past(past.0, &k)?, after_past(past.1, &v)?);
        let a = attention_at(&q, &k, &v, Some(mask), self.scale, self.precision)?;
        Ok((self.o.forward(&merge_heads(&a)?)?, (k, v)))
    }

    /// The four weight matrices, for counting parameters.
    pub fn weights(&self) -> impl Iterator<Item = &Tensor> {
        [&self.q, &self.k, &self.v, &self.o].into_iter().map(|l| &l.w)
    }
}

/// The gated MLP `down(act(gate(x)) * up(x))` under `w` (`{gate,up,down}_proj`: Llama and Gemma).
pub fn gated_mlp(w: &Weights, act: Activation) -> Result<Mlp> {
    let l = |n: &str| Linear::load(&w.pp(n));
    Ok(Mlp {
        gate: Some(l("gate_proj")?),
        up: l("up_proj")?,
        down: l("down_proj")?,
        act,
    })
}
