//! Forward and forward+backward-to-inputs time of a language model at batch x tokens, and achieved GFLOP/s.
//!
//!     cargo bench -p pez-models --bench lm_step -- [model] [batch] [tokens] [reps] [--forward-only] [--dtype D]
//!
//! `--forward-only` times inference alone (inputs that track no gradient: the tiled attention that keeps no
//! probabilities) and prints the process's peak resident size, e.g. `-- smollm2-135m 1 8192 1 --forward-only`.
//!
//! The loss reads the next-token logits at the last position only (as the PEZ label loss does), so the LM head
//! runs on `batch` rows, not `batch x tokens`.

use candle_core::{DType, Var};
use pez_models::load_lm;
use pez_nn::ops;
use std::time::Instant;

#[global_allocator]
static GLOBAL: pez_nn::alloc::Allocator = pez_nn::alloc::Allocator;

fn main() -> anyhow::Result<()> {
    pez_nn::alloc::keep_freed_memory();
    let Args {
        model,
        batch: b,
        tokens: s,
        reps,
        forward_only,
        dtype,
        device,
    } = Args::parse()?;
    let device = device.open()?;
    let dtype = dtype.resolve_on(&device);
    let lm = load_lm(&model, dtype.candle(), &device)?;
    let m = lm.model.as_ref();
    let info = m.info().clone();
    let ids: Vec<u32> = (0..b * s).map(|i| (i * 7919 % 5000) as u32 + 100).collect();
    let x = m.embed_ids(&ids)?.reshape((b, s, info.hidden_size))?;
    let lengths = vec![s; b];
    let target = candle_core::Tensor::zeros((b, info.vocab_size), DType::F32, &device)?;

    // FLOPs: 2 per multiply-add of every weight matrix per token, attention scores and mixing, head at b rows.
    let weights = info.block_matmul_params;
    let d = info.hidden_size;
    let layers = info.num_layers;
    let fwd_flops = 2.0 * weights as f64 * (b * s) as f64
        + 2.0 * 2.0 * (b * s * s) as f64 * d as f64 * layers as f64 / 2.0 // causal: half the score matrix
        + 2.0 * (b * info.vocab_size * d) as f64;
    let header = format!(
        "model {model} ({}, {}), batch {b} x {s} tokens, {reps} reps, {} threads",
        info.arch,
        dtype.resolve(),
        rayon_threads()
    );

    let var = Var::from_tensor(&x)?;
    let forward = || -> anyhow::Result<()> {
        let l = m.next_token_logits(&x, &lengths)?;
        let _ = ops::log_softmax_last(&l)?.mul(&target)?.sum_all()?.to_scalar::<f32>()?;
        Ok(())
    };
    let forward_backward = || -> anyhow::Result<()> {
        let l = m.next_token_logits(var.as_tensor(), &lengths)?;
        let loss = ops::log_softmax_last(&l)?.mul(&target)?.sum_all()?;
        let g = loss.backward()?;
        g.get(var.as_tensor()).expect("input gradient");
        Ok(())
    };
    if forward_only {
        let rss0 = peak_rss_mib();
        let times = (0..reps)
            .map(|_| secs(&forward))
            .collect::<anyhow::Result<Vec<f64>>>()?;
        let fwd = times.iter().sum::<f64>() / reps as f64;
        println!("{header}");
        println!(
            "forward (inference)  {fwd:8.3} s   {:6.1} GFLOP/s   peak RSS {:.0} MiB (after loading {:.0} MiB)",
            fwd_flops / fwd / 1e9,
            peak_rss_mib(),
            rss0
        );
        return Ok(());
    }
    forward()?; // warm-up
    forward_backward()?;
    // Each rep times a forward and a forward+backward back to back, so a slow stretch of the (shared, virtual)
    // machine hits both; the ratio is reported per rep (median and range) as well as from the means.
    let (mut fwds, mut fbs, mut ratios) = (vec![], vec![], vec![]);
    for _ in 0..reps {
        let (f, fb) = (secs(&forward)?, secs(&forward_backward)?);
        fwds.push(f);
        fbs.push(fb);
        ratios.push((fb - f) / f);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (fwd, bwd) = (mean(&fwds), mean(&fbs));
    ratios.sort_by(f64::total_cmp);
    println!("{header}");
    println!(
        "forward                     {fwd:8.3} s   {:6.1} GFLOP/s",
        fwd_flops / fwd / 1e9
    );
    // The input-only backward does about the forward's FLOPs again (no weight gradients).
    println!(
        "forward+backward-to-inputs  {:8.3} s   {:6.1} GFLOP/s (counting 2x forward FLOPs)",
        bwd,
        2.0 * fwd_flops / bwd / 1e9
    );
    println!(
        "backward / forward          {:8.2}x  (goal <= 1.2x); per rep: median {:.2}x, range {:.2}x - {:.2}x",
        (bwd - fwd) / fwd,
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    Ok(())
}

struct Args {
    model: String,
    batch: usize,
    tokens: usize,
    reps: usize,
    /// Time inference alone.
    forward_only: bool,
    dtype: pez_nn::Dtype,
    device: pez_nn::DeviceArg,
}

impl Args {
    /// `[model] [batch] [tokens] [reps] [--forward-only] [--dtype f32|bf16|auto] [--device cpu|cuda[:N]]` (cargo
    /// bench also passes `--bench`).
    fn parse() -> anyhow::Result<Self> {
        let mut a = pico_args::Arguments::from_env();
        let _ = a.contains("--bench");
        let (forward_only, dtype, device) = (
            a.contains("--forward-only"),
            a.opt_value_from_str("--dtype")?.unwrap_or(pez_nn::Dtype::F32),
            a.opt_value_from_str("--device")?.unwrap_or_default(),
        );
        let args = Self {
            model: a.opt_free_from_str()?.unwrap_or_else(|| "smollm2-135m".into()),
            batch: a.opt_free_from_str()?.unwrap_or(16),
            tokens: a.opt_free_from_str()?.unwrap_or(64),
            reps: a.opt_free_from_str()?.unwrap_or(3),
            forward_only,
            dtype,
            device,
        };
        let rest = a.finish();
        anyhow::ensure!(rest.is_empty(), "unexpected arguments: {rest:?}");
        Ok(args)
    }
}

/// Seconds `f` takes.
fn secs(f: &dyn Fn() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The process's peak resident size so far (VmHWM), in MiB; 0 where /proc is missing.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}
