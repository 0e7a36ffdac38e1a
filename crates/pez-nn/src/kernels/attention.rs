//! Scaled dot-product attention (grouped-query heads): probabilities kept for the backward when an input needs a
//! gradient, tiled without them (memory linear in the length, causal tails skipped) when none does.

use super::{c, dot, on_slices, storage_slice};
use crate::matmul::isa::{self, Isa};
use crate::matmul::{mm_at, Precision};
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
    /// Whether the backward will be asked for (an input tracks a gradient): keep the probabilities.
    keep_probs: bool,
    probs: std::sync::Mutex<Option<Tensor>>,
    /// Of the score and mixing products (and their backward products).
    precision: Precision,
    /// The instruction-set level those run at (read on the thread that made the op).
    level: Isa,
}

/// Query positions per tile of the inference path: a tile's scores are `TILE x visible keys`.
const TILE: usize = 256;

impl Attention {
    fn forward<T: WithDType + Float + Exp + 'static>(&self, q: &[T], k: &[T], v: &[T], mask: &[T]) -> (Vec<T>, Vec<T>) {
        let (b, h, kvh, sq, sk, d) = self.dims;
        let rows = h / kvh * sq;
        let mut out = vec![T::zero(); b * h * sq * d];
        let mut probs = vec![T::zero(); b * h * sq * sk];
        let scale: T = c(self.scale);
        out.par_chunks_mut(rows * d)
            .zip(probs.par_chunks_mut(rows * sk))
            .enumerate()
            .for_each(|(blk, (o, p))| {
                let (qb, kb) = (&q[blk * rows * d..], &k[blk * sk * d..(blk + 1) * sk * d]);
                mm_at(
                    self.precision,
                    self.level,
                    rows,
                    sk,
                    d,
                    p,
                    qb,
                    (d, 1),
                    kb,
                    (1, d),
                    false,
                    false,
                );
                for (r, row) in p.chunks_mut(sk).enumerate() {
                    let m = (!mask.is_empty()).then(|| ((blk * rows + r) % self.mask_rows) * sk);
                    softmax_row(row, scale, m.map(|m| &mask[m..m + sk]));
                }
                mm_at(
                    self.precision,
                    self.level,
                    rows,
                    d,
                    sk,
                    o,
                    p,
                    (sk, 1),
                    &v[blk * sk * d..(blk + 1) * sk * d],
                    (d, 1),
                    false,
                    false,
                );
            });
        (out, probs)
    }

    /// Inference: per head, query positions in tiles of `TILE`; each tile's scores cover only the keys up to the
    /// last one its mask leaves visible (a causal mask's future is never computed) and are dropped after the tile,
    /// so memory is `TILE x keys` per thread instead of the whole `sq x sk` matrix per head. Keys past that point
    /// would get weight exp(MASKED) = 0 exactly, so the result equals `forward`'s.
    fn forward_tiled<T: WithDType + Float + Exp + 'static>(&self, q: &[T], k: &[T], v: &[T], mask: &[T]) -> Vec<T> {
        let (b, h, kvh, sq, sk, d) = self.dims;
        let group = h / kvh;
        let mut out = vec![T::zero(); b * h * sq * d];
        let (scale, masked): (T, T) = (c(self.scale), c(crate::masks::MASKED / 10.0));
        // Per mask row, one past its last visible key (all keys for a row with none visible); scanned once, not
        // once per head.
        let ends: Vec<usize> = mask
            .par_chunks(sk)
            .map(|m| m.iter().rposition(|&x| x > masked).map_or(sk, |j| j + 1))
            .collect();
        out.par_chunks_mut(sq * d).enumerate().for_each(|(bh, o)| {
            let kv = (bh / h) * kvh + (bh % h) / group;
            let (kb, vb) = (&k[kv * sk * d..(kv + 1) * sk * d], &v[kv * sk * d..(kv + 1) * sk * d]);
            o.par_chunks_mut(TILE * d)
                .enumerate()
                .for_each_init(Vec::new, |s: &mut Vec<T>, (t, ot)| {
                    let (p0, n) = (t * TILE, ot.len() / d);
                    let row_of = |r: usize| (bh * sq + p0 + r) % self.mask_rows;
                    let mask_row = |r: usize| (!mask.is_empty()).then(|| row_of(r) * sk);
                    let end = if mask.is_empty() {
                        sk
                    } else {
                        (0..n).map(|r| ends[row_of(r)]).max().unwrap_or(sk)
                    };
                    s.clear();
                    s.resize(n * end, T::zero());
                    mm_at(
                        self.precision,
                        self.level,
                        n,
                        end,
                        d,
                        s,
                        &q[(bh * sq + p0) * d..],
                        (d, 1),
                        kb,
                        (1, d),
                        false,
                        false,
                    );
                    for (r, row) in s.chunks_mut(end).enumerate() {
                        softmax_row(row, scale, mask_row(r).map(|m| &mask[m..m + end]));
                    }
                    mm_at(
                        self.precision,
                        self.level,
                        n,
                        d,
                        end,
                        ot,
                        s,
                        (end, 1),
                        vb,
                        (d, 1),
                        false,
                        false,
                    );
                });
        });
        out
    }

    fn backward<T: WithDType + Float + 'static>(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        p: &[T],
        g: &[T],
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (b, h, kvh, sq, sk, d) = self.dims;
        let rows = h / kvh * sq;
        let (mut dq, mut dk, mut dv) = (
            vec![T::zero(); b * h * sq * d],
            vec![T::zero(); b * kvh * sk * d],
            vec![T::zero(); b * kvh * sk * d],
        );
        let scale: T = c(self.scale);
        dq.par_chunks_mut(rows * d)
            .zip(dk.par_chunks_mut(sk * d))
            .zip(dv.par_chunks_mut(sk * d))
            .enumerate()
            .for_each(|(blk, ((dq, dk), dv))| {
                let (qb, gb) = (
                    &q[blk * rows * d..(blk + 1) * rows * d],
                    &g[blk * rows * d..(blk + 1) * rows * d],
                );
                let (kb, vb) = (
                    &k[blk * sk * d..(blk + 1) * sk * d],
                    &v[blk * sk * d..(blk + 1) * sk * d],
                );
                let pb = &p[blk * rows * sk..(blk + 1) * rows * sk];
                let mut ds = vec![T::zero(); rows * sk];
                mm_at(
                    self.precision,
                    self.level,
                    rows,
                    sk,
                    d,
                    &mut ds,
                    gb,
                    (d, 1),
                    vb,
                    (1, d),
                    false,
                    false,
                ); // dP
                for (dsr, pr) in ds.chunks_mut(sk).zip(pb.chunks(sk)) {
                    let dot = dot(dsr, pr);
                    dsr.iter_mut().zip(pr).for_each(|(x, &y)| *x = scale * y * (*x - dot));
                }
                mm_at(
                    self.precision,
                    self.level,
                    rows,
                    d,
                    sk,
                    dq,
                    &ds,
                    (sk, 1),
                    kb,
                    (d, 1),
                    false,
                    false,
                );
                mm_at(
                    self.precision,
                    self.level,
                    sk,
                    d,
                    rows,
                    dk,
                    &ds,
                    (1, sk),
                    qb,
                    (d, 1),
                    false,
                    false,
                );
                mm_at(
                    self.precision,
                    self.level,
                    sk,
                    d,
                    rows,
                    dv,
                    pb,
                    (1, sk),
                    gb,
                    (d, 1),
                    false,
                    false,
                );
            });
        (dq, dk, dv)
    }
}

