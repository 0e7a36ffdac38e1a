//! The matrix products under every kernel (frozen linear maps, attention): one call site, so that what the CPU
//! offers is chosen here and nowhere else.
//!
//! - f32/f64: `gemm`, which dispatches at run time (AVX-512 where the CPU has it, through its `x86-v4` feature;
//!   else AVX2/FMA; else scalar).
//! - bf16 inputs with f32 accumulation (`Precision::Bf16`): `bf16`, our AVX512-BF16 kernel where the CPU has
//!   it (`isa`), else the same maths emulated.

pub mod bf16;
pub mod isa;

use num_traits::Float;
use std::any::TypeId;

/// How a product treats its f32 inputs: as they are, or rounded to bf16 (accumulation is f32 either way, as
/// PyTorch's bf16 autocast does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

/// `c[m, n] = a[m, k] b[k, n]` (or `c += a b` with `accumulate`), row-major `c`; `a` and `b` given with (row,
/// column) strides. `parallel`: gemm splits the product over rayon's threads (for one large product).
#[allow(clippy::too_many_arguments)]
pub fn mm<T: Float + 'static>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    a: &[T],
    (a_rs, a_cs): (usize, usize),
    b: &[T],
    (b_rs, b_cs): (usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return; // nothing to add (c starts zeroed, or holds what is accumulated onto)
    }
    assert!(c.len() >= m * n && a.len() > (m - 1) * a_rs + (k - 1) * a_cs && b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    let par = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the bounds above cover every element gemm reads and writes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// `mm` at `precision`: `Bf16` rounds both f32 operands to bf16 (f64 operands are multiplied as they are), on the
/// path of `level` (see `isa::current`).
#[allow(clippy::too_many_arguments)]
pub fn mm_at<T: Float + 'static>(
    precision: Precision,
    level: isa::Isa,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    a: &[T],
    a_strides: (usize, usize),
    b: &[T],
    b_strides: (usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    match (precision, as_f32_mut(c)) {
        (Precision::Bf16, Some(c)) => bf16::gemm_at(
            level,
            m,
            n,
            k,
            c,
            as_f32(a),
            a_strides,
            as_f32(b),
            b_strides,
            accumulate,
            parallel,
        ),
        _ => mm(m, n, k, c, a, a_strides, b, b_strides, accumulate, parallel),
    }
}

/// `x` as f32 when `T` is f32.
pub(crate) fn as_f32<T: 'static>(x: &[T]) -> &[f32] {
    assert_eq!(TypeId::of::<T>(), TypeId::of::<f32>());
    // SAFETY: T is f32 (checked above), so the slice's memory is exactly an f32 slice of the same length.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len()) }
}

pub(crate) fn as_f32_mut<T: 'static>(x: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: T is f32 (checked), so the slice's memory is exactly an f32 slice of the same length.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut f32, x.len()) })
}
