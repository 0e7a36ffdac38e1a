//! bf16 products with f32 accumulation: `c (+)= a b` with `a` and `b` rounded to bf16 (round to nearest even).
//!
//! The AVX512-BF16 kernel (`vdpbf16ps`) multiplies pairs along `k`: each 32-bit lane holds two bf16 values, and
//! `acc[j] += a0 * b0[j] + a1 * b1[j]`. So `b` is packed once into panels of `NR` columns with the two values of
//! each `k` pair side by side (`PackedB`: a frozen weight is packed when the model loads), and `a` is converted
//! per call into rows of `k / 2` pair words, each broadcast to all lanes. Without AVX512-BF16 the same maths runs
//! emulated: the inputs rounded to bf16 (kept as f32), then an f32 product.

use super::{isa, mm};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Columns per packed panel: two 16-lane f32 accumulators.
pub const NR: usize = 32;
/// Rows per kernel tile.
const MR: usize = 12;
/// `k` pairs per block: a block of a column panel is `KC * NR * 4` bytes (16 KiB), within L1.
const KC: usize = 128;
/// Row tiles per block: their `a` block is `MB * MR * KC * 4` bytes (48 KiB), within L2.
const MB: usize = 8;

/// `x` rounded to bf16 (nearest, ties to even), as its 16 bits. NaN stays NaN.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    // Both computed and one selected, without a branch: loops of this vectorise.
    let nearest = (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16;
    let nan = ((b >> 16) | 0x40) as u16;
    if x.is_nan() {
        nan
    } else {
        nearest
    }
}

#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to bf16 and back: the value a bf16 product reads.
#[inline(always)]
pub fn round(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// The bf16 words of a `k x n` right-hand matrix, in panels of `NR` columns with `k` pairs side by side:
/// `data[((panel * kp + p) * NR + j) * 2 + h] = b[2p + h][panel * NR + j]`, zero past `k` and `n`.
#[derive(Debug, Clone)]
pub struct PackedB {
    pub k: usize,
    pub n: usize,
    data: Vec<u16>,
    /// The matrix as f32 for the emulated path, made on its first product and kept: unpacking a frozen weight
    /// again for every product took a third of an emulated step (SmolLM2, Zen 3).
    unpacked: OnceLock<Vec<f32>>,
}

impl PackedB {
    /// Packs `b[i][j] = src[i * rs + j * cs]` (`k x n`), the panels spread over rayon's threads.
    pub fn pack(k: usize, n: usize, src: &[f32], strides: (usize, usize)) -> Self {
        Self::pack_with(k, n, src, strides, true)
    }

    fn pack_with(k: usize, n: usize, src: &[f32], (rs, cs): (usize, usize), parallel: bool) -> Self {
        let (kp, panels) = (k.div_ceil(2), n.div_ceil(NR));
        let mut data = vec![0u16; panels * kp * NR * 2];
        let fill = |(panel, out): (usize, &mut [u16])| {
            for p in 0..kp {
                for h in 0..2 {
                    let i = 2 * p + h;
                    if i >= k {
                        continue;
                    }
                    for j in 0..NR.min(n - panel * NR) {
                        out[(p * NR + j) * 2 + h] = to_bf16(src[i * rs + (panel * NR + j) * cs]);
                    }
                }
            }
        };
        if parallel {
            data.par_chunks_mut(kp * NR * 2).enumerate().for_each(fill);
        } else {
            data.chunks_mut(kp * NR * 2).enumerate().for_each(fill);
        }
        Self {
            k,
            n,
            data,
            unpacked: OnceLock::new(),
        }
    }

    /// The matrix as f32 `k x n` (row-major), every value exactly its bf16; made once.
    fn unpacked(&self) -> &[f32] {
        self.unpacked.get_or_init(|| {
            let (k, n, kp) = (self.k, self.n, self.k.div_ceil(2));
            let mut out = vec![0f32; k * n];
            out.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = from_bf16(self.data[(((j / NR) * kp + i / 2) * NR + j % NR) * 2 + i % 2]);
                }
            });
            out
        })
    }
}

