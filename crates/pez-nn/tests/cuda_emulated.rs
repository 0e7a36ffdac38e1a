//! pez's CUDA kernels (src/cuda/*.cu) run on the CPU under a small emulator (tests/cuda_emulator: a thread per CUDA
//! thread, barriers for __syncthreads and the warp shuffles), compiled with the host's g++, against the CPU kernels
//! (`pez_nn::kernels`, the reference): forward values and input gradients, f32 and bf16, at rows narrower and wider
//! than a block. It checks the kernels' maths and indexing as launched by src/cuda/mod.rs; the launch code itself and
//! the GPU's own arithmetic are checked on a GPU by `pez check-kernels --device cuda` (scripts/gpu_check.sh).

use candle_core::{DType, Tensor, Var};
use pez_nn::kernels;
use pez_nn::testing::random;
use pez_nn::MASKED;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The harness compiled once per test binary (the tests run in parallel: one compile, not one racing another's
/// executable), or None (and why) where the host has no g++ with C++20.
fn harness() -> Option<PathBuf> {
    static HARNESS: OnceLock<Option<PathBuf>> = OnceLock::new();
    HARNESS.get_or_init(compile_harness).clone()
}

fn compile_harness() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_emulator");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cuda_emulator_harness");
    let o = Command::new("g++")
        .args(["-std=c++20", "-O2", "-pthread", "-DPEZ_CUDA_EMULATOR", "-o"])
        .arg(&out)
        .arg(dir.join("harness.cpp"))
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

/// One kernel under the emulator with its arguments and inputs; its outputs (each the size of `ins[0]`).
fn emulate(h: &Path, kernel: &str, args: &[String], ins: &[&Tensor], outs: usize) -> Vec<Tensor> {
    let mut child = Command::new(h)
        .arg(kernel)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes: Vec<u8> = ins.iter().flat_map(|t| f32s(t)).flat_map(f32::to_le_bytes).collect();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{kernel} failed");
    let v: Vec<f32> = o
        .stdout
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let n = ins[0].elem_count();
    assert_eq!(v.len(), n * outs, "{kernel}: output size");
    v.chunks(n)
        .map(|c| Tensor::from_vec(c.to_vec(), ins[0].shape(), &candle_core::Device::Cpu).unwrap())
        .collect()
}

/// A tensor as the kernel reads it: rounded to bf16 for a bf16 kernel (the reference then reads those values in f32).
fn rounded(t: &Tensor, dtype: &str) -> Tensor {
    match dtype {
        "bf16" => t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap(),
        _ => t.clone(),
    }
}

/// The bf16 kernels' tolerance: two roundings of the output type (f32: 1e-5).
fn tolerance(dtype: &str) -> f32 {
    if dtype == "bf16" {
        2f32.powi(-7)
    } else {
        1e-5
    }
}

fn check(name: &str, got: &Tensor, want: &Tensor, dtype: &str) {
    let e = rel(got, want);
    eprintln!("{name} {dtype}: {e:.1e}");
    assert!(e < tolerance(dtype), "{name} {dtype}: {e}");
}

/// max |a - b| / max |b|.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (f32s(a), f32s(b));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

/// The CPU kernel's values at `xs` and the input gradients of `sum(f(xs) * g)`: the reference.
fn reference(xs: &[&Tensor], g: &Tensor, f: impl Fn(&[Tensor]) -> Tensor) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = xs.iter().map(|x| Var::from_tensor(x).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts);
    let grads = (&y * g).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = ts
        .iter()
        .map(|t| grads.get(t).expect("an input gradient").clone())
        .collect();
    (y, gs)
}

type Fused = fn(&Tensor, &Tensor, &Tensor) -> Tensor;

#[test]
fn the_cuda_norms_equal_the_cpu_kernels_under_the_emulator() {
    let Some(h) = harness() else { return };
    let rms: Fused = |x, w, _| kernels::rms_norm(x, w, 1e-6).unwrap();
    let ln: Fused = |x, w, b| kernels::layer_norm(x, w, b, 1e-5).unwrap();
    // Rows narrower and wider than a block of 1024 threads.
    for d in [576, 1280] {
        for (name, f, eps) in [("rms_norm", rms, 1e-6), ("layer_norm", ln, 1e-5)] {
            for dtype in ["f32", "bf16"] {
                let r = |shape: &[usize], seed| rounded(&random(shape, seed, DType::F32), dtype);
                let (x, w, b, g) = (r(&[5, d], 1), r(&[d], 2), r(&[d], 3), r(&[5, d], 4));
                let (y, dx) = reference(&[&x], &g, |t| f(&t[0], &w, &b));
                let args = ["5".to_string(), d.to_string(), eps.to_string()];
                let third = if name == "layer_norm" { &b } else { &w };
                let fwd = emulate(&h, &format!("pez_{name}_fwd_{dtype}"), &args, &[&x, &w, third], 1);
                let bwd = emulate(&h, &format!("pez_{name}_bwd_{dtype}"), &args, &[&x, &w, &g], 1);
                check(&format!("{name} d={d} forward"), &fwd[0], &y, dtype);
                check(&format!("{name} d={d} input gradient"), &bwd[0], &dx[0], dtype);
            }
        }
    }
}

