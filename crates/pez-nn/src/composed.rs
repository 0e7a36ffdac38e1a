//! Each kernel's maths composed from candle primitives (gated activations: `Activation::apply(a) * b`): what runs on any device or dtype the kernels do not
//! take (candle's autograd records the backward), and the reference the kernels are tested against.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

/// The product `f(a, b)`. candle multiplies no bf16 on the CPU, where bf16 tensors exist only to run the GPU's
/// bf16 path (`PEZ_OPS=composed`): there it is taken in f32 from the bf16 values and rounded back, as cuBLAS's
/// bf16 GEMM (f32 accumulation) gives it.
fn product(a: &Tensor, b: &Tensor, f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if a.device().is_cpu() && a.dtype() == DType::BF16 {
        f(&a.to_dtype(DType::F32)?, &b.to_dtype(DType::F32)?)?.to_dtype(DType::BF16)
    } else {
        f(a, b)
    }
}

/// `a @ b` (see `product`).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    product(a, b, |a, b| a.matmul(b))
}

/// `x @ w` for a frozen `w` (2-D both): candle's own product on whichever device holds them, with a backward that
/// gives `x` its gradient and the weight none. candle's matmul backward would also compute the weight's gradient,
/// a second product as large as the first, which PEZ never reads.
struct FrozenRhs;

impl FrozenRhs {
    fn bmnk(l1: &Layout, l2: &Layout) -> Result<((usize, usize, usize, usize), Shape)> {
        let ((m, k), (_, n)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        Ok(((1, m, n, k), Shape::from((m, n))))
    }
}

impl CustomOp2 for FrozenRhs {
    fn name(&self) -> &'static str {
        "matmul-frozen-rhs"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (bmnk, out) = Self::bmnk(l1, l2)?;
        Ok((s1.matmul(s2, bmnk, l1, l2)?, out))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (bmnk, out) = Self::bmnk(l1, l2)?;
        Ok((s1.matmul(s2, bmnk, l1, l2)?, out))
    }
    fn bwd(&self, _x: &Tensor, w: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(matmul(grad, &w.t()?)?), None))
    }
}

/// `x @ w` for a frozen weight `w`: `[m, k] @ [k, n]`, the backward only to `x` (see `product`).
pub fn matmul_frozen(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if w.dims2()?.0 != x.dims2()?.1 {
        candle_core::bail!("matmul_frozen: {:?} @ {:?}", x.dims(), w.dims());
    }
    product(x, w, |x, w| x.apply_op2(w, FrozenRhs))
}

/// `x @ w_io + b` over the last dimension of `x: [.., in]` (`w_io: [in, out]`, `b: [out]`).
pub fn linear(x: &Tensor, w_io: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (inp, out) = w_io.dims2()?;
    let mut dims = x.dims().to_vec();
    let rows = x.elem_count() / inp;
    // A plain 2-D product over all rows; matmul reads a weight stored either way round, other views are copied.
    let w = if w_io.is_contiguous() || w_io.t()?.is_contiguous() {
        w_io.clone()
    } else {
        w_io.contiguous()?
    };
    let y = matmul_frozen(&x.reshape((rows, inp))?, &w)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    *dims.last_mut().expect("rank >= 1") = out;
    y.reshape(dims)
}

/// `f(x)` computed in f32 when `x` is bf16 or f16, rounded back: norms and softmax sum over a whole row, which in
/// bf16 loses its small terms (Hugging Face's models and PyTorch's autocast run them in f32 too).
fn in_f32(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    f(&crate::dtype::widened(x)?)?.to_dtype(x.dtype())
}

/// `x / sqrt(mean(x^2) + eps) * w` over the last dimension.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    in_f32(x, |x| {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(ms + eps)?.sqrt()?)?
            .broadcast_mul(&w.to_dtype(x.dtype())?)
    })
}

/// `(x - mean) / sqrt(var + eps) * w + b` over the last dimension.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    in_f32(x, |x| {
        let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(&w.to_dtype(x.dtype())?)?
            .broadcast_add(&b.to_dtype(x.dtype())?)
    })
}

/// `softmax(scale * q k^T + mask) v`, key/value heads repeated for grouped queries.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    attention_with(q, k, v, |z| masked_softmax(z, mask, scale))
}

/// `softmax(scale * z + mask)` over the last dimension, in f32 inside for bf16.
pub fn masked_softmax(z: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    in_f32(&(z * scale)?, |z| {
        let z = match mask {
            Some(m) => z.broadcast_add(&m.to_dtype(z.dtype())?)?,
            None => z.clone(),
        };
        let e = z.broadcast_sub(&z.max_keepdim(D::Minus1)?.detach())?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    })
}

/// `softmax(q k^T) v` with the softmax step given (it gets the unscaled scores `[b, h, sq, sk]`): the composed
/// one, or on a GPU pez's fused kernel between the two products.
pub fn attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    softmax: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (b, h, _, d) = q.dims4()?;
    let (_, kvh, sk, _) = k.dims4()?;
    let expand = |t: &Tensor| {
        t.unsqueeze(2)?
            .broadcast_as((b, kvh, h / kvh, sk, d))?
            .reshape((b, h, sk, d))
    };
    let (k, v) = (expand(k)?, expand(v)?);
    let p = softmax(&matmul(&q.contiguous()?, &k.t()?)?)?;
    matmul(&p, &v.contiguous()?)
}

/// Rotary embeddings, half-split layout: `x * cos + [-x2, x1] * sin` for `x: [.., s, d]`, tables `[s, d]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let (x1, x2) = (x.narrow(D::Minus1, 0, half)?, x.narrow(D::Minus1, half, half)?);
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// Reads `x` as `[a, m, n, d]` and returns its `[a, n, m, d]` transpose, shaped `out`.
pub fn swap_middle(x: &Tensor, dims: (usize, usize, usize, usize), out: Shape) -> Result<Tensor> {
    x.reshape(dims)?.transpose(1, 2)?.contiguous()?.reshape(out)
}
