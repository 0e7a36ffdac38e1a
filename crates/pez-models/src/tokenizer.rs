//! Tokenizers: `tokenizer.json`, GPT-2 style `vocab.json` + `merges.txt`, and the BPE tokenizer that GGUF files
//! embed in their metadata.

use crate::weights::gguf_str;
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::Tokenizer;

/// `tokenizer.json`, else `vocab.json` + `merges.txt`, in a model directory.
pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
    let tj = dir.join("tokenizer.json");
    if tj.exists() {
        return Tokenizer::from_file(&tj).map_err(|e| anyhow::anyhow!("reading {}: {e}", tj.display()));
    }
    let (v, m) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if v.exists() && m.exists() {
        let bpe = BPE::from_file(&v.to_string_lossy(), &m.to_string_lossy())
            .build()
            .map_err(|e| anyhow::anyhow!("reading {} / {}: {e}", v.display(), m.display()))?;
        let mut t = Tokenizer::new(bpe);
        t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        t.with_decoder(Some(ByteLevel::default()));
        return Ok(t);
    }
    bail!("no tokenizer.json or vocab.json + merges.txt in {}", dir.display())
}

/// The byte-level BPE tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.model = gpt2`).
pub fn from_gguf(c: &gguf_file::Content) -> Result<Tokenizer> {
    let model = gguf_str(c, "tokenizer.ggml.model")?;
    if model != "gpt2" {
        bail!("GGUF tokenizer type `{model}` is not supported (only byte-level BPE, `gpt2`); pass a tokenizer.json");
    }
    let tokens = c.metadata.get("tokenizer.ggml.tokens").context("GGUF has no tokenizer.ggml.tokens")?.to_vec()?;
    let merges = c.metadata.get("tokenizer.ggml.merges").context("GGUF has no tokenizer.ggml.merges")?.to_vec()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| Ok((t.to_string()?.clone(), i as u32)))
        .collect::<Result<_>>()?;
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            let m = m.to_string()?;
            let (a, b) = m.split_once(' ').with_context(|| format!("bad GGUF merge `{m}`"))?;
            Ok((a.to_string(), b.to_string()))
        })
        .collect::<Result<_>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| anyhow::anyhow!("building BPE from GGUF: {e}"))?;
    let mut t = Tokenizer::new(bpe);
    // SmolLM2 ("smollm" pre-tokenizer) splits digits one by one before the GPT-2 byte-level split.
    let pre = gguf_str(c, "tokenizer.ggml.pre").unwrap_or_default();
    let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    if pre == "smollm" {
        t.with_pre_tokenizer(Some(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level,
        ])));
    } else {
        t.with_pre_tokenizer(Some(byte_level));
    }
    t.with_decoder(Some(ByteLevel::default()));
    // Special tokens (type 3 = control) are matched whole, never split by BPE.
    if let Some(types) = c.metadata.get("tokenizer.ggml.token_type") {
        let types = types.to_vec()?;
        let specials: Vec<tokenizers::AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, ty)| ty.to_i32().map(|x| x == 3).unwrap_or(false))
            .map(|(i, _)| Ok(tokenizers::AddedToken::from(tokens[i].to_string()?.clone(), true)))
            .collect::<Result<_>>()?;
        t.add_special_tokens(&specials);
    }
    Ok(t)
}

/// Token ids of `text` without special tokens.
pub fn encode(t: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(t.encode(text, false).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?.get_ids().to_vec())
}

pub fn decode(t: &Tokenizer, ids: &[u32]) -> Result<String> {
    t.decode(ids, false).map_err(|e| anyhow::anyhow!("decoding: {e}"))
}
