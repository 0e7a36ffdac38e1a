//! A causal LM as a classifier: `<prompt><text><template>` -> logits of the verbalizer tokens at the next position.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use pez_hub::tokenizer;
use pez_models::{KvCache, LanguageModel, LoadedLm};
use pez_nn::{ops, Packed};
use pez_tasks::{Calibration, PromptFormat};
use tokenizers::Tokenizer;

/// The predicted label: the highest score (log-probability or probability), the later label on a tie.
pub fn best_label(scores: &[f32]) -> usize {
    scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// A text ready to score: its token ids (text, then template), and whether the text was cut to fit.
pub type Encoded = (Vec<u32>, bool);

/// The `[bos ; prompt]` prefix shared by every row, run once (see `Classifier::prefix`).
pub struct Prefix {
    /// `[p, d]`; `None` without BOS and prompt.
    pub embeds: Option<Tensor>,
    /// Its final hidden states `[p, d]` and keys/values, for causal decoders.
    pub hidden: Option<Tensor>,
    pub cache: Option<KvCache>,
}

pub struct Classifier<'a> {
    pub model: &'a dyn LanguageModel,
    pub tokenizer: &'a Tokenizer,
    /// First token of each verbalizer.
    pub verbalizer_ids: Vec<u32>,
    pub template_ids: Vec<u32>,
    /// Put in front of the prompt for models that expect it (see `LoadedLm::bos`).
    pub bos: Option<u32>,
    /// Longest text (in tokens) that fits the context next to the prompt and the template.
    pub max_text_tokens: usize,
    pub warnings: Vec<String>,
    /// The head is the token embeddings (no bias), so a token's logit can be read off its own prompt vector.
    tied_head: bool,
}

impl<'a> Classifier<'a> {
    /// Verbalizers that are several tokens are scored by their first token (a warning says so); two verbalizers
    /// with the same first token are an error.
    pub fn new(lm: &'a LoadedLm, format: &PromptFormat, prompt_len: usize) -> Result<Self> {
        let (model, tok, bos) = (lm.model.as_ref(), &lm.tokenizer, lm.bos);
        let mut verbalizer_ids = Vec::new();
        let mut warnings = Vec::new();
        for v in &format.verbalizers {
            let ids = tokenizer::encode(tok, v)?;
            if ids.is_empty() {
                bail!("verbalizer {v:?} is empty after tokenization");
            }
            if ids.len() > 1 {
                let pieces: Vec<String> = ids
                    .iter()
                    .map(|&i| tokenizer::decode(tok, &[i]).unwrap_or_default())
                    .collect();
                warnings.push(format!(
                    "verbalizer {v:?} is {} tokens {pieces:?}: scoring its first token {:?}",
                    ids.len(),
                    pieces[0]
                ));
            }
            if verbalizer_ids.contains(&ids[0]) {
                bail!(
                    "verbalizers share the first token {:?}: the labels cannot be told apart",
                    tokenizer::decode(tok, &ids[..1])?
                );
            }
            verbalizer_ids.push(ids[0]);
        }
        let template_ids = tokenizer::encode(tok, &format.template)?;
        let ctx = model.info().max_positions;
        let fixed = prompt_len + template_ids.len() + bos.is_some() as usize;
        if fixed + 1 > ctx {
            bail!(
                "prompt ({prompt_len}) + template ({}) leave no room for text in a context of {ctx}",
                template_ids.len()
            );
        }
        let tied_head = model
            .as_decoder()
            .is_some_and(|d| d.head().b.is_none() && d.head().w.id() == d.token_embeddings().id());
        Ok(Self {
            model,
            tokenizer: tok,
            verbalizer_ids,
            template_ids,
            bos,
            max_text_tokens: ctx - fixed,
            warnings,
            tied_head,
        })
    }

