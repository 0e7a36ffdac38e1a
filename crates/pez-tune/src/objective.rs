//! The tuning objective on one batch: `(1 - w) * label CE + w * fluency` at the prompt, and its gradient.

use anyhow::{anyhow, Result};
use candle_core::{DType, Tensor, Var, D};
use pez_classify::Classifier;
use pez_core::Objective;

/// A batch of encoded rows with their labels, and the fluency weight `w`.
pub struct BatchObjective<'a> {
    pub clf: &'a Classifier<'a>,
    pub batch: Vec<(Vec<u32>, usize)>,
    pub fluency: f64,
    /// Some when profiling: the forward pass's seconds (up to the loss, the device synchronised), written by
    /// `loss_and_grad`.
    pub forward_s: Option<f64>,
}

impl Objective for BatchObjective<'_> {
    /// Loss `(1 - w) * label CE + w * fluency` at `prompt` and its gradient with respect to `prompt`.
    ///
    /// The prefix runs once for the whole batch (and serves the fluency term too); decoders then take the rows
    /// packed without padding. Other models (T5) get rows sorted by length in padded sub-batches of `SUB_BATCH`,
    /// so short rows are not padded to the longest row of the whole batch. One backward pass runs over all.
    fn loss_and_grad(&mut self, prompt: &Tensor, ids: &[u32]) -> Result<(f32, Tensor)> {
        const SUB_BATCH: usize = 4;
        let t0 = std::time::Instant::now();
        let (clf, batch, w) = (self.clf, &self.batch, self.fluency);
        let var = Var::from_tensor(prompt)?;
        let p = var.as_tensor();
        let prefix = clf.prefix(Some(p))?;
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(|&i| batch[i].0.len());
        let mut ce_sum: Option<Tensor> = None;
        // Packed rows (decoders with a prefix cache) carry no padding: one call takes them all.
        let sub = if prefix.cache.is_some() {
            batch.len().max(1)
        } else {
            SUB_BATCH
        };
        for chunk in order.chunks(sub) {
            let rows: Vec<Vec<u32>> = chunk.iter().map(|&i| batch[i].0.clone()).collect();
            let labels: Vec<u32> = chunk.iter().map(|&i| batch[i].1 as u32).collect();
            let lp = clf.label_logprobs(&prefix, &rows)?;
            let picked = lp
                .gather(&Tensor::new(labels.as_slice(), p.device())?.unsqueeze(1)?, D::Minus1)?
                .sum_all()?;
            ce_sum = Some(match ce_sum {
                Some(s) => (s + picked)?,
                None => picked,
            });
        }
        let ce = (ce_sum.ok_or_else(|| anyhow!("empty batch"))? * (-1.0 / batch.len() as f64))?;
        let loss = if w > 0.0 {
            ((ce * (1.0 - w))? + (clf.fluency_loss(&prefix, ids)? * w)?)?
        } else {
            ce
        };
        if let Some(f) = &mut self.forward_s {
            loss.device().synchronize()?;
            *f = t0.elapsed().as_secs_f64();
        }
        let grads = loss.backward()?;
        let g = grads
            .get(p)
            .cloned()
            .ok_or_else(|| anyhow!("no gradient reached the prompt"))?;
        Ok((loss.to_dtype(DType::F32)?.to_scalar::<f32>()?, g))
    }
}