#[test]
fn the_cuda_rope_and_gated_activations_equal_the_cpu_kernels_under_the_emulator() {
    let Some(h) = harness() else { return };
    for dtype in ["f32", "bf16"] {
        let r = |shape: &[usize], seed| rounded(&random(shape, seed, DType::F32), dtype);
        // Rope on [2, 3 heads, 7 positions, 64]: rows cycle through the tables' positions.
        let (x, cos, sin, g) = (
            r(&[2, 3, 7, 64], 1),
            r(&[7, 64], 2),
            r(&[7, 64], 3),
            r(&[2, 3, 7, 64], 4),
        );
        let (y, dx) = reference(&[&x], &g, |t| kernels::rope(&t[0], &cos, &sin).unwrap());
        let args = ["42", "7", "64"].map(String::from);
        let fwd = emulate(&h, &format!("pez_rope_fwd_{dtype}"), &args, &[&x, &cos, &sin], 1);
        let bwd = emulate(&h, &format!("pez_rope_bwd_{dtype}"), &args, &[&g, &cos, &sin], 1);
        check("rope forward", &fwd[0], &y, dtype);
        check("rope input gradient", &bwd[0], &dx[0], dtype);
        // Gated activations over more values than one block (3 x 2 x 200 = 1,200), inputs spread over [-4, 4).
        let (a, b, g) = (
            r(&[3, 2, 200], 5).affine(4.0, 0.0).unwrap(),
            r(&[3, 2, 200], 6),
            r(&[3, 2, 200], 7),
        );
        let a = rounded(&a, dtype);
        for (gate, code) in [(kernels::Gate::Silu, "0"), (kernels::Gate::GeluTanh, "1")] {
            let (y, grads) = reference(&[&a, &b], &g, |t| kernels::gated(gate, &t[0], &t[1]).unwrap());
            let args = ["1200".to_string(), code.to_string()];
            let fwd = emulate(&h, &format!("pez_gated_fwd_{dtype}"), &args, &[&a, &b], 1);
            let bwd = emulate(&h, &format!("pez_gated_bwd_{dtype}"), &args, &[&a, &b, &g], 2);
            check(&format!("gated {code} forward"), &fwd[0], &y, dtype);
            check(&format!("gated {code} da"), &bwd[0], &grads[0], dtype);
            check(&format!("gated {code} db"), &bwd[1], &grads[1], dtype);
        }
    }
}

#[test]
fn the_cuda_masked_softmax_equals_the_cpu_kernel_under_the_emulator() {
    let Some(h) = harness() else { return };
    // Scores [2, 1 head, 3 queries, 1100 keys] (rows wider than a block) under a causal [3, 1100] mask, and under
    // a key-padding mask broadcast to every row.
    let (sq, sk) = (3, 1100);
    let causal: Vec<f32> = (0..sq * sk)
        .map(|i| if i % sk > 1095 + i / sk { MASKED as f32 } else { 0.0 })
        .collect();
    let causal = Tensor::from_vec(causal, (sq, sk), &candle_core::Device::Cpu).unwrap();
    let padding: Vec<f32> = (0..2 * sk)
        .map(|i| {
            if i % sk >= 1000 + 50 * (i / sk) {
                MASKED as f32
            } else {
                0.0
            }
        })
        .collect();
    let padding = Tensor::from_vec(padding, (2, 1, 1, sk), &candle_core::Device::Cpu).unwrap();
    for dtype in ["f32", "bf16"] {
        let r = |seed| {
            rounded(
                &random(&[2, 1, sq, sk], seed, DType::F32).affine(8.0, 0.0).unwrap(),
                dtype,
            )
        };
        let (z, g) = (r(1), r(2));
        for (what, mask) in [("causal", &causal), ("padding", &padding)] {
            let (p, dz) = reference(&[&z], &g, |t| {
                kernels::masked_softmax(&t[0], Some(mask), 0.125).unwrap()
            });
            // The mask as the op lays it out: [sq, sk] as it is, anything else broadcast to the scores' shape.
            let full = match mask.dims() {
                [_, _] => mask.clone(),
                _ => mask.broadcast_as(z.shape()).unwrap().contiguous().unwrap(),
            };
            let rows = full.elem_count() / sk;
            let args = [format!("{}", 2 * sq), sk.to_string(), rows.to_string(), "0.125".into()];
            let fwd = emulate(&h, &format!("pez_masked_softmax_fwd_{dtype}"), &args, &[&z, &full], 1);
            let pe = rounded(&p, dtype);
            let bwd = emulate(&h, &format!("pez_masked_softmax_bwd_{dtype}"), &args, &[&pe, &g], 1);
            check(&format!("masked softmax ({what}) forward"), &fwd[0], &p, dtype);
            // The bf16 backward reads p as the GPU stores it, rounded to bf16 (the reference's p is f32): one more
            // rounding's worth of tolerance there.
            let e = rel(&bwd[0], &dz[0]);
            eprintln!("masked softmax ({what}) input gradient {dtype}: {e:.1e}");
            assert!(
                e < 2.0 * tolerance(dtype),
                "masked softmax ({what}) input gradient {dtype}: {e}"
            );
        }
    }
}