    /// Text ids (truncated to fit the context: the start of the text is kept) followed by the template ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_within(text, self.max_text_tokens)?.0)
    }

    /// Text ids cut to at most `cap` tokens (and to the context), then the template ids; and whether the text
    /// was cut. A long text is cut at a word boundary well past `cap` tokens before tokenizing, so a megabyte of
    /// text costs what its first few thousand characters cost; the ids kept are those of the whole text.
    pub fn encode_within(&self, text: &str, cap: usize) -> Result<Encoded> {
        let cap = cap.min(self.max_text_tokens);
        // Start with 16 characters per token; an odd text (long tokens) gets 4x more until it is cut no more.
        let mut chars = cap.saturating_mul(16).saturating_add(256);
        let mut ids = loop {
            let (head, cut) = head_at_word(text, chars);
            let ids = tokenizer::encode(self.tokenizer, head)?;
            // Past `cap` tokens the cut cannot change the kept ones: pre-tokenization splits at the whitespace
            // where the cut is made, and BPE does not merge across that split.
            if !cut || ids.len() > cap {
                break ids;
            }
            chars = chars.saturating_mul(4);
        };
        let truncated = ids.len() > cap;
        ids.truncate(cap);
        ids.extend_from_slice(&self.template_ids);
        Ok((ids, truncated))
    }

    /// `[bos ; prompt]` embeddings, or `None` when both are absent.
    fn prefix_embeds(&self, prompt: Option<&Tensor>) -> Result<Option<Tensor>> {
        let bos = self.bos.map(|b| self.model.embed_ids(&[b])).transpose()?;
        Ok(match (bos, prompt) {
            (Some(b), Some(p)) => Some(Tensor::cat(&[&b.to_dtype(p.dtype())?, p], 0)?),
            (Some(b), None) => Some(b),
            (None, p) => p.cloned(),
        })
    }

    /// Runs the `[bos ; prompt]` prefix that every row shares once. Causal decoders keep its keys and values, so
    /// rows continue from them; other models (T5) get the prefix embeddings put in front of every row.
    pub fn prefix(&self, prompt: Option<&Tensor>) -> Result<Prefix> {
        let Some(embeds) = self.prefix_embeds(prompt)? else {
            return Ok(Prefix {
                embeds: None,
                hidden: None,
                cache: None,
            });
        };
        match self.model.as_decoder() {
            Some(d) => {
                let (h, cache) = d.forward_after(&embeds.unsqueeze(0)?, None, None)?;
                Ok(Prefix {
                    embeds: Some(embeds),
                    hidden: Some(h.get(0)?),
                    cache: Some(cache),
                })
            }
            None => Ok(Prefix {
                embeds: Some(embeds),
                hidden: None,
                cache: None,
            }),
        }
    }

    /// Verbalizer log-probabilities (normalised over the verbalizers) `[b, labels]` of rows after `prefix`.
    pub fn label_logprobs(&self, prefix: &Prefix, rows: &[Vec<u32>]) -> Result<Tensor> {
        if let (Some(cache), Some(p), Some(decoder)) = (&prefix.cache, &prefix.embeds, self.model.as_decoder()) {
            // Rows packed into sequences after the cached prefix: no padding, large matmuls. Attention inside a pack
            // is computed across its rows and masked, so on the CPU packs are kept short (256 tokens); on a GPU each
            // pass costs ~0.1 s of per-op overhead whatever its size (evals/gpu), so packs take 1,024.
            let pack_tokens = if p.device().is_cpu() { 256 } else { 1024 };
            let mut logits = vec![];
            let mut start = 0;
            while start < rows.len() {
                let mut end = start + 1;
                let mut tokens = rows[start].len();
                while end < rows.len() && tokens + rows[end].len() <= pack_tokens {
                    tokens += rows[end].len();
                    end += 1;
                }
                let pack = &rows[start..end];
                let packed = Packed::new(&pack.iter().map(Vec::len).collect::<Vec<_>>());
                let x = self
                    .model
                    .embed_ids(&pack.concat())?
                    .to_dtype(p.dtype())?
                    .unsqueeze(0)?;
                let h = decoder.forward_after(&x, Some(cache), Some(&packed))?.0.get(0)?;
                logits.push(self.model.lm_head(&ops::rows_at(&h, &packed.last_tokens())?)?);
                start = end;
            }
            return self.verbalizer_logprobs(&Tensor::cat(&logits, 0)?);
        }
        let (rest, lengths) = pez_models::embed_batch(self.model, rows)?;
        let logits = match &prefix.embeds {
            Some(p) => {
                let (pl, d) = p.dims2()?;
                let p = p.unsqueeze(0)?.broadcast_as((rows.len(), pl, d))?;
                let x = Tensor::cat(&[&p, &rest.to_dtype(p.dtype())?], 1)?;
                let lengths: Vec<usize> = lengths.iter().map(|l| l + pl).collect();
                self.model.next_token_logits(&x, &lengths)?
            }
            None => self.model.next_token_logits(&rest, &lengths)?,
        };
        self.verbalizer_logprobs(&logits)
    }

    fn verbalizer_logprobs(&self, logits: &Tensor) -> Result<Tensor> {
        let idx = Tensor::new(self.verbalizer_ids.as_slice(), logits.device())?;
        Ok(ops::log_softmax_last(&logits.index_select(&idx, 1)?)?)
    }

    /// The label offsets `calibration` asks for after `prefix`: for `ContentFree`, `log` of the mean label
    /// probabilities of the content-free inputs; `None` uncalibrated.
    pub fn offsets(&self, prefix: &Prefix, calibration: Calibration) -> Result<Option<Vec<f32>>> {
        if calibration == Calibration::None {
            return Ok(None);
        }
        let rows: Vec<Vec<u32>> = CONTENT_FREE
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|r| !r.is_empty())
            .collect();
        let raw = self
            .label_logprobs(prefix, &rows)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let k = self.verbalizer_ids.len();
        Ok(Some(
            (0..k)
                .map(|l| (raw.iter().map(|r| r[l].exp()).sum::<f32>() / raw.len() as f32).ln())
                .collect(),
        ))
    }

    /// Mean next-token cross-entropy of the prompt in `prefix` under the model (nats per predicted token).
    /// With a BOS token the first prompt token is predicted too.
    pub fn fluency(&self, prefix: &Prefix, ids: &[u32]) -> Result<Tensor> {
        let Some((_, logits, next, _)) = self.prompt_logits(prefix, ids)? else {
            return Ok(self.zero(prefix)?);
        };
        Ok(ops::log_softmax_last(&logits)?.gather(&next, 1)?.mean_all()?.neg()?)
    }

    /// The fluency term tuning descends on: `fluency` with each predicted token's logit read as `h . x`, `x` the
    /// prompt vector in that token's place, where the head is the token embeddings (tied, no bias: GPT-2, OPT,
    /// SmolLM2, Gemma 3). At a projected prompt `x` is that token's row, so the value is `fluency`'s; the
    /// gradient then also reaches each token's own vector, pulling it towards the tokens the model expects
    /// there. With an untied head it is `fluency`, whose gradient reaches the prompt through the context alone:
    /// on SmolLM2 that pull barely changed the prompts (NOTES, issue 26).
    pub fn fluency_loss(&self, prefix: &Prefix, ids: &[u32]) -> Result<Tensor> {
        if !self.tied_head {
            return self.fluency(prefix, ids);
        }
        let Some((h, logits, next, x)) = self.prompt_logits(prefix, ids)? else {
            return Ok(self.zero(prefix)?);
        };
        let lse = (logits.gather(&next, 1)? - ops::log_softmax_last(&logits)?.gather(&next, 1)?)?; // log-sum-exp of each row
        let read = (pez_nn::dtype::widened(&h)? * x.to_dtype(logits.dtype())?)?.sum_keepdim(1)?; // in the logits' dtype
        Ok((lse - read)?.mean_all()?)
    }

    fn zero(&self, prefix: &Prefix) -> candle_core::Result<Tensor> {
        let x = prefix.embeds.as_ref().expect("a prompt");
        pez_nn::dtype::widened(&Tensor::zeros((), x.dtype(), x.device())?)
    }

    /// For the prompt in `prefix`: the hidden states that predict its tokens `[m, d]`, their logits `[m, vocab]`,
    /// the predicted ids `[m, 1]` and the prefix rows that hold those tokens `[m, d]`; `None` when no token is
    /// predicted (one prompt token and no BOS).
    fn prompt_logits(&self, prefix: &Prefix, ids: &[u32]) -> Result<Option<(Tensor, Tensor, Tensor, Tensor)>> {
        let x = prefix.embeds.as_ref().expect("a prompt");
        let first = self.bos.is_none() as usize; // the first prompt token without BOS has no context
        let n = x.dim(0)?;
        if ids.len() <= first {
            return Ok(None);
        }
        let h = match &prefix.hidden {
            Some(h) => h.clone(),
            None => self.model.hidden_states(&x.unsqueeze(0)?, &[n])?.get(0)?,
        };
        // Row i of the prefix predicts the token held in row i + 1 (with BOS: prompt token i; without: i + 1).
        let h = h.narrow(0, 0, n - 1)?;
        let logits = self.model.lm_head(&h)?;
        let next = Tensor::new(&ids[first..], x.device())?.unsqueeze(1)?;
        Ok(Some((h, logits, next, x.narrow(0, 1, n - 1)?)))
    }
}

/// The content-free inputs of Zhao et al. 2021.
pub const CONTENT_FREE: [&str; 3] = ["N/A", "", "[MASK]"];

/// Log-probabilities with per-label offsets subtracted, normalised again.
pub fn calibrated(logprobs: &[f32], offsets: &[f32]) -> Vec<f32> {
    normalised(&logprobs.iter().zip(offsets).map(|(l, o)| l - o).collect::<Vec<_>>())
}

/// Scores shifted to log-probabilities over the labels (`x - logsumexp(x)`).
pub fn normalised(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
    x.iter().map(|v| v - lse).collect()
}

/// The start of `text` of about `chars` characters, ended before a whitespace (mid-word only when there is none
/// in its second half), and whether anything was cut.
fn head_at_word(text: &str, chars: usize) -> (&str, bool) {
    let Some((end, _)) = text.char_indices().nth(chars) else {
        return (text, false);
    };
    let head = &text[..end];
    let at = head
        .char_indices()
        .rev()
        .take_while(|&(i, _)| i >= end / 2)
        .find(|(_, c)| c.is_whitespace())
        .map(|(i, _)| i);
    (&text[..at.unwrap_or(end)], true)
}
