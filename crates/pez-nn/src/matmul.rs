//! The matrix products under every kernel (frozen linear maps, attention): one call site, so that an
//! instruction-set variant of the product lands here and nowhere else.

use num_traits::Float;

/// `c[m, n] = a[m, k] b[k, n]` (or `c += a b` with `accumulate`), row-major `c`; `a` and `b` given with (row,
/// column) strides. `parallel`: gemm splits the product over rayon's threads (for one large product).
#[allow(clippy::too_many_arguments)]
pub fn mm<T: Float + 'static>(m: usize, n: usize, k: usize, c: &mut [T], a: &[T], (a_rs, a_cs): (usize, usize), b: &[T], (b_rs, b_cs): (usize, usize), accumulate: bool, parallel: bool) {
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
