//! Scoring texts under one prompt, wherever the model runs: `Prompted` (in this process) and
//! `endpoint::EndpointPrompt` (behind pez-serve or any OpenAI-compatible server) both implement `Predictor`, and
//! `evaluate` turns any predictor's answers on labelled examples into an accuracy.

use crate::Encoded;
use anyhow::Result;
use pez_tasks::metrics::Accuracy;
use pez_tasks::Example;

/// One text's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The best label (the later one on a tie).
    pub label: usize,
    /// Log-probabilities over the labels (normalised over the verbalizers); calibrated for a calibrated prompt.
    pub logprobs: Vec<f32>,
    /// The uncalibrated ones, for a calibrated prompt.
    pub raw_logprobs: Option<Vec<f32>>,
    /// Tokens the model read for it (prefix, text after truncation, template); 0 where an endpoint does not say.
    pub tokens: usize,
    /// Whether the text was cut to fit.
    pub truncated: bool,
}

/// Labels and scores of texts under one prompt.
pub trait Predictor {
    /// `texts` scored `batch` at a time, in input order; `done(n)` after each batch (for progress).
    fn score(&self, texts: &[&str], batch: usize, done: &mut dyn FnMut(usize)) -> Result<Vec<Scored>>;
}

/// Texts encoded by `encode`, sorted by length (rows of similar lengths waste least) and scored `batch` at a time
/// by `score_rows`; results in input order.
pub(crate) fn score_by_length(
    texts: &[&str],
    batch: usize,
    done: &mut dyn FnMut(usize),
    encode: impl Fn(&str) -> Result<Encoded>,
    score_rows: impl Fn(&[Encoded]) -> Result<Vec<Scored>>,
) -> Result<Vec<Scored>> {
    let rows = texts.iter().map(|t| encode(t)).collect::<Result<Vec<_>>>()?;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].0.len());
    let mut out: Vec<Option<Scored>> = vec![None; rows.len()];
    for chunk in order.chunks(batch.max(1)) {
        let picked: Vec<Encoded> = chunk.iter().map(|&i| rows[i].clone()).collect();
        for (&i, s) in chunk.iter().zip(score_rows(&picked)?) {
            out[i] = Some(s);
        }
        done(chunk.len());
    }
    Ok(out.into_iter().map(|s| s.expect("every text scored")).collect())
}

/// A predictor's answers on labelled examples.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub accuracy: Accuracy,
    pub scored: Vec<Scored>,
}

impl Evaluation {
    /// 1 where the label was right, per example, in data order.
    pub fn correct(&self, examples: &[Example]) -> Vec<u8> {
        self.scored
            .iter()
            .zip(examples)
            .map(|(s, e)| (s.label == e.label) as u8)
            .collect()
    }

    /// Every example's predicted label and label probabilities, one JSON line each in data order (what paired
    /// tests such as McNemar's read).
    pub fn write_predictions(&self, path: &std::path::Path, labels: &[String]) -> Result<()> {
        let mut out = String::new();
        for (i, s) in self.scored.iter().enumerate() {
            let probs: Vec<f32> = s.logprobs.iter().map(|x| x.exp()).collect();
            let line = Prediction {
                index: i,
                label: &labels[s.label],
                label_index: s.label,
                probs,
            };
            out += &serde_json::to_string(&line)?;
            out.push('\n');
        }
        pez_config::write_atomic(path, out.as_bytes())
    }
}

/// One line of `Evaluation::write_predictions`.
#[derive(serde::Serialize)]
struct Prediction<'a> {
    index: usize,
    label: &'a str,
    label_index: usize,
    probs: Vec<f32>,
}

/// Scores `examples` with `p` and measures its accuracy (with per-class counts over `num_labels`).
pub fn evaluate(
    p: &dyn Predictor,
    examples: &[Example],
    num_labels: usize,
    batch: usize,
    done: &mut dyn FnMut(usize),
) -> Result<Evaluation> {
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let scored = p.score(&texts, batch, done)?;
    let predicted: Vec<usize> = scored.iter().map(|s| s.label).collect();
    let gold: Vec<usize> = examples.iter().map(|e| e.label).collect();
    Ok(Evaluation {
        accuracy: Accuracy::from_predictions(&predicted, &gold, num_labels),
        scored,
    })
}
