//! Differentiable building blocks the models call: our fused kernels with hand-written backward passes
//! (`crate::fused`: linear, norms, attention, rope, gated activations, head swaps), candle primitives that record
//! a backward pass (log-softmax, activations), and the masks and rope tables (constants).
//!
//! candle's own fused kernels (`candle_nn::ops::{layer_norm, rms_norm, softmax_last_dim}`, `rope*`) record no
//! backward, so gradients through them silently vanish: they are not used.

use crate::fused;
use candle_core::{DType, Device, Result, Tensor, D};

/// `x @ w^T + b` for a frozen weight `w: [out, in]` (PyTorch `nn.Linear` layout); the backward computes only the
/// input gradient (see `fused::linear`).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    fused::linear(x, &w.t()?, w, b)
}

/// `x @ w + b` for a weight stored as `[in, out]` (GPT-2's `Conv1D`).
pub fn conv1d_linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    fused::linear(x, w, &w.t()?, Some(b))
}

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) * w + b` (frozen `w`, `b`).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    fused::layer_norm(x, w, b, eps)
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x^2) + eps) * scale` (Llama, T5, Gemma with scale = 1 + w).
pub fn rms_norm(x: &Tensor, scale: &Tensor, eps: f64) -> Result<Tensor> {
    fused::rms_norm(x, scale, eps)
}

/// Log-softmax over the last dimension.
pub fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let xs = x.broadcast_sub(&max)?;
    let lse = xs.exp()?.sum_keepdim(D::Minus1)?.log()?;
    xs.broadcast_sub(&lse)
}

/// `x * sigmoid(1.702 x)`, the activation of OpenAI's CLIP.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    let s = (x.affine(-1.702, 0.0)?.exp()? + 1.0)?.recip()?;
    x.mul(&s)
}

/// The activations named in Hugging Face configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// tanh approximation: `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`
    GeluTanh,
    /// exact erf GELU: `gelu`
    Gelu,
    QuickGelu,
    Relu,
    Silu,
}

impl Activation {
    pub fn from_hf(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "gelu" => Self::Gelu,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            other => anyhow::bail!("unsupported activation `{other}`"),
        })
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::GeluTanh => x.gelu(),
            Self::Gelu => x.gelu_erf(),
            Self::QuickGelu => quick_gelu(x),
            Self::Relu => x.relu(),
            Self::Silu => x.silu(),
        }
    }

    /// `act(gate) * up`, the gated MLP of Llama (SiLU), Gemma and T5 v1.1 (tanh GELU); fused where we have a kernel.
    pub fn gated(self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        match self {
            Self::Silu => fused::gated(fused::Gate::Silu, gate, up),
            Self::GeluTanh => fused::gated(fused::Gate::GeluTanh, gate, up),
            _ => self.apply(gate)?.mul(up),
        }
    }
}

/// A large negative number that stands for -inf in additive masks (finite, so fully masked rows stay finite).
pub const MASKED: f64 = -1e9;

/// Additive causal mask `[s, s]`: 0 where key <= query (and within `window` if given), MASKED elsewhere.
pub fn causal_mask(s: usize, window: Option<usize>, dtype: DType, dev: &Device) -> Result<Tensor> {
    causal_mask_after(s, 0, window, dtype, dev)
}

/// Absolute positions of `s` new tokens after `past` cached ones: consecutive, or per row when `packed`.
pub fn token_positions(s: usize, past: usize, packed: Option<&crate::Packed>) -> Vec<usize> {
    match packed {
        None => (past..past + s).collect(),
        Some(k) => k.positions(past),
    }
}

/// The additive attention mask `[s, past + s]` of `s` new tokens: causal, or per row when `packed`.
pub fn attention_mask(s: usize, past: usize, packed: Option<&crate::Packed>, window: Option<usize>, dtype: DType, dev: &Device) -> Result<Tensor> {
    match packed {
        None => causal_mask_after(s, past, window, dtype, dev),
        Some(k) => packed_mask(k, past, window, dtype, dev),
    }
}

/// Causal mask `[s, past + s]` for `s` queries at positions `past..past + s` over keys at `0..past + s`.
pub fn causal_mask_after(s: usize, past: usize, window: Option<usize>, dtype: DType, dev: &Device) -> Result<Tensor> {
    let keys = past + s;
    let mut m = vec![0f32; s * keys];
    for i in 0..s {
        let q = past + i;
        for k in 0..keys {
            let future = k > q;
            let too_far = window.is_some_and(|w| q >= w && k <= q - w);
            if future || too_far {
                m[i * keys + k] = MASKED as f32;
            }
        }
    }
    Tensor::from_vec(m, (s, keys), dev)?.to_dtype(dtype)
}

