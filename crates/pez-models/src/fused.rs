//! Fused CPU kernels with hand-written backward passes for the parts of a transformer block between the weight
//! matrices, and the frozen-weight linear maps themselves: RMSNorm, LayerNorm, attention, rotary embeddings,
//! gated activations, head layout swaps, linear.
//!
//! Composed from candle primitives each of these records 3-10 graph nodes, and candle's backward then
//! allocates a zero gradient and a sum for every node and also differentiates the constant operands (norm
//! weights, masks, rope tables). Here each is one node whose backward returns only the input gradients.
//! Weights, masks and tables are frozen: they are captured, not differentiated.
//! Correctness: `tests/fused.rs` compares each op (values and input gradients) with the same maths composed
//! from candle ops; the golden tests and finite-difference gradient checks of every architecture run through them.

use candle_core::{backend::BackendStorage, CpuStorage, DType, Device, Layout, Result, Shape, Storage, Tensor, WithDType};
use num_traits::Float;
use rayon::prelude::*;

/// A row-wise kernel: output row `r` (of `width` values) from the whole inputs.
trait Kernel: Sync {
    fn width(&self) -> usize;
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]);
}

/// Runs `k` over contiguous CPU inputs: a custom op's argument storages, then tensors.
fn launch<K: Kernel>(k: &K, args: &[(&CpuStorage, &Layout)], tensors: &[&Tensor], n_out: usize) -> Result<CpuStorage> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut parts: Vec<(&CpuStorage, &Layout)> = args.to_vec();
    for (s, l) in &guards {
        match &**s {
            Storage::Cpu(c) => parts.push((c, l)),
            _ => candle_core::bail!("fused kernels run on the CPU"),
        }
    }
    match parts[0].0.dtype() {
        DType::F32 => Ok(f32::to_cpu_storage_owned(run::<f32, K>(k, &parts, n_out)?)),
        DType::F64 => Ok(f64::to_cpu_storage_owned(run::<f64, K>(k, &parts, n_out)?)),
        dt => candle_core::bail!("fused kernels take f32 or f64, not {dt:?}"),
    }
}

fn run<T: WithDType + Float, K: Kernel>(k: &K, parts: &[(&CpuStorage, &Layout)], n_out: usize) -> Result<Vec<T>> {
    let ins = parts.iter().map(|&p| storage_slice::<T>(p)).collect::<Result<Vec<&[T]>>>()?;
    let mut out = vec![T::zero(); n_out];
    out.par_chunks_mut(k.width()).enumerate().for_each(|(r, o)| k.row(r, &ins, o));
    Ok(out)
}

/// The elements of a contiguous CPU storage as `T`.
fn storage_slice<'a, T: WithDType>((s, l): (&'a CpuStorage, &Layout)) -> Result<&'a [T]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("fused kernel: non-contiguous input".into()))?;
    Ok(&T::cpu_storage_as_slice(s)?[a..b])
}

/// Runs a (backward) kernel over tensors into a new tensor of `shape`.
fn apply<K: Kernel>(k: &K, tensors: &[&Tensor], shape: &Shape) -> Result<Tensor> {
    let tensors = tensors.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = tensors.iter().collect();
    match launch(k, &[], &refs, shape.elem_count())? {
        CpuStorage::F32(v) => Tensor::from_vec(v, shape, &Device::Cpu),
        CpuStorage::F64(v) => Tensor::from_vec(v, shape, &Device::Cpu),
        _ => unreachable!("launch returns f32 or f64"),
    }
}

/// Runs `f` on the data of CPU tensors as `T` slices (made contiguous first; no other copy).
fn on_slices<T: WithDType, R>(ts: &[&Tensor], f: impl FnOnce(&[&[T]]) -> R) -> Result<R> {
    let ts = ts.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let slices = guards
        .iter()
        .map(|(s, l)| match &**s {
            Storage::Cpu(c) => storage_slice::<T>((c, l)),
            _ => candle_core::bail!("fused kernels run on the CPU"),
        })
        .collect::<Result<Vec<&[T]>>>()?;
    Ok(f(&slices))
}

fn c<T: Float>(x: f64) -> T {
    T::from(x).expect("constant fits the float type")
}

fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
}

/// `c[m, n] = a[m, k] b[k, n]` (or `c += a b` with `accumulate`), row-major `c`; `a` and `b` given with (row,
/// column) strides. `parallel`: gemm splits the product over rayon's threads (for one large product).
#[allow(clippy::too_many_arguments)]
fn mm<T: Float + 'static>(m: usize, n: usize, k: usize, c: &mut [T], a: &[T], (a_rs, a_cs): (usize, usize), b: &[T], (b_rs, b_cs): (usize, usize), accumulate: bool, parallel: bool) {
    if m == 0 || n == 0 || k == 0 {
        return; // nothing to add (c starts zeroed, or holds what is accumulated onto)
    }
    assert!(c.len() >= m * n && a.len() > (m - 1) * a_rs + (k - 1) * a_cs && b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    let par = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: the bounds above cover every element gemm reads and writes.
    unsafe {
        gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, accumulate, a.as_ptr(), a_cs as isize, a_rs as isize,
                   b.as_ptr(), b_cs as isize, b_rs as isize, T::one(), T::one(), false, false, false, par)
    }
}

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
        Ok((launch(&RmsNormFwd(self), &[(s, l)], &[&self.w], l.shape().elem_count())?, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(apply(&RmsNormBwd(self), &[x, &self.w, g], x.shape())?))
    }
}

