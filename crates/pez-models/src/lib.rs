//! Differentiable forward passes that start from input embeddings, with the loaders and tokenizers they need.
//!
//! Every model's `forward` takes rows of its own token-embedding matrix (`[batch, seq, d]`, right-padded), so
//! PEZ can project a soft prompt onto that matrix and differentiate with respect to the projected rows.
//! Anything a model does to those rows (Gemma's sqrt(d) scale, positions) happens inside.

//! The four causal decoders share `decoder` (a forward pass after a cached prefix, self-attention); `load` turns
//! a name, a directory or a GGUF file into a model with its tokenizer (files found by `pez_hub`). The maths of
//! every op is `pez_nn`'s.

pub mod bert;
pub mod clip;
pub mod decoder;
pub mod gemma3;
pub mod gpt2;
pub mod llama;
pub mod load;
pub mod opt;
pub mod t5;
pub mod testing;

use anyhow::Result;
use candle_core::Tensor;
use pez_nn::{ops, Packed};

pub use load::{load_lm, LoadedLm};

/// What callers need to know about a language model.
#[derive(Debug, Clone)]
pub struct LmInfo {
    pub arch: String,
    pub vocab_size: usize,
    /// Width of the token embeddings (the space PEZ projects in).
    pub hidden_size: usize,
    pub max_positions: usize,
    pub num_layers: usize,
    /// Elements of the weight matrices every token passes through (all blocks, no embeddings or head): the
    /// forward pass costs about 2 FLOPs per element per token, plus attention.
    pub block_matmul_params: usize,
}

/// Total elements of some weight matrices.
pub fn count_params<'a>(ts: impl IntoIterator<Item = &'a Tensor>) -> usize {
    ts.into_iter().map(|t| t.elem_count()).sum()
}

/// A language model that reads input embeddings.
pub trait LanguageModel: Send + Sync {
    fn info(&self) -> &LmInfo;

    /// The token embedding matrix `[vocab, d]`; inputs to `hidden_states` are rows of it.
    fn token_embeddings(&self) -> &Tensor;

    /// Final hidden states `[b, s, d]` for right-padded `embeds: [b, s, d]`; row `i` has `lengths[i]` real tokens.
    /// Causal models ignore the padding (it sits after every real token); encoders mask it.
    fn hidden_states(&self, embeds: &Tensor, lengths: &[usize]) -> Result<Tensor>;

    /// Vocabulary logits for hidden states `[.., d] -> [.., vocab]`, in f32 when the model computes in bf16
    /// (`pez_nn::dtype::widened`: losses and scores read them there). Kept apart from `hidden_states` so the
    /// (large) head is evaluated only at the positions a loss reads.
    fn lm_head(&self, hidden: &Tensor) -> Result<Tensor>;

    /// Logits `[b, vocab]` of the token that follows each row's last real token.
    fn next_token_logits(&self, embeds: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let h = self.hidden_states(embeds, lengths)?;
        let last: Vec<usize> = lengths.iter().map(|&l| l - 1).collect();
        self.lm_head(&ops::gather_rows(&h, &last)?)
    }

    /// The model as a causal decoder that can continue from cached keys and values, if it is one (T5 is not).
    fn as_decoder(&self) -> Option<&dyn CausalDecoder> {
        None
    }

    /// Embedding rows for token ids: `[n] -> [n, d]`.
    fn embed_ids(&self, ids: &[u32]) -> Result<Tensor> {
        let e = self.token_embeddings();
        let idx = Tensor::new(ids, e.device())?;
        Ok(e.index_select(&idx, 0)?)
    }
}

/// A causal decoder (GPT-2, OPT, Llama, Gemma 3): what each one defines; `LanguageModel` follows from it.
pub trait CausalDecoder: Send + Sync {
    fn info(&self) -> &LmInfo;
    fn token_embeddings(&self) -> &Tensor;
    /// The LM head `[vocab, d]` (the token embeddings when tied).
    fn head(&self) -> &pez_nn::Linear;

    /// Hidden states of rows that continue `past` (keys and values of earlier positions, batch 1, shared by every
    /// row), and the cache extended by these tokens. `embeds` is `[b, s, d]`, or with `packed` `[1, T, d]` holding
    /// several rows without padding (see `Packed`). With `b = 1` and no packing the returned cache can be
    /// continued again.
    ///
    /// A learned prompt is the same prefix in every row: its keys and values are computed once and reused,
    /// and gradients still flow back through them to the prompt.
    fn forward_after(
        &self,
        embeds: &Tensor,
        past: Option<&KvCache>,
        packed: Option<&Packed>,
    ) -> Result<(Tensor, KvCache)>;
}

impl<T: CausalDecoder> LanguageModel for T {
    fn info(&self) -> &LmInfo {
        CausalDecoder::info(self)
    }
    fn token_embeddings(&self) -> &Tensor {
        CausalDecoder::token_embeddings(self)
    }
    /// Causal models ignore the padding: it sits after every real token.
    fn hidden_states(&self, embeds: &Tensor, _lengths: &[usize]) -> Result<Tensor> {
        Ok(self.forward_after(embeds, None, None)?.0)
    }
    fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(pez_nn::dtype::widened(&self.head().forward(hidden)?)?)
    }
    fn as_decoder(&self) -> Option<&dyn CausalDecoder> {
        Some(self)
    }
}

/// Keys and values of every attention layer for the positions seen so far: one `(k, v)` per layer, each
/// `[1, kv_heads, len, head_dim]` (keys already rotated where the model uses rotary positions).
#[derive(Clone)]
pub struct KvCache {
    pub len: usize,
    pub layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    /// The `(k, v)` of layer `i`, or `None` for an empty cache.
    pub fn layer(past: Option<&KvCache>, i: usize) -> (Option<&Tensor>, Option<&Tensor>) {
        match past {
            Some(c) => (Some(&c.layers[i].0), Some(&c.layers[i].1)),
            None => (None, None),
        }
    }
    pub fn len_of(past: Option<&KvCache>) -> usize {
        past.map_or(0, |c| c.len)
    }
}

/// Right-pads rows of token ids to one length and embeds them: `([b, s, d], lengths)`.
pub fn embed_batch(model: &dyn LanguageModel, rows: &[Vec<u32>]) -> Result<(Tensor, Vec<usize>)> {
    let s = rows.iter().map(Vec::len).max().unwrap_or(0);
    let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    let mut flat = Vec::with_capacity(rows.len() * s);
    for r in rows {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(r.last().copied().unwrap_or(0), s - r.len()));
    }
    let e = model.embed_ids(&flat)?;
    Ok((e.reshape((rows.len(), s, e.dim(1)?))?, lengths))
}
