//! Weighted layers shared by the architectures: a linear map and a LayerNorm, loaded by tensor-name prefix.

use crate::ops::{layer_norm, linear};
use crate::weights::Weights;
use anyhow::Result;
use candle_core::Tensor;

/// `x @ w^T + b` with `w: [out, in]` (PyTorch `nn.Linear`).
pub struct Linear {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl Linear {
    /// `{p}.weight` and `{p}.bias`, both required.
    pub fn load(w: &Weights, p: &str) -> Result<Self> {
        Ok(Self { w: w.get(&format!("{p}.weight"))?, b: Some(w.get(&format!("{p}.bias"))?) })
    }

    /// `{p}.weight` and, if the checkpoint has one, `{p}.bias` (OPT's `enable_bias`).
    pub fn load_optional_bias(w: &Weights, p: &str) -> Result<Self> {
        Ok(Self { w: w.get(&format!("{p}.weight"))?, b: w.get_opt(&format!("{p}.bias")) })
    }

    pub fn fwd(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        linear(x, &self.w, self.b.as_ref())
    }
}

/// LayerNorm over the last dimension with weight, bias and epsilon.
pub struct LayerNorm {
    pub w: Tensor,
    pub b: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Weights, p: &str, eps: f64) -> Result<Self> {
        Ok(Self { w: w.get(&format!("{p}.weight"))?, b: w.get(&format!("{p}.bias"))?, eps })
    }

    pub fn fwd(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        layer_norm(x, &self.w, &self.b, self.eps)
    }
}
