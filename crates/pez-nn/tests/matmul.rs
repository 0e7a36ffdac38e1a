//! Every product path this CPU has against a scalar reference, on awkward shapes: m, n, k that are no multiple of
//! any tile (and 1), strided and transposed operands, accumulation on and off. A path the CPU lacks is skipped
//! with a line naming the missing flag.

use pez_nn::matmul::bf16::{self, PackedB};
use pez_nn::matmul::isa::{self, Isa};
use pez_nn::matmul::mm;

/// Values in [-1, 1) from a seed.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// (m, n, k): tile remainders everywhere (the bf16 kernel's tiles are 12 x 32, k in pairs), single rows and
/// columns, odd k, and a k long enough for accumulation error to show.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 33, 7),
    (13, 31, 5),
    (12, 32, 64),
    (25, 65, 130),
    (7, 100, 513),
    (40, 3, 1031),
];

/// The operands in four layouts: `a` row-major or transposed, `b` row-major or transposed, each with padding
/// between rows (so strides are not the matrix width). Returns `[(a, its strides), (b, its strides)]`.
/// A matrix's values and its (row, column) strides.
type Strided<'a> = (&'a [f32], (usize, usize));
type Owned = (Vec<f32>, (usize, usize));

fn layouts(m: usize, n: usize, k: usize, seed: u64) -> Vec<[Owned; 2]> {
    let (pa, pb) = (3, 5);
    let mut out = vec![];
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let (a_rows, a_cols) = if ta { (k, m) } else { (m, k) };
        let (b_rows, b_cols) = if tb { (n, k) } else { (k, n) };
        let a = values(a_rows * (a_cols + pa), seed);
        let b = values(b_rows * (b_cols + pb), seed + 1);
        let a_strides = if ta { (1, m + pa) } else { (k + pa, 1) };
        let b_strides = if tb { (1, k + pb) } else { (n + pb, 1) };
        out.push([(a, a_strides), (b, b_strides)]);
    }
    out
}

fn reference(
    m: usize,
    n: usize,
    k: usize,
    c0: &[f32],
    (a, (ars, acs)): Strided,
    (b, (brs, bcs)): Strided,
    accumulate: bool,
) -> Vec<f32> {
    (0..m * n)
        .map(|x| {
            let (r, j) = (x / n, x % n);
            let s: f64 = (0..k)
                .map(|i| a[r * ars + i * acs] as f64 * b[i * brs + j * bcs] as f64)
                .sum();
            if accumulate {
                (c0[x] as f64 + s) as f32
            } else {
                s as f32
            }
        })
        .collect()
}

/// Worst |got - want| relative to the sum of |a_i b_i| of that element (the scale rounding errors live on).
fn worst_error(
    m: usize,
    n: usize,
    k: usize,
    got: &[f32],
    want: &[f32],
    (a, (ars, acs)): Strided,
    (b, (brs, bcs)): Strided,
) -> f64 {
    (0..m * n)
        .map(|x| {
            let (r, j) = (x / n, x % n);
            let scale: f64 = (0..k)
                .map(|i| (a[r * ars + i * acs] as f64 * b[i * brs + j * bcs] as f64).abs())
                .sum::<f64>()
                + 1.0;
            (got[x] as f64 - want[x] as f64).abs() / scale
        })
        .fold(0.0, f64::max)
}

#[test]
fn f32_products_equal_the_reference() {
    eprintln!(
        "f32 products: gemm's own dispatch on this CPU ({}; PEZ_ISA does not change it)",
        isa::detected().name()
    );
    for &(m, n, k) in SHAPES {
        for [(a, sa), (b, sb)] in layouts(m, n, k, (m * 100 + n * 10 + k) as u64) {
            for accumulate in [false, true] {
                let c0 = values(m * n, 7);
                let mut c = c0.clone();
                mm(m, n, k, &mut c, &a, sa, &b, sb, accumulate, true);
                let want = reference(m, n, k, &c0, (&a, sa), (&b, sb), accumulate);
                let err = worst_error(m, n, k, &c, &want, (&a, sa), (&b, sb));
                assert!(
                    err < 1e-6,
                    "f32 {m}x{n}x{k} strides {sa:?} {sb:?} accumulate {accumulate}: {err:.1e}"
                );
            }
        }
    }
}

#[test]
fn bf16_products_on_every_path_this_cpu_has() {
    let levels = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16];
    for level in levels {
        if level > isa::detected() {
            eprintln!(
                "SKIPPED bf16 path `{}`: this CPU lacks {}",
                level.name(),
                isa::flag(level)
            );
            continue;
        }
        let path = if level >= Isa::Avx512Bf16 {
            "AVX512-BF16 kernel"
        } else {
            "emulated"
        };
        let mut worst = 0f64;
        for &(m, n, k) in SHAPES {
            for [(a, sa), (b, sb)] in layouts(m, n, k, (m * 100 + n * 10 + k) as u64) {
                let packed = PackedB::pack(k, n, &b, sb);
                for accumulate in [false, true] {
                    for parallel in [false, true] {
                        let c0 = values(m * n, 7);
                        let mut want = c0.clone();
                        bf16::reference(m, n, k, &mut want, &a, sa, &b, sb, accumulate);
                        let mut c = c0.clone();
                        bf16::gemm_packed_at(level, m, &mut c, n, &a, sa, &packed, accumulate, parallel);
                        let err = worst_error(m, n, k, &c, &want, (&a, sa), (&b, sb));
                        assert!(
                            err < 1e-6,
                            "bf16 {path} {m}x{n}x{k} strides {sa:?} {sb:?} accumulate {accumulate}: {err:.1e}"
                        );
                        worst = worst.max(err);
                        // The same product with `b` given as f32 (packed, or on the emulated path rounded, per call).
                        let mut c = c0.clone();
                        bf16::gemm_at(level, m, n, k, &mut c, &a, sa, &b, sb, accumulate, parallel);
                        let err = worst_error(m, n, k, &c, &want, (&a, sa), (&b, sb));
                        assert!(
                            err < 1e-6,
                            "bf16 gemm_at {path} {m}x{n}x{k} {sa:?} {sb:?} {accumulate}: {err:.1e}"
                        );
                        worst = worst.max(err);
                    }
                }
            }
        }
        eprintln!(
            "bf16 path `{}` ({path}): worst error {worst:.1e} of the products' scale against the bf16 reference",
            level.name()
        );
    }
}

#[test]
fn bf16_rounding_is_nearest_even() {
    for (x, want) in [
        (1.0f32, 1.0f32),
        (1.0 + 1.0 / 256.0, 1.0),
        (1.0 + 3.0 / 256.0, 1.0 + 4.0 / 256.0),
        (-2.5, -2.5),
        (f32::MAX, f32::INFINITY),
    ] {
        assert_eq!(bf16::round(x), want, "{x}");
    }
    assert!(bf16::round(f32::NAN).is_nan());
    // bf16 keeps 8 significant bits: every rounded value is within half a unit, 2^-8 of the input (relative).
    for x in values(1000, 3) {
        assert!((bf16::round(x) - x).abs() <= x.abs() / 256.0, "{x}");
    }
}