/// Mask `[T, past + T]` for rows packed into one sequence: every token sees the `past` cached positions and the
/// earlier tokens of its own row (within `window` of its absolute position, if given).
pub fn packed_mask(packed: &crate::Packed, past: usize, window: Option<usize>, dtype: DType, dev: &Device) -> Result<Tensor> {
    let t = packed.row.len();
    let keys = past + t;
    let mut m = vec![MASKED as f32; t * keys];
    for i in 0..t {
        let q = past + packed.pos[i];
        let visible = |k: usize| window.is_none_or(|w| q < w || k > q - w);
        for k in 0..past {
            if visible(k) {
                m[i * keys + k] = 0.0;
            }
        }
        for j in 0..t {
            let k = past + packed.pos[j];
            if packed.row[j] == packed.row[i] && k <= q && visible(k) {
                m[i * keys + past + j] = 0.0;
            }
        }
    }
    Tensor::from_vec(m, (t, keys), dev)?.to_dtype(dtype)
}

/// Additive key-padding mask `[b, 1, 1, s]` from per-row lengths (right padding).
pub fn key_padding_mask(lengths: &[usize], s: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; lengths.len() * s];
    for (i, &len) in lengths.iter().enumerate() {
        for k in len..s {
            m[i * s + k] = MASKED as f32;
        }
    }
    Tensor::from_vec(m, (lengths.len(), 1, 1, s), dev)?.to_dtype(dtype)
}

/// Scaled dot-product attention. `q: [b, h, sq, d]`, `k, v: [b, kvh, sk, d]` (grouped-query heads: each
/// key/value head serves `h / kvh` query heads); `mask` is additive, constant, and broadcast to `[b, h, sq, sk]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    fused::attention(q, k, v, mask, scale)
}

/// `[b, s, h*d] -> [b, h, s, d]`
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, s, hd) = x.dims3()?;
    fused::swap_middle(x, (b, s, heads, hd / heads), (b, heads, s, hd / heads).into())
}

/// `[b, h, s, d] -> [b, s, h*d]`
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    fused::swap_middle(x, (b, h, s, d), (b, s, h * d).into())
}

/// Rotary position embedding tables `(cos, sin)`, each `[positions, d]`, in the half-split layout of Hugging Face,
/// at arbitrary (e.g. packed or linearly scaled) positions.
pub fn rope_tables_at(pos: &[f64], d: usize, theta: f64, dtype: DType, dev: &Device) -> Result<(Tensor, Tensor)> {
    let (s, half) = (pos.len(), d / 2);
    let mut cos = vec![0f32; s * d];
    let mut sin = vec![0f32; s * d];
    for (p, &x) in pos.iter().enumerate() {
        for i in 0..half {
            let inv_freq = 1.0 / theta.powf(2.0 * i as f64 / d as f64);
            let a = x * inv_freq;
            for j in [i, i + half] {
                cos[p * d + j] = a.cos() as f32;
                sin[p * d + j] = a.sin() as f32;
            }
        }
    }
    Ok((
        Tensor::from_vec(cos, (s, d), dev)?.to_dtype(dtype)?,
        Tensor::from_vec(sin, (s, d), dev)?.to_dtype(dtype)?,
    ))
}

/// Applies rotary embeddings to `x: [b, h, s, d]`: `x * cos + rotate_half(x) * sin` (tables `[s, d]`).
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    fused::rope(x, cos, sin)
}

/// Rows `idx` of a 2-D table `[n, d] -> [idx.len(), d]`.
pub fn rows_at(table: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let idx: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    table.index_select(&Tensor::new(idx.as_slice(), table.device())?, 0)
}

/// Rows `positions[i]` of `x[i]`: `[b, s, d] -> [b, d]`.
pub fn gather_rows(x: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let rows = positions
        .iter()
        .enumerate()
        .map(|(i, &p)| x.get(i)?.get(p))
        .collect::<Result<Vec<_>>>()?;
    Tensor::stack(&rows, 0)
}

/// Prepends cached keys or values of earlier positions (batch 1, shared by every row) to `x: [b, h, s, d]`.
pub fn after_past(past: Option<&Tensor>, x: &Tensor) -> Result<Tensor> {
    match past {
        None => Ok(x.clone()),
        Some(p) => {
            let (b, h, _, d) = x.dims4()?;
            let p = p.broadcast_as((b, h, p.dim(2)?, d))?;
            Tensor::cat(&[&p, x], 2)?.contiguous()
        }
    }
}
