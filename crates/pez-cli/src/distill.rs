use anyhow::{bail, Result};
use pez_invert::{invert, score_ids, InvertConfig};
use rand::{Rng, SeedableRng};

#[derive(clap::Args)]
pub struct Args {
    /// The long prompt to shorten.
    prompt: String,
    /// Length of the short prompt as a fraction of the long prompt's tokens.
    #[arg(long, default_value_t = 0.5)]
    ratio: f64,
    /// Text encoder: minilm-l6 (default), a CLIP model name or directory.
    #[arg(long, default_value = "minilm-l6")]
    model: String,
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Substrings no chosen token may contain (comma separated).
    #[arg(long, value_delimiter = ',')]
    block: Vec<String>,
    /// Tokens the short prompt may use: the whole vocabulary (the paper), or only the long prompt's own tokens.
    #[arg(long, value_enum, default_value_t = Vocab::All)]
    vocab: Vocab,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum Vocab {
    All,
    Prompt,
}

pub fn run(a: Args) -> Result<()> {
    if !(a.ratio > 0.0 && a.ratio <= 1.0) {
        bail!("--ratio must be in (0, 1], got {}", a.ratio);
    }
    let (enc, tok) = pez_invert::encoder::load(&a.model)?;
    let ids = tok.encode(a.prompt.as_str(), false).map_err(|e| anyhow::anyhow!("{e}"))?.get_ids().to_vec();
    if ids.is_empty() {
        bail!("the prompt is empty");
    }
    let len = ((ids.len() as f64 * a.ratio).round() as usize).max(1);
    let emb = enc.token_embeddings();
    let target = enc.features(&emb.index_select(&candle_core::Tensor::new(ids.as_slice(), emb.device())?, 0)?)?;
    let cfg = InvertConfig { prompt_len: len, steps: a.steps, lr: a.lr, weight_decay: a.weight_decay, seed: a.seed, block: a.block.clone(),
        only: (a.vocab == Vocab::Prompt).then(|| ids.clone()) };
    let best = invert(enc.as_ref(), &tok, &target, &cfg, |_, _| {})?;
    // Baselines: the long prompt cut to the same length, and the best of as many random prompts as PEZ steps,
    // drawn from the tokens PEZ may use.
    let truncated = score_ids(enc.as_ref(), &ids[..len], &target)?;
    let pool = &best.pool;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed ^ 0xBA5E);
    let mut random_best = f64::MIN;
    for _ in 0..a.steps {
        let r: Vec<u32> = (0..len).map(|_| pool[rng.gen_range(0..pool.len())]).collect();
        random_best = random_best.max(score_ids(enc.as_ref(), &r, &target)?);
    }
    let out = serde_json::json!({
        "model": a.model, "original": a.prompt, "original_tokens": ids.len(), "ratio": a.ratio, "length": len,
        "prompt": best.prompt, "token_ids": best.token_ids, "cosine": best.cosine, "best_step": best.step,
        "truncated": tok.decode(&ids[..len], true).unwrap_or_default(), "truncated_cosine": truncated,
        "random_best_cosine": random_best, "random_prompts": a.steps,
        "vocab": if a.vocab == Vocab::Prompt { "prompt" } else { "all" }, "config": cfg,
    });
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("original ({} tokens): {}", ids.len(), a.prompt);
        println!("pez      ({len} tokens): {}  cosine {:.4}", best.prompt, best.cosine);
        println!("truncated:           {}  cosine {truncated:.4}", out["truncated"].as_str().unwrap_or(""));
        println!("best of {} random:  cosine {random_best:.4}", a.steps);
    }
    Ok(())
}
