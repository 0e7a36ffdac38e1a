//! Several prompts on one model scored as one classifier: each member scores the text after its own cached
//! prefix, and the ensemble's label log-probabilities are the mean of the members', normalised over the labels.
//! A single prompt is an ensemble of one, so everything that serves or evaluates a classifier holds an `Ensemble`.

use crate::predictor::{score_by_length, Predictor, Scored};
use crate::{best_label, normalised, Encoded, LearnedPrompt, Prompted};
use anyhow::{bail, Result};
use pez_config::{is_ensemble, EnsembleArtifact};
use pez_models::LoadedLm;
use pez_tasks::{Calibration, PromptFormat};
use std::path::Path;

pub struct Ensemble<'a> {
    /// Best first; every member has the same prompt format.
    pub members: Vec<Prompted<'a>>,
    /// Text tokens every member can read beside its prompt and the template (the least of theirs), so all
    /// members read the same text.
    pub max_text_tokens: usize,
}

impl<'a> Ensemble<'a> {
    /// Binds each prompt to `lm` (a calibrated one's label bias is measured on it). The prompts must share their
    /// template, verbalizers and labels.
    pub fn new(lm: &'a LoadedLm, prompts: Vec<LearnedPrompt>) -> Result<Self> {
        let Some(first) = prompts.first() else {
            bail!("an ensemble needs at least one prompt");
        };
        if let Some(p) = prompts.iter().find(|p| p.format != first.format) {
            bail!(
                "ensemble members differ in their prompt format: {:?} against {:?}",
                p.format,
                first.format
            );
        }
        let members = prompts
            .into_iter()
            .map(|p| Prompted::new(lm, p))
            .collect::<Result<Vec<_>>>()?;
        let max_text_tokens = members.iter().map(|m| m.clf.max_text_tokens).min().unwrap_or(0);
        Ok(Self {
            members,
            max_text_tokens,
        })
    }

    /// A `prompt.json` (or its run directory) as an ensemble of one, or an `ensemble.json` (or its folder) with
    /// its members; `calibration`, when given, replaces the file's.
    pub fn load(path: &Path, lm: &'a LoadedLm, calibration: Option<Calibration>) -> Result<Self> {
        let mut prompts = if is_ensemble(path)? {
            let e = EnsembleArtifact::read(path)?;
            let files = e.member_files(path);
            files
                .iter()
                .map(|f| {
                    let mut p = LearnedPrompt::from_artifact(f, lm)?;
                    p.calibration = e.calibration;
                    Ok(p)
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![LearnedPrompt::from_artifact(path, lm)?]
        };
        if let Some(c) = calibration {
            prompts.iter_mut().for_each(|p| p.calibration = c);
        }
        Self::new(lm, prompts)
    }

    pub fn first(&self) -> &Prompted<'a> {
        &self.members[0]
    }

    /// Template, verbalizers and labels (the members').
    pub fn format(&self) -> &PromptFormat {
        &self.first().prompt.format
    }

    pub fn calibration(&self) -> Calibration {
        self.first().prompt.calibration
    }

    /// The members' prompts, as text.
    pub fn prompts(&self) -> Vec<String> {
        self.members.iter().map(|m| m.prompt.text.clone()).collect()
    }

    /// `text` as the ids every member reads after its prefix (see `Prompted::encode`).
    pub fn encode(&self, text: &str, cap: usize) -> Result<Encoded> {
        self.first().encode(text, cap.min(self.max_text_tokens))
    }

    /// Scores rows made by `encode` with every member and combines them; `tokens` counts what all members read.
    pub fn score_rows(&self, rows: &[Encoded]) -> Result<Vec<Scored>> {
        let each = self
            .members
            .iter()
            .map(|m| m.score_rows(rows))
            .collect::<Result<Vec<_>>>()?;
        Ok((0..rows.len())
            .map(|i| combine(&each.iter().map(|m| &m[i]).collect::<Vec<_>>()))
            .collect())
    }
}

/// The members' scores of one text as one: mean log-probabilities normalised over the labels (calibrated and
/// raw alike), the best label of those.
fn combine(scores: &[&Scored]) -> Scored {
    let logprobs = mean_normalised(scores.iter().map(|s| s.logprobs.as_slice()));
    let raw_logprobs = scores[0].raw_logprobs.is_some().then(|| {
        mean_normalised(
            scores
                .iter()
                .map(|s| s.raw_logprobs.as_ref().unwrap_or(&s.logprobs).as_slice()),
        )
    });
    Scored {
        label: best_label(&logprobs),
        logprobs,
        raw_logprobs,
        tokens: scores.iter().map(|s| s.tokens).sum(),
        truncated: scores.iter().any(|s| s.truncated),
    }
}

fn mean_normalised<'s>(rows: impl Iterator<Item = &'s [f32]>) -> Vec<f32> {
    let mut sum: Vec<f32> = vec![];
    let mut n = 0;
    for r in rows {
        sum.resize(r.len(), 0.0);
        sum.iter_mut().zip(r).for_each(|(s, x)| *s += x);
        n += 1;
    }
    normalised(&sum.iter().map(|s| s / n as f32).collect::<Vec<_>>())
}

/// Any predictors' answers combined as `Ensemble` combines its members' (for members behind an endpoint, asked
/// one by one).
pub struct MeanOf<'p>(pub Vec<Box<dyn Predictor + 'p>>);

impl Predictor for MeanOf<'_> {
    fn score(&self, texts: &[&str], batch: usize, done: &mut dyn FnMut(usize)) -> Result<Vec<Scored>> {
        let Some((last, rest)) = self.0.split_last() else {
            bail!("an ensemble needs at least one prompt");
        };
        let mut each = rest
            .iter()
            .map(|p| p.score(texts, batch, &mut |_| {}))
            .collect::<Result<Vec<_>>>()?;
        // Progress counts the texts once, with the last member.
        each.push(last.score(texts, batch, done)?);
        Ok((0..texts.len())
            .map(|i| combine(&each.iter().map(|m| &m[i]).collect::<Vec<_>>()))
            .collect())
    }
}

impl Predictor for Ensemble<'_> {
    fn score(&self, texts: &[&str], batch: usize, done: &mut dyn FnMut(usize)) -> Result<Vec<Scored>> {
        score_by_length(
            texts,
            batch,
            done,
            |t| self.encode(t, self.max_text_tokens),
            |rows| self.score_rows(rows),
        )
    }
}
