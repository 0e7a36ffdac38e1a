use anyhow::{bail, Result};
use pez_invert::encoder::ClipModel;
use pez_invert::{invert, score_ids, InvertConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InvertArgs {
    /// One image (a caption-like prompt) or several (their shared style).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// A CLIP model: openclip-vit-h-14, clip-vit-l-14, clip-vit-b-32, or a Hugging Face CLIP directory.
    #[arg(long, default_value = "openclip-vit-h-14")]
    model: String,
    #[arg(long, default_value_t = 16)]
    prompt_len: usize,
    #[arg(long, default_value_t = 3000)]
    steps: usize,
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Substrings no chosen token may contain (comma separated).
    #[arg(long, value_delimiter = ',')]
    block: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for the JSON record (default: print only).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    placement: crate::args::Placement,
}

pub fn run_invert(a: InvertArgs) -> Result<()> {
    if a.prompt_len == 0 || a.steps == 0 {
        bail!("--prompt-len and --steps must be positive");
    }
    let m = ClipModel::load(&a.model, a.placement.dtype(), &a.placement.device.open()?)?;
    let targets = m.image_features(&a.images)?;
    let cfg = InvertConfig {
        prompt_len: a.prompt_len,
        steps: a.steps,
        lr: a.lr,
        weight_decay: a.weight_decay,
        seed: a.seed,
        block: a.block.clone(),
        only: None,
    };
    let mut progress = pez_progress::Progress::new("invert", "steps", a.steps as u64);
    let best = invert(&m.text, &m.tokenizer, &targets, &cfg, |_, c| {
        progress.set_message(format!("best cosine {c:.4}"));
        progress.inc(1);
    })?;
    progress.finish();
    let rec = serde_json::json!({"model": a.model, "images": a.images, "prompt": best.prompt, "token_ids": best.token_ids,
                                 "cosine": best.cosine, "best_step": best.step, "config": cfg});
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("inversion.json"), serde_json::to_string_pretty(&rec)?)?;
    }
    println!("{}", serde_json::to_string_pretty(&rec)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct ScoreArgs {
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[arg(long, default_value = "openclip-vit-h-14")]
    model: String,
    /// The prompt to score (any text: a learned prompt, a concatenation, a hand-written one).
    #[arg(long)]
    text: String,
    #[command(flatten)]
    placement: crate::args::Placement,
}

/// Mean cosine between a prompt's text features and each image's features.
pub fn run_score(a: ScoreArgs) -> Result<()> {
    let m = ClipModel::load(&a.model, a.placement.dtype(), &a.placement.device.open()?)?;
    let targets = m.image_features(&a.images)?;
    let ids = m
        .tokenizer
        .encode(a.text.as_str(), false)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .get_ids()
        .to_vec();
    let cos = score_ids(&m.text, &ids, &targets)?;
    println!(
        "{}",
        serde_json::json!({"model": a.model, "text": a.text, "images": a.images, "cosine": cos})
    );
    Ok(())
}
