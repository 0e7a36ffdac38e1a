//! Where a model runs (`--device cpu|cuda[:N]`). On the CPU the ops run as our fused kernels; on CUDA they run as
//! candle's own CUDA ops (`composed`, the maths the kernels are tested against), or with `PEZ_CUDA=fused` on
//! pez's CUDA kernels and device set-up (`backend`). CUDA needs a binary built with
//! the `cuda` feature (`scripts/cuda_env.sh`) and a GPU with its driver; either missing is an error that says
//! which, before anything is loaded.

use anyhow::Result;
use candle_core::Device;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceArg {
    #[default]
    Cpu,
    /// The ordinal of the GPU (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!("`{s}` is not a device: use cpu, cuda or cuda:N")),
            },
        }
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceArg {
    /// The candle device, or why there is none.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => open_cuda(n),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> Result<Device> {
    let none = |e| anyhow::anyhow!("--device cuda:{n}: no usable CUDA GPU {n} here ({e}); use --device cpu");
    if !crate::backend::cuda_fused() {
        return Device::new_cuda(n).map_err(none);
    }
    // PEZ_CUDA=fused: a stream of its own (the legacy default stream refuses graph capture), no event per
    // allocation, and freed memory kept in the pool between steps.
    let dev = candle_core::CudaDevice::new_with_stream(n).map_err(none)?;
    // SAFETY: pez issues every op of a device on this one stream, so no tensor is read or freed on another stream
    // while a use is pending (what the events would order).
    unsafe { dev.disable_event_tracking() };
    keep_freed_memory(&dev)?;
    Ok(Device::Cuda(dev))
}

/// Raises the release threshold of the device's default memory pool (cudarc allocates from it with
/// `cuMemAllocAsync`) from 0 to unlimited: freed memory stays in the pool at each synchronisation instead of going
/// back to the driver and being asked for again on the next step.
#[cfg(feature = "cuda")]
fn keep_freed_memory(dev: &candle_core::CudaDevice) -> Result<()> {
    use candle_core::cuda::cudarc::driver::sys;
    let ctx = dev.cuda_stream().context().clone();
    ctx.bind_to_thread()?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: the context is current on this thread; `pool` and `threshold` are live locals of the types the driver
    // writes and reads (a pool handle, a cuuint64_t).
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()).result()?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()?;
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> Result<Device> {
    anyhow::bail!("--device cuda:{n}: this binary was built without CUDA support; rebuild with `--features cuda` (after `. scripts/cuda_env.sh`), or use --device cpu")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_cuda_without_the_feature_says_so() {
        assert_eq!("cpu".parse::<DeviceArg>().unwrap(), DeviceArg::Cpu);
        assert_eq!("cuda".parse::<DeviceArg>().unwrap(), DeviceArg::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceArg>().unwrap(), DeviceArg::Cuda(3));
        assert!("gpu"
            .parse::<DeviceArg>()
            .unwrap_err()
            .contains("use cpu, cuda or cuda:N"));
        assert!("cuda:x".parse::<DeviceArg>().is_err());
        assert!(DeviceArg::Cpu.open().unwrap().is_cpu());
        let e = DeviceArg::Cuda(99).open().unwrap_err().to_string();
        if cfg!(feature = "cuda") {
            assert!(e.contains("no usable CUDA GPU 99"), "{e}");
        } else {
            assert!(
                e.contains("built without CUDA support") && e.contains("--features cuda"),
                "{e}"
            );
        }
    }
}
