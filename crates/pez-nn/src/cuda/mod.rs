//! pez's own CUDA kernels (`src/cuda/*.cu`, compiled to PTX by build.rs): the GPU twins of `crate::kernels`, with the
//! same formulas, each fused op one launch forward and one backward (input gradient only). The CPU kernels are the
//! reference: `pez kernels-check --device cuda` (run by scripts/gpu_check.sh) compares these with the composed
//! maths. Off unless `PEZ_CUDA=fused` (`backend::gpu_kernels_for`) until a GPU run has proved them.

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda::{CudaDType, WrapErr};
use candle_core::{bail, CudaStorage, DType, Layout, Result, Storage, Tensor};

const NORMS: &str = include_str!(concat!(env!("OUT_DIR"), "/norms.ptx"));

/// Runs `f` on the CUDA storages and layouts of `ts` (made contiguous first).
pub(crate) fn on_cuda<R>(ts: &[&Tensor], f: impl FnOnce(&[(&CudaStorage, &Layout)]) -> Result<R>) -> Result<R> {
    let ts = ts.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let parts = guards
        .iter()
        .map(|(s, l)| match &**s {
            Storage::Cuda(c) => Ok((c, *l)),
            _ => bail!("pez's CUDA kernels take CUDA tensors"),
        })
        .collect::<Result<Vec<_>>>()?;
    f(&parts)
}

/// A CUDA storage as a contiguous tensor of `shape`, outside the autograd graph (a backward pass's result).
pub(crate) fn tensor(s: CudaStorage, shape: &candle_core::Shape) -> Tensor {
    Tensor::from_storage(
        Storage::Cuda(s),
        shape.clone(),
        candle_core::op::BackpropOp::none(),
        false,
    )
}

/// One of norms.cu's row kernels (`pez_<kernel>_<f32|bf16>`): a block per row of `d` values of `x`, reading the
/// frozen `w` (`[d]`) and `z` (the bias, the output gradient, or unused: see the .cu file).
pub(crate) fn norm_rows(
    kernel: &str,
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    z: (&CudaStorage, &Layout),
    eps: f64,
) -> Result<CudaStorage> {
    match x.0.dtype() {
        DType::F32 => rows::<f32>(&format!("pez_{kernel}_f32"), x, w, z, eps),
        DType::BF16 => rows::<half::bf16>(&format!("pez_{kernel}_bf16"), x, w, z, eps),
        dt => bail!("pez's CUDA kernels take f32 or bf16, not {dt:?}"),
    }
}

fn rows<T: CudaDType + DeviceRepr>(
    name: &str,
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    z: (&CudaStorage, &Layout),
    eps: f64,
) -> Result<CudaStorage> {
    let (xv, wv, zv) = (view::<T>(name, x)?, view::<T>(name, w)?, view::<T>(name, z)?);
    let n = x.1.shape().elem_count();
    let d = x.1.dims().last().copied().unwrap_or(1);
    if wv.len() != d || (zv.len() != n && zv.len() != d) {
        bail!(
            "{name}: {n} values in rows of {d}, weight {}, third input {}",
            wv.len(),
            zv.len()
        );
    }
    let dev = x.0.device();
    let func = dev.get_or_load_custom_func(name, "pez-norms", NORMS)?;
    // SAFETY: the kernel writes every one of the `n` values before anything reads them.
    let out = unsafe { dev.alloc::<T>(n)? };
    let (d_arg, eps_arg) = (d as i32, eps as f32);
    let mut b = func.builder();
    b.arg(&xv).arg(&wv).arg(&zv).arg(&out).arg(&d_arg).arg(&eps_arg);
    // A block per row, a thread per value up to 1024 (a multiple of 32: norms.cu's block_sum needs whole warps).
    let cfg = LaunchConfig {
        grid_dim: ((n / d.max(1)) as u32, 1, 1),
        block_dim: ((d.div_ceil(32) * 32).clamp(32, 1024) as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments are norms.cu's signature (x, w, z, out, int d, float eps); x, z and out hold n / d rows
    // of d values (z may be w-sized where the kernel does not read it), w holds d, all of type T on this stream.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// The elements of a contiguous CUDA storage.
fn view<'a, T: CudaDType>(name: &str, (s, l): (&'a CudaStorage, &Layout)) -> Result<CudaView<'a, T>> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{name}: a non-contiguous input")))?;
    Ok(s.as_cuda_slice::<T>()?.slice(a..b))
}
