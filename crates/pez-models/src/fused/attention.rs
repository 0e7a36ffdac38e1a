//! Scaled dot-product attention (grouped-query heads), probabilities kept for the backward.

use super::{c, dot, mm, on_slices, storage_slice};
use candle_core::{backend::BackendStorage, CpuStorage, DType, Device, Layout, Result, Shape, Tensor, WithDType};
use num_traits::Float;
use rayon::prelude::*;

// ---------------------------------------------------------------------------------------------------------------
// Attention: O = softmax(scale * Q K^T + M) V, per batch row and key/value head, the query heads of that
// key/value head (grouped-query attention) taken together as one block of rows. The forward keeps the
// probabilities P for the backward:
//   dP = dO V^T,  dS = scale * P * (dP - rowsum(dP * P)),  dQ = dS K,  dK = dS^T Q,  dV = P^T dO.
// Blocks run in parallel, each with single-threaded matrix products (candle's batched matmul parallelises
// inside every small product instead, which costs more than it gains at these sizes).

struct Attention {
    mask: Option<Tensor>,
    mask_rows: usize,
    scale: f64,
    /// `(b, h, kvh, sq, sk, d)`
    dims: (usize, usize, usize, usize, usize, usize),
    probs: std::sync::Mutex<Option<Tensor>>,
}

impl Attention {
    fn forward<T: WithDType + Float + 'static>(&self, q: &[T], k: &[T], v: &[T], mask: &[T]) -> (Vec<T>, Vec<T>) {
        let (b, h, kvh, sq, sk, d) = self.dims;
        let rows = h / kvh * sq;
        let mut out = vec![T::zero(); b * h * sq * d];
        let mut probs = vec![T::zero(); b * h * sq * sk];
        let scale: T = c(self.scale);
        out.par_chunks_mut(rows * d).zip(probs.par_chunks_mut(rows * sk)).enumerate().for_each(|(blk, (o, p))| {
            let (qb, kb) = (&q[blk * rows * d..], &k[blk * sk * d..(blk + 1) * sk * d]);
            mm(rows, sk, d, p, qb, (d, 1), kb, (1, d), false, false);
            for (r, row) in p.chunks_mut(sk).enumerate() {
                let m = if mask.is_empty() { None } else { Some(((blk * rows + r) % self.mask_rows) * sk) };
                let mut max = T::neg_infinity();
                for (j, x) in row.iter_mut().enumerate() {
                    *x = *x * scale + m.map_or(T::zero(), |m| mask[m + j]);
                    max = Float::max(max, *x);
                }
                let mut sum = T::zero();
                for x in row.iter_mut() {
                    *x = (*x - max).exp();
                    sum = sum + *x;
                }
                row.iter_mut().for_each(|x| *x = *x / sum);
            }
            mm(rows, d, sk, o, p, (sk, 1), &v[blk * sk * d..(blk + 1) * sk * d], (d, 1), false, false);
        });
        (out, probs)
    }

    fn backward<T: WithDType + Float + 'static>(&self, q: &[T], k: &[T], v: &[T], p: &[T], g: &[T]) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (b, h, kvh, sq, sk, d) = self.dims;
        let rows = h / kvh * sq;
        let (mut dq, mut dk, mut dv) = (vec![T::zero(); b * h * sq * d], vec![T::zero(); b * kvh * sk * d], vec![T::zero(); b * kvh * sk * d]);
        let scale: T = c(self.scale);
        dq.par_chunks_mut(rows * d).zip(dk.par_chunks_mut(sk * d)).zip(dv.par_chunks_mut(sk * d)).enumerate().for_each(
            |(blk, ((dq, dk), dv))| {
                let (qb, gb) = (&q[blk * rows * d..(blk + 1) * rows * d], &g[blk * rows * d..(blk + 1) * rows * d]);
                let (kb, vb) = (&k[blk * sk * d..(blk + 1) * sk * d], &v[blk * sk * d..(blk + 1) * sk * d]);
                let pb = &p[blk * rows * sk..(blk + 1) * rows * sk];
                let mut ds = vec![T::zero(); rows * sk];
                mm(rows, sk, d, &mut ds, gb, (d, 1), vb, (1, d), false, false); // dP
                for (dsr, pr) in ds.chunks_mut(sk).zip(pb.chunks(sk)) {
                    let dot = dot(dsr, pr);
                    dsr.iter_mut().zip(pr).for_each(|(x, &y)| *x = scale * y * (*x - dot));
                }
                mm(rows, d, sk, dq, &ds, (sk, 1), kb, (d, 1), false, false);
                mm(sk, d, rows, dk, &ds, (1, sk), qb, (d, 1), false, false);
                mm(sk, d, rows, dv, pb, (1, sk), gb, (d, 1), false, false);
            },
        );
        (dq, dk, dv)
    }
}

