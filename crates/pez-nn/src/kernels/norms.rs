//! RMSNorm and LayerNorm over the last dimension with frozen weights (on CUDA tensors: src/cuda/norms.cu).

use super::{apply, c, dot, launch, Kernel};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use num_traits::Float;

// ---------------------------------------------------------------------------------------------------------------
// RMSNorm: y = x * inv * w, inv = (mean(x^2) + eps)^-1/2.
// dx = inv * g * w - x * inv^3 * sum(g * w * x) / d.

struct RmsNorm {
    w: Tensor,
    d: usize,
    eps: f64,
}

struct RmsNormFwd<'a>(&'a RmsNorm);
struct RmsNormBwd<'a>(&'a RmsNorm);

fn inv_rms<T: Float>(x: &[T], eps: f64) -> T {
    (dot(x, x) / c(x.len() as f64) + c(eps)).sqrt().recip()
}

impl Kernel for RmsNormFwd<'_> {
    fn width(&self) -> usize {
        self.0.d
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let d = self.0.d;
        let (x, w) = (&ins[0][r * d..(r + 1) * d], ins[1]);
        let inv = inv_rms(x, self.0.eps);
        for i in 0..d {
            out[i] = x[i] * inv * w[i];
        }
    }
}

impl Kernel for RmsNormBwd<'_> {
    fn width(&self) -> usize {
        self.0.d
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let d = self.0.d;
        let (x, w, g) = (&ins[0][r * d..(r + 1) * d], ins[1], &ins[2][r * d..(r + 1) * d]);
        let inv = inv_rms(x, self.0.eps);
        let gwx = (0..d).fold(T::zero(), |s, i| s + g[i] * w[i] * x[i]);
        let k = inv * inv * inv * gwx / c(d as f64);
        for i in 0..d {
            out[i] = inv * g[i] * w[i] - x[i] * k;
        }
    }
}

impl candle_core::CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((
            launch(&RmsNormFwd(self), &[(s, l)], &[&self.w], l.shape().elem_count())?,
            l.shape().clone(),
        ))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let y = crate::cuda::on_cuda(&[&self.w], |w| {
            crate::cuda::norm_rows("rms_norm_fwd", (s, l), w[0], w[0], self.eps)
        })?;
        Ok((y, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let dx = crate::cuda::on_cuda(&[x, &self.w, g], |t| {
                crate::cuda::norm_rows("rms_norm_bwd", t[0], t[1], t[2], self.eps)
            })?;
            return Ok(Some(crate::cuda::tensor(dx, x.shape())));
        }
        Ok(Some(apply(&RmsNormBwd(self), &[x, &self.w, g], x.shape())?))
    }
}

/// RMSNorm over the last dimension with a frozen scale `w: [d]`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    x.contiguous()?.apply_op1(RmsNorm {
        w: w.contiguous()?,
        d,
        eps,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// LayerNorm: xh = (x - mean) * inv, y = xh * w + b.  dx = inv * (gw - mean(gw) - xh * mean(gw * xh)), gw = g * w.

struct LayerNorm {
    w: Tensor,
    b: Tensor,
    d: usize,
    eps: f64,
}

struct LayerNormFwd<'a>(&'a LayerNorm);
struct LayerNormBwd<'a>(&'a LayerNorm);

fn mean_inv<T: Float>(x: &[T], eps: f64) -> (T, T) {
    let n: T = c(x.len() as f64);
    let mean = x.iter().fold(T::zero(), |s, &v| s + v) / n;
    let var = x.iter().fold(T::zero(), |s, &v| s + (v - mean) * (v - mean)) / n;
    (mean, (var + c(eps)).sqrt().recip())
}

impl Kernel for LayerNormFwd<'_> {
    fn width(&self) -> usize {
        self.0.d
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let d = self.0.d;
        let (x, w, b) = (&ins[0][r * d..(r + 1) * d], ins[1], ins[2]);
        let (mean, inv) = mean_inv(x, self.0.eps);
        for i in 0..d {
            out[i] = (x[i] - mean) * inv * w[i] + b[i];
        }
    }
}

impl Kernel for LayerNormBwd<'_> {
    fn width(&self) -> usize {
        self.0.d
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let d = self.0.d;
        let (x, w, g) = (&ins[0][r * d..(r + 1) * d], ins[1], &ins[2][r * d..(r + 1) * d]);
        let (mean, inv) = mean_inv(x, self.0.eps);
        let n: T = c(d as f64);
        let (mut gw_mean, mut gwxh_mean) = (T::zero(), T::zero());
        for i in 0..d {
            let gw = g[i] * w[i];
            gw_mean = gw_mean + gw;
            gwxh_mean = gwxh_mean + gw * (x[i] - mean) * inv;
        }
        let (gw_mean, gwxh_mean) = (gw_mean / n, gwxh_mean / n);
        for i in 0..d {
            out[i] = inv * (g[i] * w[i] - gw_mean - (x[i] - mean) * inv * gwxh_mean);
        }
    }
}

impl candle_core::CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((
            launch(
                &LayerNormFwd(self),
                &[(s, l)],
                &[&self.w, &self.b],
                l.shape().elem_count(),
            )?,
            l.shape().clone(),
        ))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let y = crate::cuda::on_cuda(&[&self.w, &self.b], |t| {
            crate::cuda::norm_rows("layer_norm_fwd", (s, l), t[0], t[1], self.eps)
        })?;
        Ok((y, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let dx = crate::cuda::on_cuda(&[x, &self.w, g], |t| {
                crate::cuda::norm_rows("layer_norm_bwd", t[0], t[1], t[2], self.eps)
            })?;
            return Ok(Some(crate::cuda::tensor(dx, x.shape())));
        }
        Ok(Some(apply(&LayerNormBwd(self), &[x, &self.w, g], x.shape())?))
    }
}

/// LayerNorm over the last dimension with frozen weight and bias `[d]`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    x.contiguous()?.apply_op1(LayerNorm {
        w: w.contiguous()?,
        b: b.contiguous()?,
        d,
        eps,
    })
}
