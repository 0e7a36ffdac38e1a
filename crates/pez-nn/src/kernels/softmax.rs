//! Scaled, masked softmax over the last dimension: `p = softmax(scale * z + m)`, the middle of attention where the
//! two products are the GPU's matrix library's (`ops::attention_at` with pez's CUDA kernels). Its backward is
//! `dz = scale * p * (g - rowsum(g * p))`, from the kept output, one node for what composed takes seven. The CPU
//! version is the reference for the CUDA one (src/cuda/softmax.cu); CPU attention runs the whole fused
//! `attention` kernel instead.

use super::{apply, c, dot, launch, Kernel};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use num_traits::Float;

struct MaskedSoftmax {
    /// `[mask_rows, sk]` in z's dtype: row `r` of z reads mask row `r % mask_rows` (all zeros without a mask).
    mask: Tensor,
    mask_rows: usize,
    sk: usize,
    scale: f64,
}

struct Fwd<'a>(&'a MaskedSoftmax);
struct Bwd<'a>(&'a MaskedSoftmax);

impl Kernel for Fwd<'_> {
    fn width(&self) -> usize {
        self.0.sk
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let (sk, m) = (self.0.sk, (r % self.0.mask_rows) * self.0.sk);
        let (z, mask) = (&ins[0][r * sk..(r + 1) * sk], &ins[1][m..m + sk]);
        let scale: T = c(self.0.scale);
        let mut max = T::neg_infinity();
        for i in 0..sk {
            out[i] = z[i] * scale + mask[i];
            max = max.max(out[i]);
        }
        let mut sum = T::zero();
        for o in out.iter_mut() {
            *o = (*o - max).exp();
            sum = sum + *o;
        }
        out.iter_mut().for_each(|o| *o = *o / sum);
    }
}

impl Kernel for Bwd<'_> {
    fn width(&self) -> usize {
        self.0.sk
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let sk = self.0.sk;
        let (p, g) = (&ins[0][r * sk..(r + 1) * sk], &ins[1][r * sk..(r + 1) * sk]);
        let (gp, scale) = (dot(g, p), c::<T>(self.0.scale));
        for i in 0..sk {
            out[i] = scale * p[i] * (g[i] - gp);
        }
    }
}

impl candle_core::CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((
            launch(&Fwd(self), &[(s, l)], &[&self.mask], l.shape().elem_count())?,
            l.shape().clone(),
        ))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let p = crate::cuda::on_cuda(&[&self.mask], |m| {
            crate::cuda::softmax("masked_softmax_fwd", (s, l), m[0], self.mask_rows, self.scale)
        })?;
        Ok((p, l.shape().clone()))
    }
    fn bwd(&self, z: &Tensor, p: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if z.device().is_cuda() {
            let dz = crate::cuda::on_cuda(&[p, g], |t| {
                crate::cuda::softmax("masked_softmax_bwd", t[0], t[1], self.mask_rows, self.scale)
            })?;
            return Ok(Some(crate::cuda::tensor(dz, z.shape())));
        }
        Ok(Some(apply(&Bwd(self), &[p, g], z.shape())?))
    }
}

/// `softmax(scale * z + mask)` over the last dimension of `z: [b, h, sq, sk]`; the mask constant, `[sq, sk]` or
/// broadcast to z's shape.
pub fn masked_softmax(z: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (b, h, sq, sk) = z.dims4()?;
    let mask = match mask {
        Some(m) if m.track_op() => candle_core::bail!("masked_softmax: the mask must be constant"),
        Some(m) if m.dims() == [sq, sk] => m.to_dtype(z.dtype())?.contiguous()?,
        Some(m) => m.to_dtype(z.dtype())?.broadcast_as((b, h, sq, sk))?.contiguous()?,
        None => Tensor::zeros((1, sk), z.dtype(), z.device())?,
    };
    let mask_rows = mask.elem_count() / sk;
    z.contiguous()?.apply_op1(MaskedSoftmax {
        mask,
        mask_rows,
        sk,
        scale,
    })
}
