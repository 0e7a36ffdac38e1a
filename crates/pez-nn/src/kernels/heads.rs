//! Head layout swaps (split and merge attention heads) as one node.

use super::{apply, launch, Kernel};
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use num_traits::Float;

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
        Ok(Some(apply(
            &Swap {
                m: self.n,
                n: self.m,
                d: self.d,
                out: x.shape().clone(),
            },
            &[g],
            x.shape(),
        )?))
    }
}

/// Reads `x` as `[a, m, n, d]` and returns its `[a, n, m, d]` transpose, shaped `out`.
pub fn swap_middle(x: &Tensor, (a, m, n, d): (usize, usize, usize, usize), out: Shape) -> Result<Tensor> {
    if x.elem_count() != a * m * n * d || out.elem_count() != x.elem_count() {
        candle_core::bail!("swap_middle: {:?} is not [{a}, {m}, {n}, {d}] / {out:?}", x.dims());
    }
    x.contiguous()?.apply_op1(Swap { m, n, d, out })
}