/// A frozen weight `w: [out, in]` packed for `y = x w^T` (`fwd`, `k = in`) and for the input gradient
/// `dx = dy w` (`bwd`, `k = out`): bf16, stored once per layer when the model loads.
#[derive(Debug, Clone)]
pub struct PackedWeight {
    pub fwd: PackedB,
    pub bwd: PackedB,
}

impl PackedWeight {
    /// `w[o][i] = src[o * s0 + i * s1]`.
    pub fn new(out: usize, inp: usize, src: &[f32], (s0, s1): (usize, usize)) -> Self {
        Self {
            fwd: PackedB::pack(inp, out, src, (s1, s0)),
            bwd: PackedB::pack(out, inp, src, (s0, s1)),
        }
    }
}

/// `m` rows of `a` (element `(r, i)` at `r * rs + i * cs`) as bf16 pair words, `kp = k / 2` (rounded up) per row,
/// rows padded with zeros to a multiple of `MR`.
fn pack_rows(m: usize, k: usize, a: &[f32], (rs, cs): (usize, usize), parallel: bool) -> Vec<u32> {
    let kp = k.div_ceil(2);
    let mut out = vec![0u32; m.div_ceil(MR) * MR * kp];
    let fill = |(r, row): (usize, &mut [u32])| {
        let mut p0 = 0;
        #[cfg(target_arch = "x86_64")]
        if cs == 1 && isa::current() >= isa::Isa::Avx512Bf16 {
            let whole = k / 32;
            // SAFETY: the CPU has AVX512-BF16; the row holds `k` values from `r * rs`, and `row` `kp >= 16 * whole` words.
            unsafe { kernel::to_bf16_pairs(&a[r * rs..r * rs + 32 * whole], &mut row[..16 * whole]) };
            p0 = 16 * whole;
        }
        let at = |i: usize| if i < k { to_bf16(a[r * rs + i * cs]) as u32 } else { 0 };
        for (p, w) in row.iter_mut().enumerate().skip(p0) {
            *w = at(2 * p) | at(2 * p + 1) << 16;
        }
    };
    if parallel {
        out.par_chunks_mut(kp).take(m).enumerate().for_each(fill);
    } else {
        out.chunks_mut(kp).take(m).enumerate().for_each(fill);
    }
    out
}

/// `c[m, n] (+)= a[m, k] b` with `b` packed, in bf16 with f32 accumulation; `c` row-major with row stride `ldc`.
/// `parallel`: column panels spread over rayon's threads.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed(
    m: usize,
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    a_strides: (usize, usize),
    b: &PackedB,
    accumulate: bool,
    parallel: bool,
) {
    gemm_packed_at(isa::current(), m, c, ldc, a, a_strides, b, accumulate, parallel)
}

/// `gemm_packed` on the path of `level` (the AVX512-BF16 kernel from `Avx512Bf16` up, else emulated); `level`
/// must not be above what the CPU has.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_at(
    level: isa::Isa,
    m: usize,
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    a_strides: (usize, usize),
    b: &PackedB,
    accumulate: bool,
    parallel: bool,
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    check_call(level, m, n, c, ldc);
    if k == 0 || level < isa::Isa::Avx512Bf16 {
        return emulated(m, c, ldc, a, a_strides, b, accumulate, parallel);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let rows = pack_rows(m, k, a, a_strides, parallel);
        let panels = n.div_ceil(NR);
        let c_addr = c.as_mut_ptr() as usize;
        // One contiguous range of panels per thread: each streams `a` once per `k` block.
        let threads = if parallel {
            rayon::current_num_threads().min(panels)
        } else {
            1
        };
        let per = panels.div_ceil(threads);
        let run = |t: usize| {
            // SAFETY: the CPU has AVX512-BF16 (`level` is at most what it detected); each range of panels writes
            // only its own columns of `c` (checked to hold `m` rows of `ldc`), so ranges running at once never overlap.
            unsafe {
                kernel::panels(
                    m,
                    k,
                    &rows,
                    b,
                    t * per..((t + 1) * per).min(panels),
                    c_addr as *mut f32,
                    ldc,
                    accumulate,
                )
            }
        };
        if threads > 1 {
            (0..threads).into_par_iter().for_each(run);
        } else {
            run(0);
        }
    }
}

