//! The frozen-weight linear map: gemm on the weight's own layout (or the bf16 kernel on its packed form), input
//! gradient only.

use super::{on_slices, storage_slice};
use crate::matmul::bf16::{self, PackedB, PackedWeight};
use crate::matmul::isa::{self, Isa};
use crate::matmul::{as_f32, mm};
use candle_core::{
    backend::BackendStorage, CpuStorage, DType, Device, Layout, Result, Shape, Storage, Tensor, WithDType,
};
use num_traits::Float;
use std::sync::Arc;

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
    /// The weight in bf16, packed both ways: products then run in bf16 with f32 accumulation.
    packed: Option<Arc<PackedWeight>>,
    /// The instruction-set level those run at (read on the thread that made the op).
    level: Isa,
}

/// `x[rows, in] @ w + b` with `w` read through its layout, or through `packed` (f32 inputs only) in bf16.
fn affine<T: WithDType + Float + 'static>(
    x: &[T],
    w: &Tensor,
    b: Option<&Tensor>,
    packed: Option<(&PackedB, Isa)>,
) -> Result<Vec<T>> {
    let (inp, out) = w.dims2()?;
    let rows = x.len() / inp;
    let (ws, wl) = w.storage_and_layout();
    let Storage::Cpu(ws) = &*ws else {
        candle_core::bail!("fused linear runs on the CPU")
    };
    let stride = wl.stride();
    let wd = &T::cpu_storage_as_slice(ws)?[wl.start_offset()..];
    let mut y = match b {
        Some(b) => on_slices::<T, _>(&[b], |s| s[0].repeat(rows))?,
        None => vec![T::zero(); rows * out],
    };
    match packed {
        Some((p, level)) if T::DTYPE == DType::F32 => {
            let yf = crate::matmul::as_f32_mut(&mut y).expect("f32");
            bf16::gemm_packed_at(level, rows, yf, out, as_f32(x), (inp, 1), p, b.is_some(), true)
        }
        _ => mm(
            rows,
            out,
            inp,
            &mut y,
            x,
            (inp, 1),
            wd,
            (stride[0], stride[1]),
            b.is_some(),
            true,
        ),
    }
    Ok(y)
}

impl candle_core::CustomOp1 for Linear {
    fn name(&self) -> &'static str {
        "fused-frozen-linear"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = match s.dtype() {
            DType::F32 => CpuStorage::F32(affine(
                storage_slice::<f32>((s, l))?,
                &self.w_io,
                self.b.as_ref(),
                self.packed.as_ref().map(|p| (&p.fwd, self.level)),
            )?),
            DType::F64 => CpuStorage::F64(affine(
                storage_slice::<f64>((s, l))?,
                &self.w_io,
                self.b.as_ref(),
                None,
            )?),
            dt => candle_core::bail!("fused linear takes f32 or f64, not {dt:?}"),
        };
        let mut dims = l.dims().to_vec();
        *dims.last_mut().expect("rank >= 1") = self.w_io.dim(1)?;
        Ok((y, dims.into()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let dx = match g.dtype() {
            DType::F32 => {
                let bwd = self.packed.as_ref().map(|p| (&p.bwd, self.level));
                Tensor::from_vec(
                    on_slices::<f32, _>(&[g], |s| affine(s[0], &self.w_oi, None, bwd))??,
                    x.shape(),
                    &Device::Cpu,
                )?
            }
            _ => Tensor::from_vec(
                on_slices::<f64, _>(&[g], |s| affine(s[0], &self.w_oi, None, None))??,
                x.shape(),
                &Device::Cpu,
            )?,
        };
        Ok(Some(dx))
    }
}

/// `x @ w_io + b` over the last dimension of `x: [.., in]`, with `w_io: [in, out]` and `w_oi` its transpose
/// (views of the same frozen weight) and a frozen bias `[out]`; with `packed`, f32 products run in bf16.
pub fn linear(
    x: &Tensor,
    w_io: &Tensor,
    w_oi: &Tensor,
    b: Option<&Tensor>,
    packed: Option<&Arc<PackedWeight>>,
) -> Result<Tensor> {
    let inp = w_io.dim(0)?;
    if x.dim(candle_core::D::Minus1)? != inp {
        candle_core::bail!("linear: input {:?} does not end in {inp}", x.dims());
    }
    x.contiguous()?.apply_op1(Linear {
        w_io: w_io.clone(),
        w_oi: w_oi.clone(),
        b: b.cloned(),
        packed: packed.cloned(),
        level: isa::current(),
    })
}

/// A frozen f32 weight `[out, in]` (any strides) packed for the bf16 kernel.
pub fn pack_bf16(w: &Tensor) -> Result<PackedWeight> {
    let (out, inp) = w.dims2()?;
    let (ws, wl) = w.storage_and_layout();
    let Storage::Cpu(ws) = &*ws else {
        candle_core::bail!("bf16 packing runs on the CPU")
    };
    let stride = wl.stride();
    let data = &f32::cpu_storage_as_slice(ws)?[wl.start_offset()..];
    Ok(PackedWeight::new(out, inp, data, (stride[0], stride[1])))
}
