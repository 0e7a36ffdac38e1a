#!/usr/bin/env python3
"""PyTorch's matmul GFLOP/s at the shapes of `cargo bench -p pez-nn --bench matmul` (f32, and bf16 inputs as
oneDNN runs them), median of `reps` calls, on all of torch's threads.

    python scripts/torch_matmul.py [reps]      (needs torch)
"""
import statistics
import sys
import time

import torch

reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
shapes = [(400, 1536, 576), (400, 576, 1536), (400, 576, 576), (16, 49152, 576), (16, 576, 49152), (2048, 2048, 2048)]
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
print(f"{'m x n x k':>20} {'f32 GFLOP/s':>12} {'bf16 GFLOP/s':>12}")
for m, n, k in shapes:
    flops = 2.0 * m * n * k
    out = []
    for dt in (torch.float32, torch.bfloat16):
        a, b = torch.rand(m, k).to(dt) - 0.5, torch.rand(k, n).to(dt) - 0.5
        r = 5 if flops > 1e10 else reps
        a @ b  # warm-up
        t = []
        for _ in range(r):
            t0 = time.perf_counter()
            a @ b
            t.append(time.perf_counter() - t0)
        out.append(flops / statistics.median(t) / 1e9)
    print(f"{f'{m}x{n}x{k}':>20} {out[0]:>12.1f} {out[1]:>12.1f}")