/// What every product asks of its caller: `c` holds `m` rows of `ldc >= n`, and `level` is one this CPU has.
fn check_call(level: isa::Isa, m: usize, n: usize, c: &[f32], ldc: usize) {
    assert!(c.len() >= (m - 1) * ldc + n && ldc >= n);
    assert!(
        level <= isa::detected(),
        "{} is above this CPU's {}",
        level.name(),
        isa::detected().name()
    );
}

/// The same product without AVX512-BF16: inputs rounded to bf16 (as f32), then gemm's f32 product.
#[allow(clippy::too_many_arguments)]
fn emulated(
    m: usize,
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    (rs, cs): (usize, usize),
    b: &PackedB,
    accumulate: bool,
    parallel: bool,
) {
    let (k, n) = (b.k, b.n);
    emulated_product(
        m,
        n,
        k,
        c,
        ldc,
        &rounded(m, k, a, (rs, cs)),
        b.unpacked(),
        accumulate,
        parallel,
    )
}

/// `c (+)= a b` for `a` (`m x k`) and `b` (`k x n`) already rounded to bf16 values, row-major; gemm's f32 product.
#[allow(clippy::too_many_arguments)]
fn emulated_product(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    b: &[f32],
    accumulate: bool,
    parallel: bool,
) {
    if ldc == n {
        return mm(m, n, k, c, a, (k, 1), b, (n, 1), accumulate, parallel);
    }
    let mut tmp = vec![0f32; m * n];
    mm(m, n, k, &mut tmp, a, (k, 1), b, (n, 1), false, parallel);
    for (r, row) in tmp.chunks(n).enumerate() {
        let out = &mut c[r * ldc..r * ldc + n];
        out.iter_mut()
            .zip(row)
            .for_each(|(o, &v)| *o = if accumulate { *o + v } else { v });
    }
}

/// `x[r][i] = src[r * rs + i * cs]` (`rows x cols`) rounded to bf16 values, row-major.
fn rounded(rows: usize, cols: usize, src: &[f32], (rs, cs): (usize, usize)) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        if cs == 1 {
            out.extend(src[r * rs..r * rs + cols].iter().map(|&x| round(x)));
        } else {
            out.extend((0..cols).map(|i| round(src[r * rs + i * cs])));
        }
    }
    out
}

/// `c[m, n] (+)= a b` for f32 operands given by strides, in bf16 on the path of `level`: `b` packed on the fly
/// (for products whose right side changes every call, such as attention's).
#[allow(clippy::too_many_arguments)]
pub fn gemm_at(
    level: isa::Isa,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if level < isa::Isa::Avx512Bf16 {
        check_call(level, m, n, c, n);
        // Emulated: the operands rounded straight to f32 (packing `b` in bf16 only to unpack it is wasted work).
        let (a, b) = (rounded(m, k, a, a_strides), rounded(k, n, b, b_strides));
        return emulated_product(m, n, k, c, n, &a, &b, accumulate, parallel);
    }
    gemm_packed_at(
        level,
        m,
        c,
        n,
        a,
        a_strides,
        &PackedB::pack_with(k, n, b, b_strides, parallel),
        accumulate,
        parallel,
    );
}

