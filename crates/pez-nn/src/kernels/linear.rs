//! The frozen-weight linear map: gemm on the weight's own layout, input gradient only.

use super::{on_slices, storage_slice};
use crate::matmul::mm;
use candle_core::{backend::BackendStorage, CpuStorage, DType, Device, Layout, Result, Shape, Storage, Tensor, WithDType};
use num_traits::Float;

// ---------------------------------------------------------------------------------------------------------------
// Linear map with a frozen weight: y = x W + b over the last dimension, dx = dy W^T. candle's matmul backward
// also computes the weight's gradient (and the reshapes and bias add around it are nodes of their own); here the
// product runs on the storages directly and the backward is the input gradient only.

struct Linear {
    /// `[in, out]`, any strides (a transposed view of PyTorch's `[out, in]` is fine).
    w_io: Tensor,
    /// Its transpose `[out, in]`, for the backward.
    w_oi: Tensor,
    b: Option<Tensor>,
}

/// `x[rows, in] @ w + b` with `w` read through its layout.
fn affine<T: WithDType + Float + 'static>(x: &[T], w: &Tensor, b: Option<&Tensor>) -> Result<Vec<T>> {
    let (inp, out) = w.dims2()?;
    let rows = x.len() / inp;
    let (ws, wl) = w.storage_and_layout();
    let Storage::Cpu(ws) = &*ws else { candle_core::bail!("fused linear runs on the CPU") };
    let stride = wl.stride();
    let wd = &T::cpu_storage_as_slice(ws)?[wl.start_offset()..];
    let mut y = match b {
        Some(b) => on_slices::<T, _>(&[b], |s| s[0].repeat(rows))?,
        None => vec![T::zero(); rows * out],
    };
    mm(rows, out, inp, &mut y, x, (inp, 1), wd, (stride[0], stride[1]), b.is_some(), true);
    Ok(y)
}

impl candle_core::CustomOp1 for Linear {
    fn name(&self) -> &'static str {
        "fused-frozen-linear"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = match s.dtype() {
            DType::F32 => CpuStorage::F32(affine(storage_slice::<f32>((s, l))?, &self.w_io, self.b.as_ref())?),
            DType::F64 => CpuStorage::F64(affine(storage_slice::<f64>((s, l))?, &self.w_io, self.b.as_ref())?),
            dt => candle_core::bail!("fused linear takes f32 or f64, not {dt:?}"),
        };
        let mut dims = l.dims().to_vec();
        *dims.last_mut().expect("rank >= 1") = self.w_io.dim(1)?;
        Ok((y, dims.into()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let dx = match g.dtype() {
            DType::F32 => Tensor::from_vec(on_slices::<f32, _>(&[g], |s| affine(s[0], &self.w_oi, None))??, x.shape(), &Device::Cpu)?,
            _ => Tensor::from_vec(on_slices::<f64, _>(&[g], |s| affine(s[0], &self.w_oi, None))??, x.shape(), &Device::Cpu)?,
        };
        Ok(Some(dx))
    }
}

/// `x @ w_io + b` over the last dimension of `x: [.., in]`, with `w_io: [in, out]` and `w_oi` its transpose
/// (views of the same frozen weight) and a frozen bias `[out]`.
pub fn linear(x: &Tensor, w_io: &Tensor, w_oi: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let inp = w_io.dim(0)?;
    if x.dim(candle_core::D::Minus1)? != inp {
        candle_core::bail!("linear: input {:?} does not end in {inp}", x.dims());
    }
    x.contiguous()?.apply_op1(Linear { w_io: w_io.clone(), w_oi: w_oi.clone(), b: b.cloned() })
}
