//! Differentiable ops the models call. Each runs as a fused kernel (one graph node, input-only backward) where
//! `backend` says so, else as the same maths composed from candle primitives. Log-softmax and the plain
//! activations are candle primitives everywhere (they record their own backward).
//!
//! candle's own fused kernels (`candle_nn::ops::{layer_norm, rms_norm, softmax_last_dim}`, `rope*`) record no
//! backward, so gradients through them silently vanish: they are not used.

use crate::backend::{gpu_kernels_for, kernels_for};
use crate::matmul::bf16::PackedWeight;
use crate::matmul::Precision;
use crate::{composed, kernels};
use candle_core::{DType, Device, Result, Tensor, D};
use std::sync::Arc;

/// `x @ w^T + b` for a frozen weight `w: [out, in]` (PyTorch `nn.Linear` layout; a transposed view of a stored
/// `[in, out]` matrix works as well). The backward computes only the input gradient.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    linear_packed(x, w, b, None)
}

/// `linear` with the weight's bf16 form: the kernel's products then run in bf16 (f32 accumulation).
pub fn linear_packed(x: &Tensor, w: &Tensor, b: Option<&Tensor>, packed: Option<&Arc<PackedWeight>>) -> Result<Tensor> {
    let w_io = w.t()?;
    if kernels_for(x) {
        kernels::linear(x, &w_io, w, b, packed)
    } else {
        composed::linear(x, &w_io, b)
    }
}

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) * w + b` (frozen `w`, `b`).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if kernels_for(x) || gpu_kernels_for(x) {
        kernels::layer_norm(x, w, b, eps)
    } else {
        composed::layer_norm(x, w, b, eps)
    }
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x^2) + eps) * scale` (Llama, T5, Gemma with scale = 1 + w).
pub fn rms_norm(x: &Tensor, scale: &Tensor, eps: f64) -> Result<Tensor> {
    if kernels_for(x) || gpu_kernels_for(x) {
        kernels::rms_norm(x, scale, eps)
    } else {
        composed::rms_norm(x, scale, eps)
    }
}

/// Scaled dot-product attention. `q: [b, h, sq, d]`, `k, v: [b, kvh, sk, d]` (grouped-query heads: each
/// key/value head serves `h / kvh` query heads); `mask` is additive, constant, and broadcast to `[b, h, sq, sk]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    attention_at(q, k, v, mask, scale, Precision::F32)
}

/// `attention` with its products at `precision` (the kernel's; the composed maths multiplies in the tensors' dtype).
pub fn attention_at(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    precision: Precision,
) -> Result<Tensor> {
    if kernels_for(q) {
        kernels::attention(q, k, v, mask, scale, precision)
    } else if gpu_kernels_for(q) {
        // The products are the GPU's matrix library's; what lies between them is one fused op each way.
        composed::attention_with(q, k, v, |z| kernels::masked_softmax(z, mask, scale))
    } else {
        composed::attention(q, k, v, mask, scale)
    }
}

/// `[b, s, h*d] -> [b, h, s, d]`
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, s, hd) = x.dims3()?;
    swap_middle(x, (b, s, heads, hd / heads), (b, heads, s, hd / heads))
}

/// `[b, h, s, d] -> [b, s, h*d]`
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    swap_middle(x, (b, h, s, d), (b, s, h * d))
}

fn swap_middle(x: &Tensor, dims: (usize, usize, usize, usize), out: impl Into<candle_core::Shape>) -> Result<Tensor> {
    if kernels_for(x) {
        kernels::swap_middle(x, dims, out.into())
    } else {
        composed::swap_middle(x, dims, out.into())
    }
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
    if kernels_for(x) || gpu_kernels_for(x) {
        kernels::rope(x, cos, sin)
    } else {
        composed::rope(x, cos, sin)
    }
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
        let fused = match self {
            Self::Silu => Some(kernels::Gate::Silu),
            Self::GeluTanh => Some(kernels::Gate::GeluTanh),
            _ => None,
        };
        match fused {
            Some(g) if kernels_for(gate) || gpu_kernels_for(gate) => kernels::gated(g, gate, up),
            _ => self.apply(gate)?.mul(up),
        }
    }
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
