//! A prompt bound to an in-process model: the one way `pez eval`, tuning evaluation, the transfer grid and the
//! server score texts.

use crate::predictor::{score_by_length, Predictor, Scored};
use crate::{best_label, calibrated, Classifier, Encoded, LearnedPrompt, Prefix};
use anyhow::Result;
use candle_core::DType;
use pez_models::LoadedLm;

/// A prompt with its classifier, its prefix (run once) and, when calibrated, the label offsets measured on this
/// model.
pub struct Prompted<'a> {
    pub prompt: LearnedPrompt,
    pub clf: Classifier<'a>,
    pub prefix: Prefix,
    /// `log p_cf(label)` for `Calibration::ContentFree`, else `None`.
    pub offsets: Option<Vec<f32>>,
}

impl<'a> Prompted<'a> {
    /// Binds the prompt; a calibrated prompt's label bias is estimated on this model.
    pub fn new(lm: &'a LoadedLm, prompt: LearnedPrompt) -> Result<Self> {
        let clf = Classifier::new(lm, &prompt.format, prompt.len())?;
        let prefix = clf.prefix(prompt.embeds.as_ref())?;
        let offsets = clf.offsets(&prefix, prompt.calibration)?;
        Ok(Self {
            prompt,
            clf,
            prefix,
            offsets,
        })
    }

    /// Mean next-token NLL of the prompt's tokens under this model (nats per predicted token; the first token
    /// too where the model has a BOS): how readable the model finds it. `None` for a model that is not a causal
    /// decoder, an empty prompt, or a soft prompt (its rows are not its tokens' embeddings).
    pub fn log_perplexity(&self) -> Result<Option<f64>> {
        let (Some(embeds), Some(_)) = (&self.prompt.embeds, self.clf.model.as_decoder()) else {
            return Ok(None);
        };
        let hard = self.clf.model.embed_ids(&self.prompt.ids)?;
        let is_hard = hard.dims() == embeds.dims()
            && (hard - embeds)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?
                == 0.0;
        if !is_hard {
            return Ok(None);
        }
        Ok(Some(
            self.clf
                .fluency(&self.prefix, &self.prompt.ids)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?,
        ))
    }

    /// `text` as the ids this classifier reads after the prefix (at most `cap` text tokens, and what the context
    /// leaves, then the template), and whether it was cut.
    pub fn encode(&self, text: &str, cap: usize) -> Result<Encoded> {
        self.clf.encode_within(text, cap)
    }

    /// Scores rows made by `encode` together after the cached prefix (rows of similar lengths waste least).
    pub fn score_rows(&self, rows: &[Encoded]) -> Result<Vec<Scored>> {
        let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.0.clone()).collect();
        let raw = self
            .clf
            .label_logprobs(&self.prefix, &ids)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let fixed = self.prefix.embeds.as_ref().map_or(0, |e| e.dim(0).unwrap_or(0));
        Ok(rows
            .iter()
            .zip(raw)
            .map(|((ids, truncated), raw)| {
                let (logprobs, raw_logprobs) = match &self.offsets {
                    Some(off) => (calibrated(&raw, off), Some(raw)),
                    None => (raw, None),
                };
                Scored {
                    label: best_label(&logprobs),
                    logprobs,
                    raw_logprobs,
                    tokens: fixed + ids.len(),
                    truncated: *truncated,
                }
            })
            .collect())
    }
}

impl Predictor for Prompted<'_> {
    /// Texts cut to the context, sorted by length and scored `batch` at a time; results in input order.
    fn score(&self, texts: &[&str], batch: usize, done: &mut dyn FnMut(usize)) -> Result<Vec<Scored>> {
        score_by_length(
            texts,
            batch,
            done,
            |t| self.encode(t, self.clf.max_text_tokens),
            |rows| self.score_rows(rows),
        )
    }
}
