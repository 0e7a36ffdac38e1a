//! GFLOP/s of the products at the model's shapes (SmolLM2-135M: 400 packed tokens x d 576, MLP 1536; its LM head
//! at 16 read positions, vocabulary 49,152) and at 2048^3: f32 (gemm) and bf16 (packed weight, f32 accumulation).
//!
//!     cargo bench -p pez-nn --bench matmul [-- reps]
//!
//! `m x n x k` is `[m, k] @ [k, n]`; the right-hand side plays the frozen weight (packed once, as the model does).
//! Compare with PyTorch at the same shapes: `python scripts/torch_matmul.py`.

use pez_nn::matmul::bf16::{self, PackedB};
use pez_nn::matmul::{isa, mm};
use std::time::Instant;

fn main() {
    let reps: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    println!(
        "CPU products: f32 by gemm's dispatch, bf16 on `{}` ({} threads)",
        isa::chosen().name(),
        rayon::current_num_threads()
    );
    let shapes = [
        (400, 1536, 576),
        (400, 576, 1536),
        (400, 576, 576),
        (16, 49152, 576),
        (16, 576, 49152),
        (2048, 2048, 2048),
    ];
    println!(
        "{:>20} {:>12} {:>12} {:>7}",
        "m x n x k", "f32 GFLOP/s", "bf16 GFLOP/s", "ratio"
    );
    for (m, n, k) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let reps = if flops > 1e10 { 5 } else { reps };
        // The median of `reps` timed calls (this VM's speed drifts; the median is what a run sees most).
        let time = |f: &mut dyn FnMut()| {
            f(); // warm-up
            let mut t: Vec<f64> = (0..reps)
                .map(|_| {
                    let t0 = Instant::now();
                    f();
                    t0.elapsed().as_secs_f64()
                })
                .collect();
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        };
        let f32_s = time(&mut || mm(m, n, k, &mut c, &a, (k, 1), &b, (n, 1), false, true));
        let packed = PackedB::pack(k, n, &b, (n, 1));
        let bf16_s = time(&mut || bf16::gemm_packed(m, &mut c, n, &a, (k, 1), &packed, false, true));
        println!(
            "{:>20} {:>12.1} {:>12.1} {:>7.2}",
            format!("{m}x{n}x{k}"),
            flops / f32_s / 1e9,
            flops / bf16_s / 1e9,
            f32_s / bf16_s
        );
    }
}