/// The reference: every product of bf16 values summed in f64, rounded to f32 once (what an exact bf16 product
/// with f32 output gives).
#[allow(clippy::too_many_arguments)]
pub fn reference(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    a: &[f32],
    (ars, acs): (usize, usize),
    b: &[f32],
    (brs, bcs): (usize, usize),
    accumulate: bool,
) {
    for r in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|i| round(a[r * ars + i * acs]) as f64 * round(b[i * brs + j * bcs]) as f64)
                .sum();
            c[r * n + j] = if accumulate {
                (c[r * n + j] as f64 + s) as f32
            } else {
                s as f32
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{PackedB, KC, MB, MR, NR};
    use std::arch::x86_64::*;

    /// `src` (a multiple of 32 values) as bf16 pair words, 32 values at a time (`vcvtne2ps2bf16`: nearest even,
    /// as `to_bf16`, but for denormal inputs, which it flushes to zero).
    ///
    /// # Safety
    /// The CPU must have AVX512-BF16 (and AVX512F/BW/VL); `dst` must hold at least `src.len() / 2` words.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn to_bf16_pairs(src: &[f32], dst: &mut [u32]) {
        for (s, d) in src.chunks_exact(32).zip(dst.chunks_exact_mut(16)) {
            let (lo, hi) = (_mm512_loadu_ps(s.as_ptr()), _mm512_loadu_ps(s.as_ptr().add(16)));
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(d.as_mut_ptr() as *mut _, packed);
        }
    }

    /// Column panels `panels` of `c`. Blocked as GotoBLAS does: `KC` pairs of `k` at a time; within that, `MB`
    /// tiles of rows (their `a` block stays in L2) against each panel's `KC x NR` block (in L1). Each tile's
    /// valid rows and columns are added to `c`, or stored on the first block when not accumulating.
    ///
    /// # Safety
    /// The CPU must have AVX512-BF16; `rows` must hold `m` rows padded to a multiple of `MR`, `kp = k / 2` (rounded
    /// up) words each (`pack_rows`); `c` must point to `m` rows of `ldc >= b.n` writable f32s, and no other thread
    /// may touch the columns of `panels` while this runs.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn panels(
        m: usize,
        k: usize,
        rows: &[u32],
        b: &PackedB,
        panels: std::ops::Range<usize>,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let (kp, tiles) = (k.div_ceil(2), m.div_ceil(MR));
        for p0 in (0..kp).step_by(KC) {
            let p1 = (p0 + KC).min(kp);
            for t0 in (0..tiles).step_by(MB) {
                for panel in panels.clone() {
                    for tile in t0..(t0 + MB).min(tiles) {
                        let acc = tile_block(
                            kp,
                            p0..p1,
                            rows.as_ptr().add(tile * MR * kp),
                            b.data.as_ptr().add(panel * kp * NR * 2),
                        );
                        let cols = NR.min(b.n - panel * NR);
                        store(
                            &acc,
                            m - tile * MR,
                            cols,
                            c.add(tile * MR * ldc + panel * NR),
                            ldc,
                            accumulate || p0 > 0,
                        );
                    }
                }
            }
        }
    }

    /// One `MR x NR` tile over pairs `ps`: `a` at the tile's first row (rows `kp` words apart), `b` at its panel.
    ///
    /// # Safety
    /// The CPU must have AVX512-BF16; `a` must be readable for `MR` rows of `kp` words and `b` for `ps.end` pairs of
    /// its panel (`2 * NR` values each).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[inline]
    unsafe fn tile_block(kp: usize, ps: std::ops::Range<usize>, a: *const u32, b: *const u16) -> [[__m512; 2]; MR] {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for p in ps {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR * 2) as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR * 2 + 32) as *const _));
            for (r, acc) in acc.iter_mut().enumerate() {
                let w: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * kp + p) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], w, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], w, b1);
            }
        }
        acc
    }

    /// The first `rows` rows and `cols` columns of a tile into `c` (added to what is there with `add`).
    ///
    /// # Safety
    /// The CPU must have AVX512F; `c` must be writable (and, with `add`, readable) for `min(rows, MR)` rows of
    /// `ldc` f32s, at least `cols <= NR` of them each.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[inline]
    unsafe fn store(acc: &[[__m512; 2]; MR], rows: usize, cols: usize, c: *mut f32, ldc: usize, add: bool) {
        let lo: __mmask16 = if cols >= 16 { 0xFFFF } else { (1u32 << cols) as u16 - 1 };
        let hi: __mmask16 = if cols >= 32 {
            0xFFFF
        } else if cols <= 16 {
            0
        } else {
            (1u32 << (cols - 16)) as u16 - 1
        };
        for (r, acc) in acc.iter().enumerate().take(rows) {
            for (half, mask) in [(0, lo), (1, hi)] {
                if mask != 0 {
                    let dst = c.add(r * ldc + half * 16);
                    let v = if add {
                        _mm512_add_ps(acc[half], _mm512_maskz_loadu_ps(mask, dst))
                    } else {
                        acc[half]
                    };
                    _mm512_mask_storeu_ps(dst, mask, v);
                }
            }
        }
    }
}