/// `row = softmax(scale * row + mask)` in place. Every pass is a loop the compiler vectorises: sums and maxima
/// run in `LANES` partial accumulators, and f32's exp is a polynomial (`Exp`), not a libm call per score.
fn softmax_row<T: Float + Exp>(row: &mut [T], scale: T, mask: Option<&[T]>) {
    match mask {
        Some(m) => row.iter_mut().zip(m).for_each(|(x, &m)| *x = *x * scale + m),
        None => row.iter_mut().for_each(|x| *x = *x * scale),
    }
    let mut maxes = [T::neg_infinity(); LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(T::neg_infinity(), |a, &x| if x > a { x } else { a });
    for c in chunks {
        for (m, &x) in maxes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = maxes.iter().fold(tail, |a, &x| if x > a { x } else { a });
    let mut sums = [T::zero(); LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, x) in sums.iter_mut().zip(c) {
            *x = (*x - max).exp_poly();
            *s = *s + *x;
        }
    }
    let mut sum = sums.iter().fold(T::zero(), |a, &x| a + x);
    for x in chunks.into_remainder() {
        *x = (*x - max).exp_poly();
        sum = sum + *x;
    }
    let inv = T::one() / sum;
    row.iter_mut().for_each(|x| *x = *x * inv);
}

const LANES: usize = 8;

/// exp as the attention kernels compute it: f64 through libm (the exact reference the tests compare in), f32
/// branch-free (Cephes' expf: 2^n times a degree-7 polynomial on |r| <= ln2/2, within 2 ulp), so that a
/// row of scores is exponentiated 8 at a time.
pub(crate) trait Exp: Copy {
    fn exp_poly(self) -> Self;
}

impl Exp for f64 {
    fn exp_poly(self) -> f64 {
        self.exp()
    }
}

impl Exp for f32 {
    fn exp_poly(self) -> f32 {
        const LO: f32 = -87.0; // below: exp underflows to (or near) f32's smallest normals; 0 is returned
        let x = self.clamp(LO, 88.0);
        let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
        let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4; // x - n ln2, ln2 split in two for precision
        let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
            + 1.666_666_5e-1)
            * r
            + 0.5;
        // 2^n from the bits of 2^23 + 127 + n, whose mantissa holds the biased exponent (no float-to-int cast,
        // which Rust saturates in scalar code).
        let e = (p * r * r + r + 1.0) * f32::from_bits((n + 8_388_735.0).to_bits() << 23);
        if self < LO {
            0.0
        } else {
            e
        }
    }
}

