//! pez's CUDA kernels (src/cuda/*.cu) run on the CPU under a small emulator (tests/cuda_emulator: a thread per CUDA
//! thread, barriers for __syncthreads and the warp shuffles), compiled with the host's g++, against the CPU kernels
//! (`pez_nn::kernels`, the reference): forward values and input gradients, f32 and bf16, at rows narrower and wider
//! than a block. It checks the kernels' maths and indexing as launched by src/cuda/mod.rs; the launch code itself and
//! the GPU's own arithmetic are checked on a GPU by `pez check-kernels --device cuda` (scripts/gpu_check.sh).

use candle_core::{DType, Tensor, Var};
use pez_nn::kernels;
use pez_nn::testing::random;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The harness compiled once per test binary, or None (and why) where the host has no g++ with C++20.
fn harness() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_emulator");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("norms_harness");
    let o = Command::new("g++")
        .args(["-std=c++20", "-O2", "-pthread", "-DPEZ_CUDA_EMULATOR", "-o"])
        .arg(&out)
        .arg(dir.join("norms_harness.cpp"))
        .output();
    match o {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => panic!(
            "the emulator harness does not compile:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            eprintln!("SKIPPED: no g++ here to build the CUDA emulator ({e})");
            None
        }
    }
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// One kernel under the emulator: `[rows, d]` out from x `[rows, d]`, w `[d]` and z (`[rows, d]` or `[d]`).
fn emulate(h: &Path, kernel: &str, x: &Tensor, w: &Tensor, z: &Tensor, eps: f64) -> Tensor {
    let (rows, d) = x.dims2().unwrap();
    let mut child = Command::new(h)
        .args([kernel, &rows.to_string(), &d.to_string(), &eps.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes: Vec<u8> = [x, w, z]
        .iter()
        .flat_map(|t| f32s(t))
        .flat_map(f32::to_le_bytes)
        .collect();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{kernel} failed");
    let v: Vec<f32> = o
        .stdout
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Tensor::from_vec(v, (rows, d), &candle_core::Device::Cpu).unwrap()
}

/// max |a - b| / max |b|.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (f32s(a), f32s(b));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

type Fused = fn(&Tensor, &Tensor, &Tensor) -> Tensor;

#[test]
fn the_cuda_norms_equal_the_cpu_kernels_under_the_emulator() {
    let Some(h) = harness() else { return };
    let rms: Fused = |x, w, _| kernels::rms_norm(x, w, 1e-6).unwrap();
    let ln: Fused = |x, w, b| kernels::layer_norm(x, w, b, 1e-5).unwrap();
    for d in [576, 1280] {
        let (w, b) = (random(&[d], 2, DType::F32), random(&[d], 3, DType::F32));
        let g = random(&[5, d], 4, DType::F32);
        for (name, f, eps) in [("rms_norm", rms, 1e-6), ("layer_norm", ln, 1e-5)] {
            for (dtype, tol) in [("f32", 1e-5f32), ("bf16", 2f32.powi(-7))] {
                // Inputs as the kernel reads them (rounded to bf16 for the bf16 kernel); the reference is the CPU
                // kernel in f32 on those same values.
                let round = |t: &Tensor| match dtype {
                    "bf16" => t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap(),
                    _ => t.clone(),
                };
                let (x, w, b, g) = (round(&random(&[5, d], 1, DType::F32)), round(&w), round(&b), round(&g));
                let v = Var::from_tensor(&x).unwrap();
                let y = f(v.as_tensor(), &w, &b);
                let dx = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                let dx = dx.get(v.as_tensor()).unwrap();
                let third = if name == "layer_norm" { &b } else { &w };
                let fwd = emulate(&h, &format!("pez_{name}_fwd_{dtype}"), &x, &w, third, eps);
                let bwd = emulate(&h, &format!("pez_{name}_bwd_{dtype}"), &x, &w, &g, eps);
                let (ef, eb) = (rel(&fwd, &y), rel(&bwd, dx));
                eprintln!("{name} {dtype} d={d}: forward {ef:.1e}, input gradient {eb:.1e}");
                assert!(
                    ef < tol && eb < tol,
                    "{name} {dtype} d={d}: forward {ef}, gradient {eb}"
                );
            }
        }
    }
}
