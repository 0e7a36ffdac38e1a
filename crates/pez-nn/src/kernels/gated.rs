//! Gated activations: SwiGLU (SiLU) and GeGLU (tanh-GELU); on CUDA tensors src/cuda/elementwise.cu.

use super::{c, launch, on_slices, Kernel};
use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Tensor, WithDType};
use num_traits::Float;
use rayon::prelude::*;

// ---------------------------------------------------------------------------------------------------------------
// Gated activations: y = act(a) * b (SwiGLU with SiLU, GeGLU with tanh-GELU).
// da = g * b * act'(a), db = g * act(a).

/// The activation; its discriminant is the CUDA kernels' `gate` argument (src/cuda/elementwise.cu).
#[derive(Clone, Copy)]
pub enum Gate {
    Silu = 0,
    GeluTanh = 1,
}

/// `(act(a), act'(a))`.
fn act<T: Float>(gate: Gate, a: T) -> (T, T) {
    let one = T::one();
    match gate {
        Gate::Silu => {
            let s = one / (one + (-a).exp());
            (a * s, s * (one + a * (one - s)))
        }
        Gate::GeluTanh => {
            // candle's gelu: 0.5 a (1 + tanh(sqrt(2/pi) a (1 + 0.044715 a^2)))
            let (k, c3) = (c::<T>((2.0 / std::f64::consts::PI).sqrt()), c::<T>(0.044715));
            let half: T = c(0.5);
            // tanh(u) = 1 - 2 / (exp(2u) + 1): one exp instead of libm's slower tanhf (this is the hot loop of
            // Gemma's MLP); exact at the limits (exp overflows to inf -> 1, underflows to 0 -> -1).
            let t = one - c::<T>(2.0) / ((c::<T>(2.0) * k * a * (one + c3 * a * a)).exp() + one);
            (
                half * a * (one + t),
                half * (one + t) + half * a * (one - t * t) * k * (one + c::<T>(3.0) * c3 * a * a),
            )
        }
    }
}

struct Gated {
    gate: Gate,
    n: usize,
}

impl Kernel for Gated {
    fn width(&self) -> usize {
        self.n
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let n = self.n;
        let (a, b) = (&ins[0][r * n..(r + 1) * n], &ins[1][r * n..(r + 1) * n]);
        (0..n).for_each(|i| out[i] = act(self.gate, a[i]).0 * b[i]);
    }
}

impl Gated {
    /// Both input gradients `(da, db)` in one pass over the gate's activation, each its own contiguous tensor.
    fn grads<T: WithDType + Float>(&self, a: &Tensor, b: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = self.n;
        let (da, db) = on_slices::<T, _>(&[a, b, g], |s| {
            let (a, b, g) = (s[0], s[1], s[2]);
            let (mut da, mut db) = (vec![T::zero(); a.len()], vec![T::zero(); a.len()]);
            da.par_chunks_mut(n)
                .zip(db.par_chunks_mut(n))
                .enumerate()
                .for_each(|(r, (da, db))| {
                    for i in 0..n {
                        let j = r * n + i;
                        let (f, df) = act(self.gate, a[j]);
                        da[i] = g[j] * b[j] * df;
                        db[i] = g[j] * f;
                    }
                });
            (da, db)
        })?;
        Ok((
            Tensor::from_vec(da, a.shape(), &Device::Cpu)?,
            Tensor::from_vec(db, a.shape(), &Device::Cpu)?,
        ))
    }
}

impl candle_core::CustomOp2 for Gated {
    fn name(&self) -> &'static str {
        "fused-gated-activation"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((
            launch(self, &[(s1, l1), (s2, l2)], &[], l1.shape().elem_count())?,
            l1.shape().clone(),
        ))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let y = crate::cuda::gated(&[(s1, l1), (s2, l2)], self.gate as i32)?.remove(0);
        Ok((y, l1.shape().clone()))
    }
    fn bwd(&self, a: &Tensor, b: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if a.device().is_cuda() {
            let mut d = crate::cuda::on_cuda(&[a, b, g], |t| crate::cuda::gated(t, self.gate as i32))?;
            let (da, db) = (d.remove(0), d.remove(0));
            return Ok((
                Some(crate::cuda::tensor(da, a.shape())),
                Some(crate::cuda::tensor(db, a.shape())),
            ));
        }
        let (da, db) = match a.dtype() {
            DType::F32 => self.grads::<f32>(a, b, g)?,
            _ => self.grads::<f64>(a, b, g)?,
        };
        Ok((Some(da), Some(db)))
    }
}

/// `act(a) * b` for same-shaped `a` (the gate) and `b`.
pub fn gated(gate: Gate, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        candle_core::bail!("gated: shapes {:?} and {:?} differ", a.dims(), b.dims());
    }
    let n = a.dim(candle_core::D::Minus1)?;
    a.contiguous()?.apply_op2(&b.contiguous()?, Gated { gate, n })
}
