//! Each kernel's maths composed from candle primitives (gated activations: `Activation::apply(a) * b`): what runs on any device or dtype the kernels do not
//! take (candle's autograd records the backward), and the reference the kernels are tested against.

use candle_core::{Result, Shape, Tensor, D};

/// `x @ w_io + b` over the last dimension of `x: [.., in]` (`w_io: [in, out]`, `b: [out]`).
pub fn linear(x: &Tensor, w_io: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (inp, out) = w_io.dims2()?;
    let mut dims = x.dims().to_vec();
    let rows = x.elem_count() / inp;
    // A plain 2-D product over all rows; matmul reads a weight stored either way round, other views are copied.
    let w = if w_io.is_contiguous() || w_io.t()?.is_contiguous() { w_io.clone() } else { w_io.contiguous()? };
    let y = x.reshape((rows, inp))?.matmul(&w)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    *dims.last_mut().expect("rank >= 1") = out;
    y.reshape(dims)
}

/// `x / sqrt(mean(x^2) + eps) * w` over the last dimension.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// `(x - mean) / sqrt(var + eps) * w + b` over the last dimension.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)?.broadcast_mul(w)?.broadcast_add(b)
}

/// `softmax(scale * q k^T + mask) v`, key/value heads repeated for grouped queries.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (b, h, _, d) = q.dims4()?;
    let (_, kvh, sk, _) = k.dims4()?;
    let expand = |t: &Tensor| t.unsqueeze(2)?.broadcast_as((b, kvh, h / kvh, sk, d))?.reshape((b, h, sk, d));
    let (k, v) = (expand(k)?, expand(v)?);
    let z = (q.contiguous()?.matmul(&k.t()?)? * scale)?;
    let z = match mask {
        Some(m) => z.broadcast_add(m)?,
        None => z,
    };
    let e = z.broadcast_sub(&z.max_keepdim(D::Minus1)?.detach())?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.matmul(&v.contiguous()?)
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
