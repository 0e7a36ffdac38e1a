//! Tokenizers: `tokenizer.json`, GPT-2 style `vocab.json` + `merges.txt`, and the BPE tokenizer that GGUF files
//! embed in their metadata.

use crate::gguf::gguf_str;
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
        let mut t = Tokenizer::from_file(&tj).map_err(|e| anyhow::anyhow!("reading {}: {e}", tj.display()))?;
        // Some files (sentence-transformers) pad or truncate every input to a fixed length; we never want that.
        t.with_padding(None);
        t.with_truncation(None).map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(t);
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

/// The tokenizer stored in a GGUF file's metadata: byte-level BPE (`tokenizer.ggml.model = gpt2`) or
/// SentencePiece BPE (`llama`, e.g. Gemma).
pub fn from_gguf(c: &gguf_file::Content) -> Result<Tokenizer> {
    let model = gguf_str(c, "tokenizer.ggml.model")?;
    match model.as_str() {
        "gpt2" => byte_level_from_gguf(c),
        "llama" => sentencepiece_from_gguf(c),
        other => bail!("GGUF tokenizer type `{other}` is not supported (gpt2, llama); pass a tokenizer.json"),
    }
}

/// Whether the GGUF tokenizer expects a BOS token in front of every input (`tokenizer.ggml.add_bos_token`).
pub fn gguf_bos(c: &gguf_file::Content) -> Option<u32> {
    let add = c
        .metadata
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    let id = c
        .metadata
        .get("tokenizer.ggml.bos_token_id")
        .and_then(|v| v.to_u32().ok());
    if add {
        id
    } else {
        None
    }
}

fn strings(c: &gguf_file::Content, key: &str) -> Result<Vec<String>> {
    c.metadata
        .get(key)
        .with_context(|| format!("GGUF has no {key}"))?
        .to_vec()?
        .iter()
        .map(|v| Ok(v.to_string()?.clone()))
        .collect()
}

/// Control tokens (type 3) are matched whole and never split.
fn add_control_tokens(t: &mut Tokenizer, c: &gguf_file::Content, tokens: &[String]) -> Result<()> {
    if let Some(types) = c.metadata.get("tokenizer.ggml.token_type") {
        let specials: Vec<tokenizers::AddedToken> = types
            .to_vec()?
            .iter()
            .enumerate()
            .filter(|(_, ty)| ty.to_i32().map(|x| x == 3).unwrap_or(false))
            .map(|(i, _)| tokenizers::AddedToken::from(tokens[i].clone(), true))
            .collect();
        t.add_special_tokens(&specials);
    }
    Ok(())
}

/// SentencePiece BPE from tokens + scores, as transformers converts GGUF files without merges: a merge for every
/// split of a token into two tokens, ranked by the merged token's score. Spaces become `▁`; unknown bytes fall
/// back to `<0xNN>` tokens.
fn sentencepiece_from_gguf(c: &gguf_file::Content) -> Result<Tokenizer> {
    use tokenizers::decoders::{byte_fallback::ByteFallback, fuse::Fuse, sequence::Sequence as DecSeq, DecoderWrapper};
    use tokenizers::normalizers::{replace::Replace, NormalizerWrapper};
    let tokens = strings(c, "tokenizer.ggml.tokens")?;
    let scores: Vec<f32> = c
        .metadata
        .get("tokenizer.ggml.scores")
        .context("GGUF has no tokenizer.ggml.scores")?
        .to_vec()?
        .iter()
        .map(|v| Ok(v.to_f32()?))
        .collect::<Result<_>>()?;
    let ids: std::collections::HashMap<&str, u32> =
        tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i as u32)).collect();
    let mut merges: Vec<(String, String, f32, u32, u32)> = Vec::new();
    for (t, &score) in tokens.iter().zip(&scores) {
        let mut local = Vec::new();
        for (k, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(k);
            if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                local.push((l.to_string(), r.to_string(), score, li, ri));
            }
        }
        // transformers orders a token's candidate splits by the ids of their pieces, descending.
        local.sort_by_key(|t| std::cmp::Reverse((t.3, t.4)));
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.total_cmp(&a.2)); // stable: ties keep the order above
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let unk = c
        .metadata
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(|v| v.to_u32().ok())
        .map(|i| tokens[i as usize].clone());
    let mut b = BPE::builder()
        .vocab_and_merges(vocab, merges.into_iter().map(|m| (m.0, m.1)).collect())
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk {
        b = b.unk_token(u);
    }
    let bpe = b
        .build()
        .map_err(|e| anyhow::anyhow!("building SentencePiece BPE from GGUF: {e}"))?;
    let mut t = Tokenizer::new(bpe);
    let prefix = c
        .metadata
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(true);
    let replace = NormalizerWrapper::Replace(Replace::new(" ", "▁").map_err(|e| anyhow::anyhow!("{e}"))?);
    if prefix {
        t.with_normalizer(Some(tokenizers::normalizers::Sequence::new(vec![
            NormalizerWrapper::Prepend(tokenizers::normalizers::prepend::Prepend::new("▁".into())),
            replace,
        ])));
    } else {
        t.with_normalizer(Some(replace));
    }
    t.with_decoder(Some(DecSeq::new(vec![
        DecoderWrapper::Replace(Replace::new("▁", " ").map_err(|e| anyhow::anyhow!("{e}"))?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ])));
    add_control_tokens(&mut t, c, &tokens)?;
    Ok(t)
}