impl candle_core::CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: WithDType + Float + Exp + 'static>(
            op: &Attention,
            parts: [(&CpuStorage, &Layout); 3],
        ) -> Result<(CpuStorage, Option<Tensor>)> {
            let (q, k, v) = (
                storage_slice::<T>(parts[0])?,
                storage_slice::<T>(parts[1])?,
                storage_slice::<T>(parts[2])?,
            );
            let mask: Vec<&Tensor> = op.mask.iter().collect();
            fn m<'a, T>(ms: &[&'a [T]]) -> &'a [T] {
                ms.first().copied().unwrap_or(&[])
            }
            if !op.keep_probs {
                return Ok((
                    T::to_cpu_storage_owned(on_slices::<T, _>(&mask, |ms| op.forward_tiled(q, k, v, m(ms)))?),
                    None,
                ));
            }
            let (out, probs) = on_slices::<T, _>(&mask, |ms| op.forward(q, k, v, m(ms)))?;
            let (b, h, _, sq, sk, _) = op.dims;
            Ok((
                T::to_cpu_storage_owned(out),
                Some(Tensor::from_vec(probs, (b, h, sq, sk), &Device::Cpu)?),
            ))
        }
        let parts = [(s1, l1), (s2, l2), (s3, l3)];
        let (out, probs) = match s1.dtype() {
            DType::F32 => go::<f32>(self, parts)?,
            DType::F64 => go::<f64>(self, parts)?,
            dt => candle_core::bail!("fused attention takes f32 or f64, not {dt:?}"),
        };
        *self.probs.lock().expect("probabilities") = probs;
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _o: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let p = self
            .probs
            .lock()
            .expect("probabilities")
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("fused attention: no forward".into()))?;
        fn go<T: WithDType + Float + 'static>(
            op: &Attention,
            q: &Tensor,
            k: &Tensor,
            v: &Tensor,
            p: &Tensor,
            g: &Tensor,
        ) -> Result<(Tensor, Tensor, Tensor)> {
            let (dq, dk, dv) = on_slices::<T, _>(&[q, k, v, p, g], |s| op.backward(s[0], s[1], s[2], s[3], s[4]))?;
            Ok((
                Tensor::from_vec(dq, q.shape(), &Device::Cpu)?,
                Tensor::from_vec(dk, k.shape(), &Device::Cpu)?,
                Tensor::from_vec(dv, v.shape(), &Device::Cpu)?,
            ))
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
/// With `Precision::Bf16` the products round their inputs to bf16 (softmax and everything else stay f32).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    precision: Precision,
) -> Result<Tensor> {
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
    let keep_probs = q.track_op() || k.track_op() || v.track_op();
    let op = Attention {
        mask,
        mask_rows,
        scale,
        dims: (b, h, kvh, sq, sk, d),
        keep_probs,
        probs: Default::default(),
        precision,
        level: isa::current(),
    };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::Exp;

    #[test]
    fn f32_exp_polynomial_within_2_ulp_of_libm() {
        // Every 1/1000 over the range softmax feeds it (x - max <= 0) and the positive side it also covers.
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (got, want) = (x.exp_poly() as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.0 * f32::EPSILON as f64, "relative error {worst:.2e}");
        assert_eq!((-100f32).exp_poly(), 0.0);
        assert_eq!((-1e9f32).exp_poly(), 0.0);
        assert_eq!(0f32.exp_poly(), 1.0);
    }
}
