//! Layers with frozen weights, loaded from a `Weights` view: linear maps, norms and the two MLP shapes.

use crate::ops::{self, Activation};
use crate::weights::Weights;
use anyhow::Result;
use candle_core::Tensor;

/// `x @ w^T + b` with `w: [out, in]` (PyTorch `nn.Linear`); the backward computes only the input gradient.
pub struct Linear {
    /// `[out, in]`, possibly a transposed view of a stored `[in, out]` matrix (GPT-2's `Conv1D`).
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl Linear {
    pub fn new(w: Tensor, b: Option<Tensor>) -> Self {
        Self { w, b }
    }

    /// A weight stored `[in, out]` (GPT-2's `Conv1D`).
    pub fn from_in_out(w_io: Tensor, b: Option<Tensor>) -> Result<Self> {
        Ok(Self { w: w_io.t()?, b })
    }

    /// `weight` and, if the checkpoint has one, `bias`.
    pub fn load(w: &Weights) -> Result<Self> {
        Ok(Self { w: w.get("weight")?, b: w.get_opt("bias") })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ops::linear(x, &self.w, self.b.as_ref())
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
        Ok(Self { w: w.get("weight")?, b: w.get("bias")?, eps })
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
        Ok(Self { scale: w.get("weight")?, eps })
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
