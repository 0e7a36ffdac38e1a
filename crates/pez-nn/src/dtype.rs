//! The dtype a model computes in (`--dtype`): f32, bf16 (f32 tensors, bf16 products with f32 accumulation on the
//! CPU; see `matmul`), or `auto`: bf16 where the CPU multiplies bf16 natively (AVX512-BF16 and up), else f32.

use crate::matmul::isa::{self, Isa};
use candle_core::DType;
use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Dtype {
    /// What runs and configs written before the choice existed used.
    #[default]
    F32,
    Bf16,
    Auto,
}

impl Dtype {
    /// `Auto` made definite for this machine: bf16 where products run on bf16 units (a path checked on a CPU that
    /// has them), else f32.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto if isa::chosen() >= Isa::Avx512Bf16 => Self::Bf16,
            Self::Auto => Self::F32,
            d => d,
        }
    }

    /// `Auto` made definite for `device`: on the CPU as `resolve`; on a GPU f32, until a GPU run shows bf16 keeps
    /// f32's results there (NOTES, issue 24).
    pub fn resolve_on(self, device: &candle_core::Device) -> Self {
        match self {
            Self::Auto if !device.is_cpu() => Self::F32,
            d => d.resolve(),
        }
    }

    /// The candle dtype to load a model with (`Auto` resolved first).
    pub fn candle(self) -> DType {
        match self.resolve() {
            Self::Bf16 => DType::BF16,
            _ => DType::F32,
        }
    }
}

/// A model's output (logits, features) as the losses and scores read it: bf16 and f16 widened to f32 (as under
/// PyTorch's autocast, where losses run in f32), f32 and f64 as they are. The backward narrows the gradient again.
pub fn widened(t: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    match t.dtype() {
        DType::BF16 | DType::F16 => t.to_dtype(DType::F32),
        _ => Ok(t.clone()),
    }
}
