//! A causal LM as a classifier: `<prompt><text><template>` -> logits of the verbalizer tokens at the next position.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor, Var, D};
use pez_models::{ops, tokenizer, KvCache, LanguageModel, Packed};
use pez_tasks::{Example, TaskSpec};
use tokenizers::Tokenizer;

/// The predicted label: the highest score (log-probability or probability), the later label on a tie.
pub fn best_label(scores: &[f32]) -> usize {
    scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

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
}

impl<'a> Classifier<'a> {
    /// Verbalizers that are several tokens are scored by their first token (a warning says so); two verbalizers
    /// with the same first token are an error.
    pub fn new(model: &'a dyn LanguageModel, tok: &'a Tokenizer, bos: Option<u32>, task: &TaskSpec, prompt_len: usize) -> Result<Self> {
        let mut verbalizer_ids = Vec::new();
        let mut warnings = Vec::new();
        for v in &task.verbalizers {
            let ids = tokenizer::encode(tok, v)?;
            if ids.is_empty() {
                bail!("verbalizer {v:?} is empty after tokenization");
            }
            if ids.len() > 1 {
                let pieces: Vec<String> = ids.iter().map(|&i| tokenizer::decode(tok, &[i]).unwrap_or_default()).collect();
                warnings.push(format!("verbalizer {v:?} is {} tokens {pieces:?}: scoring its first token {:?}", ids.len(), pieces[0]));
            }
            if verbalizer_ids.contains(&ids[0]) {
                bail!("verbalizers share the first token {:?}: the labels cannot be told apart", tokenizer::decode(tok, &ids[..1])?);
            }
            verbalizer_ids.push(ids[0]);
        }
        let template_ids = tokenizer::encode(tok, &task.template)?;
        let ctx = model.info().max_positions;
        let fixed = prompt_len + template_ids.len() + bos.is_some() as usize;
        if fixed + 1 > ctx {
            bail!("prompt ({prompt_len}) + template ({}) leave no room for text in a context of {ctx}", template_ids.len());
        }
        Ok(Self { model, tokenizer: tok, verbalizer_ids, template_ids, bos, max_text_tokens: ctx - fixed, warnings })
    }

