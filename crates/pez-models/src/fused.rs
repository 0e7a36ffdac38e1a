//! Fused CPU kernels with hand-written backward passes for the elementwise parts of a transformer block:
//! RMSNorm, LayerNorm, scaled + masked softmax, rotary embeddings and gated activations.
//!
//! Composed from candle primitives each of these records 5-10 graph nodes, and candle's backward then
//! allocates a zero gradient and a sum for every node and also differentiates the constant operands (norm
//! weights, masks, rope tables). Here each is one node whose backward returns only the input gradient, one
//! pass over the rows. Weights, masks and tables are frozen: they are captured, not differentiated.
//! Correctness: the golden tests compare forwards with transformers, the gradient checks compare every
//! backward with finite differences (f64).

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
    let ins = parts
        .iter()
        .map(|(s, l)| {
            let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("fused kernel: non-contiguous input".into()))?;
            Ok(&T::cpu_storage_as_slice(s)?[a..b])
        })
        .collect::<Result<Vec<&[T]>>>()?;
    let mut out = vec![T::zero(); n_out];
    out.par_chunks_mut(k.width()).enumerate().for_each(|(r, o)| k.row(r, &ins, o));
    Ok(out)
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

fn c<T: Float>(x: f64) -> T {
    T::from(x).expect("constant fits the float type")
}

fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
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
// Softmax of scaled, masked scores: y = softmax(scale * x + mask).  dx = scale * y * (g - sum(g * y)).

struct Softmax {
    /// Additive mask rows `[mask_rows, n]`; score row `r` reads mask row `r % mask_rows`.
    mask: Option<Tensor>,
    mask_rows: usize,
    n: usize,
    scale: f64,
}

struct SoftmaxFwd<'a>(&'a Softmax);
struct SoftmaxBwd<'a>(&'a Softmax);

impl Kernel for SoftmaxFwd<'_> {
    fn width(&self) -> usize {
        self.0.n
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let n = self.0.n;
        let x = &ins[0][r * n..(r + 1) * n];
        let scale: T = c(self.0.scale);
        match self.0.mask {
            Some(_) => {
                let m = (r % self.0.mask_rows) * n;
                let m = &ins[1][m..m + n];
                for j in 0..n {
                    out[j] = x[j] * scale + m[j];
                }
            }
            None => {
                for j in 0..n {
                    out[j] = x[j] * scale;
                }
            }
        }
        let max = out.iter().fold(T::neg_infinity(), |a, &v| a.max(v));
        let mut sum = T::zero();
        for v in out.iter_mut() {
            *v = (*v - max).exp();
            sum = sum + *v;
        }
        for v in out.iter_mut() {
            *v = *v / sum;
        }
    }
}

impl Kernel for SoftmaxBwd<'_> {
    fn width(&self) -> usize {
        self.0.n
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let n = self.0.n;
        let (y, g) = (&ins[0][r * n..(r + 1) * n], &ins[1][r * n..(r + 1) * n]);
        let gy = dot(g, y);
        let scale: T = c(self.0.scale);
        for j in 0..n {
            out[j] = scale * y[j] * (g[j] - gy);
        }
    }
}

impl candle_core::CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let mask: Vec<&Tensor> = self.mask.iter().collect();
        Ok((launch(&SoftmaxFwd(self), &[(s, l)], &mask, l.shape().elem_count())?, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(apply(&SoftmaxBwd(self), &[y, g], x.shape())?))
    }
}

/// `softmax(scale * x + mask)` over the last dimension of `x: [.., rows, n]`. The mask is constant and either
/// `[rows', n]` with `rows'` dividing the leading rows (repeated: a causal mask shared by batch and heads), or
/// any shape that broadcasts to `full` (materialised).
pub fn masked_softmax(x: &Tensor, mask: Option<&Tensor>, scale: f64, full: &Shape) -> Result<Tensor> {
    let n = x.dim(candle_core::D::Minus1)?;
    let mask = match mask {
        None => None,
        Some(m) if m.rank() == 2 && m.dim(1)? == n && (x.elem_count() / n) % m.dim(0)? == 0 => Some(m.contiguous()?),
        Some(m) => Some(m.broadcast_as(full)?.contiguous()?),
    };
    if mask.as_ref().is_some_and(|m| m.track_op()) {
        candle_core::bail!("masked_softmax: the mask must be constant");
    }
    let mask_rows = mask.as_ref().map_or(1, |m| m.elem_count() / n);
    x.contiguous()?.apply_op1(Softmax { mask, mask_rows, n, scale })
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
            let t = (k * a * (one + c3 * a * a)).tanh();
            (half * a * (one + t), half * (one + t) + half * a * (one - t * t) * k * (one + c::<T>(3.0) * c3 * a * a))
        }
    }
}

struct Gated {
    gate: Gate,
    n: usize,
}

/// Forward, or one of the two input gradients (`which` = 0: da, 1: db).
struct GatedKernel<'a> {
    op: &'a Gated,
    which: Option<usize>,
}

impl Kernel for GatedKernel<'_> {
    fn width(&self) -> usize {
        self.op.n
    }
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]) {
        let n = self.op.n;
        let (a, b) = (&ins[0][r * n..(r + 1) * n], &ins[1][r * n..(r + 1) * n]);
        match self.which {
            None => (0..n).for_each(|i| out[i] = act(self.op.gate, a[i]).0 * b[i]),
            Some(w) => {
                let g = &ins[2][r * n..(r + 1) * n];
                for i in 0..n {
                    let (f, df) = act(self.op.gate, a[i]);
                    out[i] = if w == 0 { g[i] * b[i] * df } else { g[i] * f };
                }
            }
        }
    }
}

impl candle_core::CustomOp2 for Gated {
    fn name(&self) -> &'static str {
        "fused-gated-activation"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let k = GatedKernel { op: self, which: None };
        Ok((launch(&k, &[(s1, l1), (s2, l2)], &[], l1.shape().elem_count())?, l1.shape().clone()))
    }
    fn bwd(&self, a: &Tensor, b: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = |w| apply(&GatedKernel { op: self, which: Some(w) }, &[a, b, g], a.shape());
        Ok((Some(grad(0)?), Some(grad(1)?)))
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