/// RMSNorm over the last dimension with a frozen scale `w: [d]`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    x.contiguous()?.apply_op1(RmsNorm { w: w.contiguous()?, d, eps })
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
        Ok((launch(&LayerNormFwd(self), &[(s, l)], &[&self.w, &self.b], l.shape().elem_count())?, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(apply(&LayerNormBwd(self), &[x, &self.w, g], x.shape())?))
    }
}

/// LayerNorm over the last dimension with frozen weight and bias `[d]`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    x.contiguous()?.apply_op1(LayerNorm { w: w.contiguous()?, b: b.contiguous()?, d, eps })
}

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
        Ok((launch(&RopeFwd(self), &[(s, l)], &[&self.cos, &self.sin], l.shape().elem_count())?, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(apply(&RopeBwd(self), &[g, &self.cos, &self.sin], x.shape())?))
    }
}

/// Rotary embeddings on `x: [.., s, d]` with tables `cos, sin: [s, d]` (constant).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (positions, d) = cos.dims2()?;
    if x.dim(candle_core::D::Minus2)? != positions || x.dim(candle_core::D::Minus1)? != d {
        candle_core::bail!("rope: x {:?} does not match tables {:?}", x.dims(), cos.dims());
    }
    x.contiguous()?.apply_op1(Rope { cos: cos.contiguous()?, sin: sin.contiguous()?, positions, d })
}

// ---------------------------------------------------------------------------------------------------------------
// Gated activations: y = act(a) * b (SwiGLU with SiLU, GeGLU with tanh-GELU).
// da = g * b * act'(a), db = g * act(a).

#[derive(Clone, Copy)]
pub enum Gate {
    Silu,
    GeluTanh,
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
            (half * a * (one + t), half * (one + t) + half * a * (one - t * t) * k * (one + c::<T>(3.0) * c3 * a * a))
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
            da.par_chunks_mut(n).zip(db.par_chunks_mut(n)).enumerate().for_each(|(r, (da, db))| {
                for i in 0..n {
                    let j = r * n + i;
                    let (f, df) = act(self.gate, a[j]);
                    da[i] = g[j] * b[j] * df;
                    db[i] = g[j] * f;
                }
            });
            (da, db)
        })?;
        Ok((Tensor::from_vec(da, a.shape(), &Device::Cpu)?, Tensor::from_vec(db, a.shape(), &Device::Cpu)?))
    }
}

impl candle_core::CustomOp2 for Gated {
    fn name(&self) -> &'static str {
        "fused-gated-activation"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((launch(self, &[(s1, l1), (s2, l2)], &[], l1.shape().elem_count())?, l1.shape().clone()))
    }
    fn bwd(&self, a: &Tensor, b: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
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

// ---------------------------------------------------------------------------------------------------------------
// Head layout: `[a, m, n, d]` -> `[a, n, m, d]` (split_heads: [b, s, h, d] -> [b, h, s, d]; merge_heads back),
// as one node whose backward is the opposite swap. The composed reshape/transpose/copy records three.

struct Swap {
    m: usize,
    n: usize,
    d: usize,
    out: Shape,
}

impl Kernel for Swap {
    fn width(&self) -> usize {
        self.d
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let (m, n, d) = (self.m, self.n, self.d);
        let (a, rest) = (r / (n * m), r % (n * m));
        let (ni, mi) = (rest / m, rest % m);
        let src = ((a * m + mi) * n + ni) * d;
        out.copy_from_slice(&ins[0][src..src + d]);
    }
}

impl candle_core::CustomOp1 for Swap {
    fn name(&self) -> &'static str {
        "fused-swap-heads"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((launch(self, &[(s, l)], &[], l.shape().elem_count())?, self.out.clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(apply(&Swap { m: self.n, n: self.m, d: self.d, out: x.shape().clone() }, &[g], x.shape())?))
    }
}

/// Reads `x` as `[a, m, n, d]` and returns its `[a, n, m, d]` transpose, shaped `out`.
pub fn swap_middle(x: &Tensor, (a, m, n, d): (usize, usize, usize, usize), out: Shape) -> Result<Tensor> {
    if x.elem_count() != a * m * n * d || out.elem_count() != x.elem_count() {
        candle_core::bail!("swap_middle: {:?} is not [{a}, {m}, {n}, {d}] / {out:?}", x.dims());
    }
    x.contiguous()?.apply_op1(Swap { m, n, d, out })
}

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
