//! Which implementation an op runs: the fused CPU kernels, or the same maths composed from candle primitives.
//!
//! Kernels run on CPU tensors of f32 and f64; everything else (another device, another dtype) runs composed.
//! `PEZ_OPS=composed` (or `with(Impl::Composed, ..)` on one thread) forces the composed maths on the CPU too:
//! the device-generic path, checked there against the kernels so that a GPU run only has to repeat it.
//!
//! On CUDA, pez's own kernels (`src/cuda`: norms, rotary embeddings, gated activations) replace the composed maths with `PEZ_CUDA=fused`. They
//! are off by default until a GPU run has compared them with the composed maths (`pez check-kernels --device cuda`
//! in scripts/gpu_check.sh); CI compiles them.

use candle_core::{DType, Tensor};
use std::cell::Cell;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Kernels,
    Composed,
}

thread_local! {
    static FORCED: Cell<Option<Impl>> = const { Cell::new(None) };
}

/// The process-wide choice: `PEZ_OPS` (`kernels`, the default, or `composed`).
pub fn from_env() -> Impl {
    static CHOICE: OnceLock<Impl> = OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("PEZ_OPS").as_deref() {
        Err(_) | Ok("" | "kernels") => Impl::Kernels,
        Ok("composed") => Impl::Composed,
        Ok(other) => {
            eprintln!("warning: PEZ_OPS={other:?} is not `kernels` or `composed`; using the kernels");
            Impl::Kernels
        }
    })
}

/// Runs `f` with `imp` forced on this thread (the ops decide on the calling thread, before any kernel fans out).
pub fn with<R>(imp: Impl, f: impl FnOnce() -> R) -> R {
    let before = FORCED.with(|c| c.replace(Some(imp)));
    let r = f();
    FORCED.with(|c| c.set(before));
    r
}

/// The choice on this thread: forced by `with`, else `PEZ_OPS`.
pub fn current() -> Impl {
    FORCED.with(|c| c.get()).unwrap_or_else(from_env)
}

/// Whether an op on `x` runs as a kernel.
pub fn kernels_for(x: &Tensor) -> bool {
    current() == Impl::Kernels && x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// `PEZ_CUDA=fused`: pez's CUDA kernels and device set-up (`device::open_cuda`) instead of candle's defaults.
pub fn cuda_fused() -> bool {
    static CHOICE: OnceLock<bool> = OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("PEZ_CUDA").as_deref() {
        Err(_) | Ok("" | "candle") => false,
        Ok("fused") => true,
        Ok(other) => {
            eprintln!("warning: PEZ_CUDA={other:?} is not `candle` or `fused`; using candle's");
            false
        }
    })
}

/// Whether an op on `x` runs as pez's CUDA kernel: a CUDA tensor of f32 or bf16 under `PEZ_CUDA=fused`.
pub fn gpu_kernels_for(x: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && current() == Impl::Kernels
        && x.device().is_cuda()
        && matches!(x.dtype(), DType::F32 | DType::BF16)
        && cuda_fused()
}
