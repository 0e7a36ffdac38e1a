//! With the `cuda` feature: pez's own CUDA kernels (src/cuda/*.cu) compiled to PTX by nvcc (`NVCC`, else `nvcc` on
//! the PATH; `. scripts/cuda_env.sh` sets it) for compute capability `CUDA_COMPUTE_CAP` (default 90), into
//! `$OUT_DIR`, where src/cuda/mod.rs includes them. Without the feature nothing is compiled.

use std::path::PathBuf;
use std::process::Command;

const SOURCES: &[&str] = &["norms", "elementwise", "softmax"];

fn main() {
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo::rerun-if-changed=src/cuda/common.cuh");
    for name in SOURCES {
        let src = format!("src/cuda/{name}.cu");
        println!("cargo::rerun-if-changed={src}");
        let ptx = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["-ptx", "-O3", &format!("-arch=sm_{cap}"), "-o"])
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("{nvcc} (for {src}): {e}; run `. scripts/cuda_env.sh` first"));
        assert!(status.success(), "{nvcc} could not compile {src}");
    }
}