fn byte_level_from_gguf(c: &gguf_file::Content) -> Result<Tokenizer> {
    let tokens = strings(c, "tokenizer.ggml.tokens")?;
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges: Vec<(String, String)> = strings(c, "tokenizer.ggml.merges")?
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .with_context(|| format!("bad GGUF merge `{m}`"))
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
    add_control_tokens(&mut t, c, &tokens)?;
    Ok(t)
}

/// Token ids of `text` without special tokens.
pub fn encode(t: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(t.encode(text, false)
        .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?
        .get_ids()
        .to_vec())
}

pub fn decode(t: &Tokenizer, ids: &[u32]) -> Result<String> {
    t.decode(ids, false).map_err(|e| anyhow::anyhow!("decoding: {e}"))
}

/// Which tokens a prompt may be made of (`--tokens`): `all` readable ones; `printable`: also no control
/// characters (newlines, tabs), no token that is only whitespace, no byte-fallback piece (`<0x0A>`); `words`:
/// printable tokens that are a space-led run of letters (` movie`, ` Très`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum TokenSet {
    /// What runs written before the choice existed used.
    #[default]
    All,
    Printable,
    Words,
}

/// The tokens an inverted prompt may use (`pez invert`, `pez distill`): readable, not special or unused (`[...]`,
/// `<...>`), not whitespace only, and none whose text contains a blocked substring (case-insensitive), the paper's
/// safety blocklist.
pub fn unblocked_tokens(tok: &Tokenizer, vocab: usize, block: &[String]) -> Vec<bool> {
    let block: Vec<String> = block
        .iter()
        .map(|b| b.to_lowercase())
        .filter(|b| !b.is_empty())
        .collect();
    let readable = readable_tokens(tok, vocab);
    (0..vocab as u32)
        .map(|i| {
            let Some(raw) = tok.id_to_token(i) else { return false };
            let text = tok.decode(&[i], false).unwrap_or_default().to_lowercase();
            let raw_l = raw.to_lowercase();
            let special = raw.starts_with('[') && raw.ends_with(']') || raw.starts_with('<') && raw.ends_with('>');
            readable[i as usize]
                && !special
                && !text.trim().is_empty()
                && !block
                    .iter()
                    .any(|b| text.contains(b.as_str()) || raw_l.contains(b.as_str()))
        })
        .collect()
}

/// The ids of `set` among the first `vocab` (see `TokenSet`; always within `readable_tokens`).
pub fn token_set(tok: &Tokenizer, vocab: usize, set: TokenSet) -> Vec<bool> {
    let mut allowed = readable_tokens(tok, vocab);
    if set == TokenSet::All {
        return allowed;
    }
    for (i, a) in allowed.iter_mut().enumerate().filter(|(_, a)| **a) {
        let piece = tok.id_to_token(i as u32).unwrap_or_default();
        let text = tok.decode(&[i as u32], false).unwrap_or_default();
        let byte_piece = piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>');
        let printable = !byte_piece && !text.trim().is_empty() && !text.chars().any(char::is_control);
        // The space is the piece's own marker (byte-level BPE's `Ġ`, SentencePiece's `▁`): a decoder may drop it
        // from a lone first token.
        let word = || {
            let rest = piece.strip_prefix('Ġ').or_else(|| piece.strip_prefix('▁'));
            rest.is_some() && {
                let w = text.trim_start();
                !w.is_empty() && w.chars().all(char::is_alphabetic)
            }
        };
        *a = printable && (set == TokenSet::Printable || word());
    }
    allowed
}

/// Token ids a prompt may use: not special, inside the tokenizer's vocabulary (embedding matrices may have padding
/// rows past it), and decoding on their own to text without U+FFFD (no partial UTF-8 byte pieces), so a prompt's
/// text re-tokenizes to itself.
pub fn readable_tokens(tok: &Tokenizer, vocab: usize) -> Vec<bool> {
    let mut allowed: Vec<bool> = (0..vocab as u32)
        .map(|i| {
            tok.decode(&[i], false)
                .map(|s| !s.contains('\u{FFFD}'))
                .unwrap_or(false)
        })
        .collect();
    for (id, t) in tok.get_added_tokens_decoder() {
        if t.special && (id as usize) < vocab {
            allowed[id as usize] = false;
        }
    }
    for a in allowed.iter_mut().skip(tok.get_vocab_size(true)) {
        *a = false;
    }
    allowed
}
