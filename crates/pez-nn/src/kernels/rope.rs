//! Rotary position embeddings (half-split layout); on CUDA tensors src/cuda/elementwise.cu.

use super::{apply, launch, Kernel};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use num_traits::Float;

// ---------------------------------------------------------------------------------------------------------------
// Rotary embedding, half-split layout: y = x * cos + rot(x) * sin, rot(x) = [-x2, x1].
// dx = g * cos + rot^T(g * sin), rot^T(u) = [u2, -u1].

struct Rope {
    cos: Tensor,
    sin: Tensor,
    positions: usize,
    d: usize,
}

struct RopeFwd<'a>(&'a Rope);
struct RopeBwd<'a>(&'a Rope);

impl Kernel for RopeFwd<'_> {
    fn width(&self) -> usize {
        self.0.d
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let (d, half) = (self.0.d, self.0.d / 2);
        let p = (r % self.0.positions) * d;
        let (x, cos, sin) = (&ins[0][r * d..(r + 1) * d], &ins[1][p..p + d], &ins[2][p..p + d]);
        for i in 0..half {
            out[i] = x[i] * cos[i] - x[i + half] * sin[i];
            out[i + half] = x[i + half] * cos[i + half] + x[i] * sin[i + half];
        }
    }
}

impl Kernel for RopeBwd<'_> {
    fn width(&self) -> usize {
        self.0.d
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let (d, half) = (self.0.d, self.0.d / 2);
        let p = (r % self.0.positions) * d;
        let (g, cos, sin) = (&ins[0][r * d..(r + 1) * d], &ins[1][p..p + d], &ins[2][p..p + d]);
        for i in 0..half {
            out[i] = g[i] * cos[i] + g[i + half] * sin[i + half];
            out[i + half] = g[i + half] * cos[i + half] - g[i] * sin[i];
        }
    }
}

impl candle_core::CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((
            launch(
                &RopeFwd(self),
                &[(s, l)],
                &[&self.cos, &self.sin],
                l.shape().elem_count(),
            )?,
            l.shape().clone(),
        ))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let y = crate::cuda::on_cuda(&[&self.cos, &self.sin], |t| {
            crate::cuda::rope("rope_fwd", (s, l), t[0], t[1])
        })?;
        Ok((y, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let dx = crate::cuda::on_cuda(&[g, &self.cos, &self.sin], |t| {
                crate::cuda::rope("rope_bwd", t[0], t[1], t[2])
            })?;
            return Ok(Some(crate::cuda::tensor(dx, x.shape())));
        }
        Ok(Some(apply(&RopeBwd(self), &[g, &self.cos, &self.sin], x.shape())?))
    }
}

/// Rotary embeddings on `x: [.., s, d]` with tables `cos, sin: [s, d]` (constant).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (positions, d) = cos.dims2()?;
    if x.dim(candle_core::D::Minus2)? != positions || x.dim(candle_core::D::Minus1)? != d {
        candle_core::bail!("rope: x {:?} does not match tables {:?}", x.dims(), cos.dims());
    }
    // The tables in x's dtype (the CPU kernel reads both as one type; so does the CUDA one).
    x.contiguous()?.apply_op1(Rope {
        cos: cos.to_dtype(x.dtype())?.contiguous()?,
        sin: sin.to_dtype(x.dtype())?.contiguous()?,
        positions,
        d,
    })
}
