//! Fused CPU kernels with hand-written backward passes for the parts of a transformer block between the weight
//! matrices, and the frozen-weight linear maps themselves: RMSNorm, LayerNorm, attention, rotary embeddings,
//! gated activations, head layout swaps, linear. Called through `crate::ops`, which sends them CPU tensors of
//! f32 or f64 only.
//!
//! Composed from candle primitives each of these records 3-10 graph nodes, and candle's backward then
//! allocates a zero gradient and a sum for every node and also differentiates the constant operands (norm
//! weights, masks, rope tables). Here each is one node whose backward returns only the input gradients.
//! Weights, masks and tables are frozen: they are captured, not differentiated.
//! Correctness: `tests/kernels.rs` compares each op (values and input gradients) with the same maths composed
//! from candle ops (`crate::composed`); the golden tests and finite-difference gradient checks of every architecture run through them.

mod attention;
mod gated;
mod heads;
mod linear;
mod norms;
mod rope;
mod softmax;

pub use attention::attention;
pub use gated::{gated, Gate};
pub use heads::swap_middle;
pub use linear::{linear, pack_bf16};
pub use norms::{layer_norm, rms_norm};
pub use rope::rope;
pub use softmax::masked_softmax;

use candle_core::{
    backend::BackendStorage, CpuStorage, DType, Device, Layout, Result, Shape, Storage, Tensor, WithDType,
};
use num_traits::Float;
use rayon::prelude::*;

/// A row-wise kernel: output row `r` (of `width` values) from the whole inputs.
pub(crate) trait Kernel: Sync {
    fn width(&self) -> usize;
    fn row<T: Float + Send + Sync>(&self, r: usize, ins: &[&[T]], out: &mut [T]);
}

/// Runs `k` over contiguous CPU inputs: a custom op's argument storages, then tensors.
pub(crate) fn launch<K: Kernel>(
    k: &K,
    args: &[(&CpuStorage, &Layout)],
    tensors: &[&Tensor],
    n_out: usize,
) -> Result<CpuStorage> {
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

/// Outputs below this many values are computed on the calling thread: waking the pool costs more than it saves.
const PARALLEL_MIN: usize = 1 << 15;

fn run<T: WithDType + Float, K: Kernel>(k: &K, parts: &[(&CpuStorage, &Layout)], n_out: usize) -> Result<Vec<T>> {
    let ins = parts
        .iter()
        .map(|&p| storage_slice::<T>(p))
        .collect::<Result<Vec<&[T]>>>()?;
    let mut out = vec![T::zero(); n_out];
    if n_out < PARALLEL_MIN {
        out.chunks_mut(k.width())
            .enumerate()
            .for_each(|(r, o)| k.row(r, &ins, o));
    } else {
        out.par_chunks_mut(k.width())
            .enumerate()
            .for_each(|(r, o)| k.row(r, &ins, o));
    }
    Ok(out)
}

/// The elements of a contiguous CPU storage as `T`.
pub(crate) fn storage_slice<'a, T: WithDType>((s, l): (&'a CpuStorage, &Layout)) -> Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused kernel: non-contiguous input".into()))?;
    Ok(&T::cpu_storage_as_slice(s)?[a..b])
}

/// Runs a (backward) kernel over tensors into a new tensor of `shape`.
pub(crate) fn apply<K: Kernel>(k: &K, tensors: &[&Tensor], shape: &Shape) -> Result<Tensor> {
    let tensors = tensors.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = tensors.iter().collect();
    match launch(k, &[], &refs, shape.elem_count())? {
        CpuStorage::F32(v) => Tensor::from_vec(v, shape, &Device::Cpu),
        CpuStorage::F64(v) => Tensor::from_vec(v, shape, &Device::Cpu),
        _ => unreachable!("launch returns f32 or f64"),
    }
}

/// Runs `f` on the data of CPU tensors as `T` slices (made contiguous first; no other copy).
pub(crate) fn on_slices<T: WithDType, R>(ts: &[&Tensor], f: impl FnOnce(&[&[T]]) -> R) -> Result<R> {
    let ts = ts.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let slices = guards
        .iter()
        .map(|(s, l)| match &**s {
            Storage::Cpu(c) => storage_slice::<T>((c, l)),
            _ => candle_core::bail!("fused kernels run on the CPU"),
        })
        .collect::<Result<Vec<&[T]>>>()?;
    Ok(f(&slices))
}

pub(crate) fn c<T: Float>(x: f64) -> T {
    T::from(x).expect("constant fits the float type")
}

pub(crate) fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
}
