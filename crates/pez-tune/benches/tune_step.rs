//! Seconds per PEZ step (label CE + fluency, forward + backward to the prompt, projection, Adafactor) on SST-2
//! train batches.    cargo bench -p pez-tune --bench tune_step -- [model] [batch] [steps] [--dtype f32|bf16|auto]
//! The PyTorch yardstick for the same step is scripts/torch_pez_step.py.

use pez_classify::Classifier;
use pez_core::{Method, Optimizer, OptimizerKind, Pez, Projector};
use pez_models::load_lm;
use pez_tasks::TaskSpec;
use pez_tune::BatchObjective;
use std::time::Instant;

#[global_allocator]
static GLOBAL: pez_nn::alloc::Allocator = pez_nn::alloc::Allocator;

fn main() -> anyhow::Result<()> {
    pez_nn::alloc::keep_freed_memory();
    let Args {
        model,
        batch: bs,
        steps,
        dtype,
        verbose,
        device,
    } = Args::parse()?;
    let device = device.open()?;
    let dtype = dtype.resolve_on(&device);
    let lm = load_lm(&model, dtype.candle(), &device)?;
    let task = TaskSpec::resolve("sst2")?;
    let clf = Classifier::new(&lm, &task.prompt, 10)?;
    let train = task.load("train", None)?.examples;
    let allowed = pez_hub::tokenizer::token_set(&lm.tokenizer, lm.model.info().vocab_size, Default::default());
    let init = lm
        .model
        .embed_ids(&clf.verbalizer_ids.iter().cycle().take(10).copied().collect::<Vec<_>>())?;
    let mut pez = Pez::new(
        Method::Pez,
        Projector::new(lm.model.token_embeddings(), &allowed)?,
        &init,
        Optimizer::new(OptimizerKind::Adafactor, 0.0),
        steps,
        0.3,
        0,
    )?;
    let mut times = vec![];
    let mut tokens = 0;
    for s in 0..steps + 1 {
        // Fixed, spread-out batches (the same ones every run) so timings compare.
        let batch: Vec<(Vec<u32>, usize)> = (0..bs)
            .map(|i| {
                let e = &train[(s * bs + i) * 4099 % train.len()];
                (clf.encode(&e.text).unwrap(), e.label)
            })
            .collect();
        let batch_tokens = batch.iter().map(|b| b.0.len()).sum::<usize>();
        tokens += batch_tokens + 10 * bs;
        let t = Instant::now();
        pez.step(&mut BatchObjective {
            clf: &clf,
            batch,
            fluency: 0.003,
            forward_s: None,
        })?;
        let dt = t.elapsed().as_secs_f64();
        if verbose {
            eprintln!("step {s}: {batch_tokens} row tokens, {dt:.3} s");
        }
        if s > 0 {
            times.push(dt); // step 0 is warm-up
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "model {model}, dtype {}, batch {bs}, prompt 10, fluency 0.003, {} timed steps, {:.1} tokens per row",
        dtype.resolve(),
        times.len(),
        tokens as f64 / ((steps + 1) * bs) as f64
    );
    println!(
        "seconds per PEZ step: mean {mean:.3}, median {median:.3}, min {:.3}, max {:.3}",
        times.iter().cloned().fold(f64::MAX, f64::min),
        times.iter().cloned().fold(0.0, f64::max)
    );
    Ok(())
}

struct Args {
    model: String,
    batch: usize,
    steps: usize,
    dtype: pez_nn::Dtype,
    device: pez_nn::DeviceArg,
    /// Every step's time and tokens.
    verbose: bool,
}

impl Args {
    /// `[model] [batch] [steps] [--dtype f32|bf16|auto] [--device cpu|cuda[:N]] [--verbose]` (cargo bench also
    /// passes `--bench`). The dtype's default is f32, the figures before the choice existed.
    fn parse() -> anyhow::Result<Self> {
        let mut a = pico_args::Arguments::from_env();
        let _ = a.contains("--bench");
        let (verbose, dtype, device) = (
            a.contains("--verbose"),
            a.opt_value_from_str("--dtype")?.unwrap_or(pez_nn::Dtype::F32),
            a.opt_value_from_str("--device")?.unwrap_or_default(),
        );
        let args = Self {
            model: a.opt_free_from_str()?.unwrap_or_else(|| "smollm2-135m".into()),
            batch: a.opt_free_from_str()?.unwrap_or(16),
            steps: a.opt_free_from_str()?.unwrap_or(10),
            dtype,
            device,
            verbose,
        };
        let rest = a.finish();
        anyhow::ensure!(rest.is_empty(), "unexpected arguments: {rest:?}");
        Ok(args)
    }
}
