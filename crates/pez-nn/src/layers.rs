//! Layers with frozen weights, loaded from a `Weights` view: linear maps, norms and the two MLP shapes.

use crate::matmul::bf16::PackedWeight;
use crate::matmul::Precision;
use crate::ops::{self, Activation};
use crate::weights::Weights;
use anyhow::Result;
use candle_core::{DType, Tensor};
use std::sync::Arc;

/// `x @ w^T + b` with `w: [out, in]` (PyTorch `nn.Linear`); the backward computes only the input gradient.
pub struct Linear {
    /// `[out, in]`, possibly a transposed view of a stored `[in, out]` matrix (GPT-2's `Conv1D`).
    pub w: Tensor,
    pub b: Option<Tensor>,
    /// `w` in bf16, packed for the CPU kernel, when the products run in bf16.
    packed: Option<Arc<PackedWeight>>,
}

impl Linear {
    /// `w: [out, in]`. With `Precision::Bf16` (and f32 weights on the CPU) its bf16 form is packed now, once.
    pub fn new(w: Tensor, b: Option<Tensor>, precision: Precision) -> Result<Self> {
        let packable = precision == Precision::Bf16 && w.device().is_cpu() && w.dtype() == DType::F32;
        let packed = if packable {
            Some(Arc::new(crate::kernels::pack_bf16(&w)?))
        } else {
            None
        };
        Ok(Self { w, b, packed })
    }

    /// A weight stored `[in, out]` (GPT-2's `Conv1D`).
    pub fn from_in_out(w_io: Tensor, b: Option<Tensor>, precision: Precision) -> Result<Self> {
        Self::new(w_io.t()?, b, precision)
    }

    /// `weight` and, if the checkpoint has one, `bias`, at the checkpoint's precision.
    pub fn load(w: &Weights) -> Result<Self> {
        Self::new(w.get("weight")?, w.get_opt("bias"), w.precision())
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ops::linear_packed(x, &self.w, self.b.as_ref(), self.packed.as_ref())
    }
}

/// LayerNorm over the last dimension with weight, bias and epsilon.
pub struct LayerNorm {
    pub w: Tensor,
    pub b: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Weights, eps: f64) -> Result<Self> {
        Ok(Self {
            w: w.get("weight")?,
            b: w.get("bias")?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ops::layer_norm(x, &self.w, &self.b, self.eps)
    }
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x^2) + eps) * scale`.
pub struct RmsNorm {
    pub scale: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(scale: Tensor, eps: f64) -> Self {
        Self { scale, eps }
    }

    /// The scale stored as `weight`.
    pub fn load(w: &Weights, eps: f64) -> Result<Self> {
        Ok(Self {
            scale: w.get("weight")?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ops::rms_norm(x, &self.scale, self.eps)
    }
}

/// The position-wise MLP: `down(act(up(x)))`, or with a gate `down(act(gate(x)) * up(x))` (Llama, Gemma, T5 v1.1).
pub struct Mlp {
    pub gate: Option<Linear>,
    pub up: Linear,
    pub down: Linear,
    pub act: Activation,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let up = self.up.forward(x)?;
        let h = match &self.gate {
            Some(g) => self.act.gated(&g.forward(x)?, &up)?,
            None => self.act.apply(&up)?,
        };
        self.down.forward(&h)
    }

    /// The weight matrices, for counting parameters.
    pub fn weights(&self) -> impl Iterator<Item = &Tensor> {
        self.gate.iter().chain([&self.up, &self.down]).map(|l| &l.w)
    }
}
