use anyhow::Result;
use pez_invert::InvertConfig;

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
    #[command(flatten)]
    placement: crate::args::Placement,
}

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum Vocab {
    All,
    Prompt,
}

pub fn run(a: Args) -> Result<()> {
    let (enc, tok) = pez_invert::encoder::load(&a.model, a.placement.dtype(), &a.placement.device.open()?)?;
    let cfg = InvertConfig {
        prompt_len: 0,
        steps: a.steps,
        lr: a.lr,
        weight_decay: a.weight_decay,
        seed: a.seed,
        block: a.block.clone(),
        only: None,
    };
    let mut progress = pez_progress::Progress::new("distill", "steps", a.steps as u64);
    let d = pez_invert::distill::distill(
        enc.as_ref(),
        &tok,
        &a.prompt,
        a.ratio,
        a.vocab == Vocab::Prompt,
        cfg,
        |_, c| {
            progress.set_message(format!("best cosine {c:.4}"));
            progress.inc(1);
        },
    )?;
    progress.finish();
    if a.json {
        let mut out = serde_json::to_value(&d)?;
        let extra = serde_json::json!({"model": a.model, "original": a.prompt, "ratio": a.ratio,
                                       "vocab": if a.vocab == Vocab::Prompt { "prompt" } else { "all" }});
        out.as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("original ({} tokens): {}", d.original_tokens, a.prompt);
        println!("pez      ({} tokens): {}  cosine {:.4}", d.length, d.prompt, d.cosine);
        println!("truncated:           {}  cosine {:.4}", d.truncated, d.truncated_cosine);
        println!(
            "best of {} random:  cosine {:.4}",
            d.random_prompts, d.random_best_cosine
        );
    }
    Ok(())
}