impl candle_core::CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: WithDType + Float + 'static>(op: &Attention, parts: [(&CpuStorage, &Layout); 3]) -> Result<(CpuStorage, Tensor)> {
            let (q, k, v) = (storage_slice::<T>(parts[0])?, storage_slice::<T>(parts[1])?, storage_slice::<T>(parts[2])?);
            let mask: Vec<&Tensor> = op.mask.iter().collect();
            let (out, probs) = on_slices::<T, _>(&mask, |m| op.forward(q, k, v, m.first().copied().unwrap_or(&[])))?;
            let (b, h, _, sq, sk, _) = op.dims;
            Ok((T::to_cpu_storage_owned(out), Tensor::from_vec(probs, (b, h, sq, sk), &Device::Cpu)?))
        }
        let parts = [(s1, l1), (s2, l2), (s3, l3)];
        let (out, probs) = match s1.dtype() {
            DType::F32 => go::<f32>(self, parts)?,
            DType::F64 => go::<f64>(self, parts)?,
            dt => candle_core::bail!("fused attention takes f32 or f64, not {dt:?}"),
        };
        *self.probs.lock().expect("probabilities") = Some(probs);
        Ok((out, l1.shape().clone()))
    }
    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, _o: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let p = self.probs.lock().expect("probabilities").clone().ok_or_else(|| candle_core::Error::Msg("fused attention: no forward".into()))?;
        fn go<T: WithDType + Float + 'static>(op: &Attention, q: &Tensor, k: &Tensor, v: &Tensor, p: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
            let (dq, dk, dv) = on_slices::<T, _>(&[q, k, v, p, g], |s| op.backward(s[0], s[1], s[2], s[3], s[4]))?;
            Ok((Tensor::from_vec(dq, q.shape(), &Device::Cpu)?, Tensor::from_vec(dk, k.shape(), &Device::Cpu)?, Tensor::from_vec(dv, v.shape(), &Device::Cpu)?))
        }
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => go::<f32>(self, q, k, v, &p, g)?,
            _ => go::<f64>(self, q, k, v, &p, g)?,
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// `softmax(scale * q k^T + mask) v` for `q: [b, h, sq, d]`, `k, v: [b, kvh, sk, d]` (each key/value head
/// serves `h / kvh` query heads) and a constant additive mask that broadcasts to `[b, h, sq, sk]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (b, h, sq, d) = q.dims4()?;
    let (_, kvh, sk, _) = k.dims4()?;
    if h % kvh != 0 || v.dims() != k.dims() || k.dim(0)? != b || k.dim(3)? != d {
        candle_core::bail!("attention: q {:?}, k {:?}, v {:?}", q.dims(), k.dims(), v.dims());
    }
    let mask = match mask {
        None => None,
        Some(m) if m.track_op() => candle_core::bail!("attention: the mask must be constant"),
        Some(m) if m.dims() == [sq, sk] => Some(m.contiguous()?),
        Some(m) => Some(m.broadcast_as((b, h, sq, sk))?.contiguous()?),
    };
    let mask_rows = mask.as_ref().map_or(1, |m| m.elem_count() / sk);
    let op = Attention { mask, mask_rows, scale, dims: (b, h, kvh, sq, sk, d), probs: Default::default() };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}
