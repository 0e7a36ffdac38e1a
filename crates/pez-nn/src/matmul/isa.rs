//! The instruction-set level the products run at: the best the CPU has (CPUID, read once), or a lower level named
//! by `PEZ_ISA` (`scalar`, `avx2`, `avx512`, `avx512bf16`, `amx`) for comparisons and tests. A level above what
//! the CPU has is refused (the process would fault), with a warning.
//!
//! What each level changes: f32 products go through `gemm`, which picks AVX-512 or AVX2/FMA itself from the
//! CPU (not from `PEZ_ISA`); bf16 products run our AVX512-BF16 kernel at `avx512bf16` and above, else the same
//! maths emulated (inputs rounded to bf16, then f32 products).

use std::cell::Cell;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    /// AVX2 and FMA (Haswell, Zen 1 and later).
    Avx2,
    /// AVX-512 F/BW/VL (Skylake-SP, Zen 4 and later).
    Avx512,
    /// AVX-512 with bf16 dot products (`vdpbf16ps`: Cooper Lake, Sapphire Rapids, Zen 4 and later).
    Avx512Bf16,
    /// Intel AMX tiles with bf16 (Sapphire Rapids and later). Detected and named; no kernel of ours uses it yet.
    Amx,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Avx512Bf16 => "avx512bf16",
            Self::Amx => "amx",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Scalar, Self::Avx2, Self::Avx512, Self::Avx512Bf16, Self::Amx]
            .into_iter()
            .find(|i| i.name() == s)
    }
}

/// The best level this CPU has.
pub fn detected() -> Isa {
    static CPU: OnceLock<Isa> = OnceLock::new();
    *CPU.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    use std::arch::is_x86_feature_detected as has;
    // CPUID leaf 7, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
    let amx = || std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 22 | 1 << 24) == (1 << 22 | 1 << 24);
    if !(has!("avx2") && has!("fma")) {
        Isa::Scalar
    } else if !(has!("avx512f") && has!("avx512bw") && has!("avx512vl")) {
        Isa::Avx2
    } else if !has!("avx512bf16") {
        Isa::Avx512
    } else if amx() {
        Isa::Amx
    } else {
        Isa::Avx512Bf16
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Scalar
}

/// The level in use: `PEZ_ISA` if set (and not above the CPU's), else the CPU's.
pub fn chosen() -> Isa {
    static CHOICE: OnceLock<Isa> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let cpu = detected();
        match std::env::var("PEZ_ISA") {
            Err(_) => cpu,
            Ok(s) => match Isa::parse(&s) {
                Some(want) if want <= cpu => want,
                Some(want) => {
                    eprintln!(
                        "warning: PEZ_ISA={} is above what this CPU has ({}); using {}",
                        want.name(),
                        cpu.name(),
                        cpu.name()
                    );
                    cpu
                }
                None => {
                    eprintln!(
                        "warning: PEZ_ISA={s:?} is not one of scalar, avx2, avx512, avx512bf16, amx; using {}",
                        cpu.name()
                    );
                    cpu
                }
            },
        }
    })
}

thread_local! {
    static FORCED: Cell<Option<Isa>> = const { Cell::new(None) };
}

/// The level ops created on this thread run at: `chosen()`, or what `with` forces. Kernels read it when they are
/// created (on the calling thread) and carry it into the threads they fan out to.
pub fn current() -> Isa {
    FORCED.with(|f| f.get()).unwrap_or_else(chosen)
}

/// Runs `f` with ops created on this thread at `level` (for comparing paths in one process). Panics if `level` is
/// above what the CPU has.
pub fn with<R>(level: Isa, f: impl FnOnce() -> R) -> R {
    assert!(
        level <= detected(),
        "{} is above this CPU's {}",
        level.name(),
        detected().name()
    );
    let before = FORCED.with(|c| c.replace(Some(level)));
    let r = f();
    FORCED.with(|c| c.set(before));
    r
}

/// The CPU flag a level needs (for messages about what is missing).
pub fn flag(level: Isa) -> &'static str {
    match level {
        Isa::Scalar => "none",
        Isa::Avx2 => "avx2+fma",
        Isa::Avx512 => "avx512f+avx512bw+avx512vl",
        Isa::Avx512Bf16 => "avx512_bf16",
        Isa::Amx => "amx_bf16+amx_tile",
    }
}
