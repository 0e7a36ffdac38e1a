//! pez's own CUDA kernels (`src/cuda/*.cu`, compiled to PTX by build.rs): the GPU twins of `crate::kernels`, with the
//! same formulas, each fused op one launch forward and one backward (input gradient only). The CPU kernels are the
//! reference: `pez check-kernels --device cuda` (run by scripts/gpu_check.sh) compares these with the composed
//! maths. Off unless `PEZ_CUDA=fused` (`backend::gpu_kernels_for`) until a GPU run has proved them.

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda::{CudaDType, WrapErr};
use candle_core::{bail, CudaStorage, DType, Layout, Result, Storage, Tensor};

const NORMS: &str = include_str!(concat!(env!("OUT_DIR"), "/norms.ptx"));
const ELEMENTWISE: &str = include_str!(concat!(env!("OUT_DIR"), "/elementwise.ptx"));
const SOFTMAX: &str = include_str!(concat!(env!("OUT_DIR"), "/softmax.ptx"));

/// The elementwise kernels' launch: 256 threads a block, a block per 256 values up to 65,535 (the kernels loop).
fn elementwise(work: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (work.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `pez_<kernel>_<f32|bf16>` for a storage's dtype, or why there is none.
fn suffixed(kernel: &str, dtype: DType) -> Result<String> {
    match dtype {
        DType::F32 => Ok(format!("pez_{kernel}_f32")),
        DType::BF16 => Ok(format!("pez_{kernel}_bf16")),
        dt => bail!("pez's CUDA kernels take f32 or bf16, not {dt:?}"),
    }
}

/// elementwise.cu's rotary embedding (`rope_fwd` or `rope_bwd`) of `x` (or the output gradient) `[.., positions, d]`
/// with the `[positions, d]` tables, in x's dtype.
pub(crate) fn rope(
    kernel: &str,
    x: (&CudaStorage, &Layout),
    cos: (&CudaStorage, &Layout),
    sin: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    match x.0.dtype() {
        DType::F32 => rope_t::<f32>(&suffixed(kernel, DType::F32)?, x, cos, sin),
        dt => rope_t::<half::bf16>(&suffixed(kernel, dt)?, x, cos, sin),
    }
}

fn rope_t<T: CudaDType + DeviceRepr>(
    name: &str,
    x: (&CudaStorage, &Layout),
    cos: (&CudaStorage, &Layout),
    sin: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let (xv, cv, sv) = (view::<T>(name, x)?, view::<T>(name, cos)?, view::<T>(name, sin)?);
    let (positions, d) = cos.1.shape().dims2()?;
    let n = xv.len();
    if d % 2 != 0 || n % (positions * d) != 0 || sv.len() != cv.len() {
        bail!("{name}: {n} values against tables {positions}x{d}");
    }
    let dev = x.0.device();
    let func = dev.get_or_load_custom_func(name, "pez-elementwise", ELEMENTWISE)?;
    // SAFETY: the kernel writes every one of the `n` values before anything reads them.
    let out = unsafe { dev.alloc::<T>(n)? };
    let (rows, positions, d) = ((n / d) as i32, positions as i32, d as i32);
    let mut b = func.builder();
    b.arg(&xv)
        .arg(&cv)
        .arg(&sv)
        .arg(&out)
        .arg(&rows)
        .arg(&positions)
        .arg(&d);
    // SAFETY: elementwise.cu's rope signature (x, cos, sin, out, int rows, int positions, int d); x and out hold
    // rows x d values, the tables positions x d, all of type T on this stream.
    unsafe { b.launch(elementwise(n / 2)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// elementwise.cu's gated activation: `act(a) * b` (`gated_fwd`, one output) or the input gradients `(da, db)`
/// from the output gradient (`gated_bwd`, two outputs); `gate` 0 is SiLU, 1 tanh-GELU.
pub(crate) fn gated(ins: &[(&CudaStorage, &Layout)], gate: i32) -> Result<Vec<CudaStorage>> {
    let kernel = if ins.len() == 3 { "gated_bwd" } else { "gated_fwd" };
    match ins[0].0.dtype() {
        DType::F32 => gated_t::<f32>(&suffixed(kernel, DType::F32)?, ins, gate),
        dt => gated_t::<half::bf16>(&suffixed(kernel, dt)?, ins, gate),
    }
}

fn gated_t<T: CudaDType + DeviceRepr>(
    name: &str,
    ins: &[(&CudaStorage, &Layout)],
    gate: i32,
) -> Result<Vec<CudaStorage>> {
    let bwd = ins.len() == 3;
    let views = ins.iter().map(|&i| view::<T>(name, i)).collect::<Result<Vec<_>>>()?;
    let n = views[0].len();
    if views.iter().any(|v| v.len() != n) {
        bail!("{name}: inputs of different sizes");
    }
    let dev = ins[0].0.device();
    let func = dev.get_or_load_custom_func(name, "pez-elementwise", ELEMENTWISE)?;
    // SAFETY: the kernel writes every one of the `n` values of each output before anything reads them.
    let outs = (0..if bwd { 2 } else { 1 })
        .map(|_| unsafe { dev.alloc::<T>(n) })
        .collect::<Result<Vec<_>>>()?;
    let mut b = func.builder();
    for v in &views {
        b.arg(v);
    }
    for o in &outs {
        b.arg(o);
    }
    b.arg(&n).arg(&gate);
    // SAFETY: elementwise.cu's gated signatures ((a, b, y, size_t n, int gate) and (a, b, g, da, db, size_t n, int
    // gate)): every pointer holds n values of type T on this stream.
    unsafe { b.launch(elementwise(n)) }.w()?;
    Ok(outs
        .into_iter()
        .map(|o| CudaStorage::wrap_cuda_slice(o, dev.clone()))
        .collect())
}

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
        DType::F32 => rows::<f32>(&suffixed(kernel, DType::F32)?, x, w, z, eps),
        dt => rows::<half::bf16>(&suffixed(kernel, dt)?, x, w, z, eps),
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
    // SAFETY: the arguments are norms.cu's signature (x, w, z, out, int d, float eps); x, z and out hold n / d rows
    // of d values (z may be w-sized where the kernel does not read it), w holds d, all of type T on this stream.
    unsafe { b.launch(per_row(n, d)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// A block per row of `d` values, a thread per value up to 1024 (a multiple of 32: common.cuh's block reductions
/// need whole warps).
fn per_row(n: usize, d: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n / d.max(1)) as u32, 1, 1),
        block_dim: ((d.div_ceil(32) * 32).clamp(32, 1024) as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// softmax.cu's kernels: `masked_softmax_fwd` (a = z, b = the mask `[mask_rows, sk]`) or `masked_softmax_bwd`
/// (a = the forward's output, b = its gradient), over rows of `sk` values.
pub(crate) fn softmax(
    kernel: &str,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    mask_rows: usize,
    scale: f64,
) -> Result<CudaStorage> {
    match a.0.dtype() {
        DType::F32 => softmax_t::<f32>(&suffixed(kernel, DType::F32)?, a, b, mask_rows, scale),
        dt => softmax_t::<half::bf16>(&suffixed(kernel, dt)?, a, b, mask_rows, scale),
    }
}

fn softmax_t<T: CudaDType + DeviceRepr>(
    name: &str,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    mask_rows: usize,
    scale: f64,
) -> Result<CudaStorage> {
    let (av, bv) = (view::<T>(name, a)?, view::<T>(name, b)?);
    let n = av.len();
    let sk = a.1.dims().last().copied().unwrap_or(1);
    if n % sk != 0 || (bv.len() != n && bv.len() != mask_rows * sk) {
        bail!("{name}: {n} values in rows of {sk}, second input {}", bv.len());
    }
    let dev = a.0.device();
    let func = dev.get_or_load_custom_func(name, "pez-softmax", SOFTMAX)?;
    // SAFETY: the kernel writes every one of the `n` values before anything reads them.
    let out = unsafe { dev.alloc::<T>(n)? };
    let (sk_arg, rows_arg, scale_arg) = (sk as i32, mask_rows.max(1) as i32, scale as f32);
    let mut builder = func.builder();
    builder
        .arg(&av)
        .arg(&bv)
        .arg(&out)
        .arg(&sk_arg)
        .arg(&rows_arg)
        .arg(&scale_arg);
    // SAFETY: softmax.cu's signature (a, b, out, int sk, int mask_rows, float scale); a and out hold n / sk rows of
    // sk values, b as many or mask_rows rows (read row r % mask_rows), all of type T on this stream.
    unsafe { builder.launch(per_row(n, sk)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// The elements of a contiguous CUDA storage.
fn view<'a, T: CudaDType>(name: &str, (s, l): (&'a CudaStorage, &Layout)) -> Result<CudaView<'a, T>> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{name}: a non-contiguous input")))?;
    Ok(s.as_cuda_slice::<T>()?.slice(a..b))
}
