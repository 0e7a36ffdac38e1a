use anyhow::{bail, Result};
use pez_hub::tokenizer;
use pez_models::load_lm;
use pez_nn::ops;

#[derive(clap::Args)]
pub struct Args {
    /// Model name (smollm2-135m, gpt2-large, ...), a GGUF file, or a Hugging Face model directory.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// The text whose continuation is scored (no special tokens are added).
    #[arg(long)]
    text: String,
    /// How many tokens to print.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    placement: crate::args::Placement,
}

pub fn run(a: Args) -> Result<()> {
    let (device, dtype) = a.placement.open()?;
    let lm = load_lm(&a.model, dtype.candle(), &device)?;
    // Models that expect a BOS token (Gemma) get it, as their tokenizer would add it.
    let ids: Vec<u32> = lm
        .bos
        .into_iter()
        .chain(tokenizer::encode(&lm.tokenizer, &a.text)?)
        .collect();
    if ids.is_empty() {
        bail!("--text is empty after tokenization");
    }
    let n = ids.len().min(lm.model.info().max_positions);
    let ids = &ids[ids.len() - n..];
    let emb = lm.model.embed_ids(ids)?.unsqueeze(0)?;
    let lp = ops::log_softmax_last(&lm.model.next_token_logits(&emb, &[n])?)?
        .get(0)?
        .to_vec1::<f32>()?;
    let mut order: Vec<usize> = (0..lp.len()).collect();
    order.sort_by(|&x, &y| lp[y].total_cmp(&lp[x]));
    let top: Vec<serde_json::Value> = order
        .iter()
        .take(a.top)
        .map(|&i| {
            let text = tokenizer::decode(&lm.tokenizer, &[i as u32]).unwrap_or_default();
            serde_json::json!({"id": i, "token": text, "logprob": lp[i]})
        })
        .collect();
    if a.json {
        let out = serde_json::json!({"model": lm.source, "text": a.text, "input_ids": ids, "top": top, "dtype": dtype});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{:>8}  {:>10}  token", "id", "logprob");
        for t in &top {
            println!(
                "{:>8}  {:>10.4}  {:?}",
                t["id"],
                t["logprob"].as_f64().unwrap_or(0.0),
                t["token"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}