    /// Text ids (truncated to fit the context: the start of the text is kept) followed by the template ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_noting_truncation(text)?.0)
    }

    /// `encode`, and whether the text was cut to fit.
    pub fn encode_noting_truncation(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let mut ids = tokenizer::encode(self.tokenizer, text)?;
        let truncated = ids.len() > self.max_text_tokens;
        ids.truncate(self.max_text_tokens);
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
        let Some(embeds) = self.prefix_embeds(prompt)? else { return Ok(Prefix { embeds: None, hidden: None, cache: None }) };
        match self.model.forward_after(&embeds.unsqueeze(0)?, None, None)? {
            Some((h, cache)) => Ok(Prefix { embeds: Some(embeds), hidden: Some(h.get(0)?), cache: Some(cache) }),
            None => Ok(Prefix { embeds: Some(embeds), hidden: None, cache: None }),
        }
    }

    /// Verbalizer log-probabilities (normalised over the verbalizers) `[b, labels]` of rows after `prefix`.
    pub fn label_logprobs(&self, prefix: &Prefix, rows: &[Vec<u32>]) -> Result<Tensor> {
        if let (Some(cache), Some(p)) = (&prefix.cache, &prefix.embeds) {
            // Rows packed into sequences of up to PACK_TOKENS after the cached prefix: no padding, large matmuls.
            // (Attention inside a pack is computed across rows and masked, so packs are kept short.)
            const PACK_TOKENS: usize = 256;
            let mut logits = vec![];
            let mut start = 0;
            while start < rows.len() {
                let mut end = start + 1;
                let mut tokens = rows[start].len();
                while end < rows.len() && tokens + rows[end].len() <= PACK_TOKENS {
                    tokens += rows[end].len();
                    end += 1;
                }
                let pack = &rows[start..end];
                let packed = Packed::new(&pack.iter().map(Vec::len).collect::<Vec<_>>());
                let x = self.model.embed_ids(&pack.concat())?.to_dtype(p.dtype())?.unsqueeze(0)?;
                let h = self.model.forward_after(&x, Some(cache), Some(&packed))?.expect("a decoder").0.get(0)?;
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

    /// Predicted label and label probabilities for every example.
    pub fn predict(&self, prompt: Option<&Tensor>, examples: &[Example], batch: usize) -> Result<(Vec<usize>, Vec<Vec<f32>>)> {
        // Batches of similar lengths waste less compute on padding; results go back in input order.
        let encoded = examples.iter().map(|e| self.encode(&e.text)).collect::<Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| encoded[i].len());
        let prefix = self.prefix(prompt)?;
        let mut pred = vec![0; examples.len()];
        let mut probs = vec![vec![]; examples.len()];
        for chunk in order.chunks(batch.max(1)) {
            let rows: Vec<Vec<u32>> = chunk.iter().map(|&i| encoded[i].clone()).collect();
            let lp = self.label_logprobs(&prefix, &rows)?.exp()?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            for (&i, p) in chunk.iter().zip(lp) {
                pred[i] = best_label(&p);
                probs[i] = p;
            }
        }
        Ok((pred, probs))
    }

    /// Mean next-token cross-entropy of the prompt in `prefix` under the model (nats per predicted token).
    /// With a BOS token the first prompt token is predicted too.
    pub fn fluency(&self, prefix: &Prefix, ids: &[u32]) -> Result<Tensor> {
        let x = prefix.embeds.as_ref().expect("a prompt");
        let first = self.bos.is_none() as usize; // the first prompt token without BOS has no context
        let n = x.dim(0)?;
        if ids.len() <= first {
            return Ok(Tensor::zeros((), x.dtype(), x.device())?);
        }
        let h = match &prefix.hidden {
            Some(h) => h.clone(),
            None => self.model.hidden_states(&x.unsqueeze(0)?, &[n])?.get(0)?,
        };
        let lp = ops::log_softmax_last(&self.model.lm_head(&h.narrow(0, 0, n - 1)?)?)?;
        let next = Tensor::new(&ids[first..], x.device())?.unsqueeze(1)?;
        Ok(lp.gather(&next, 1)?.mean_all()?.neg()?)
    }

    /// Loss `(1 - w) * label CE + w * fluency` at `prompt` and its gradient with respect to `prompt`.
    ///
    /// The prefix runs once for the whole batch (and serves the fluency term too); decoders then take the rows
    /// packed without padding. Other models (T5) get rows sorted by length in padded sub-batches of `SUB_BATCH`,
    /// so short rows are not padded to the longest row of the whole batch. One backward pass runs over all.
    pub fn loss_and_grad(&self, prompt: &Tensor, ids: &[u32], batch: &[(Vec<u32>, usize)], w: f64) -> Result<(f32, Tensor)> {
        const SUB_BATCH: usize = 4;
        let var = Var::from_tensor(prompt)?;
        let p = var.as_tensor();
        let prefix = self.prefix(Some(p))?;
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(|&i| batch[i].0.len());
        let mut ce_sum: Option<Tensor> = None;
        // Packed rows (decoders with a prefix cache) carry no padding: one call takes them all.
        let sub = if prefix.cache.is_some() { batch.len().max(1) } else { SUB_BATCH };
        for chunk in order.chunks(sub) {
            let rows: Vec<Vec<u32>> = chunk.iter().map(|&i| batch[i].0.clone()).collect();
            let labels: Vec<u32> = chunk.iter().map(|&i| batch[i].1 as u32).collect();
            let lp = self.label_logprobs(&prefix, &rows)?;
            let picked = lp.gather(&Tensor::new(labels.as_slice(), p.device())?.unsqueeze(1)?, D::Minus1)?.sum_all()?;
            ce_sum = Some(match ce_sum {
                Some(s) => (s + picked)?,
                None => picked,
            });
        }
        let ce = (ce_sum.ok_or_else(|| anyhow::anyhow!("empty batch"))? * (-1.0 / batch.len() as f64))?;
        let loss = if w > 0.0 { ((ce * (1.0 - w))? + (self.fluency(&prefix, ids)? * w)?)? } else { ce };
        let grads = loss.backward()?;
        let g = grads.get(p).cloned().ok_or_else(|| anyhow::anyhow!("no gradient reached the prompt"))?;
        Ok((loss.to_dtype(DType::F32)?.to_scalar::<f32>()?, g))
    }
}
