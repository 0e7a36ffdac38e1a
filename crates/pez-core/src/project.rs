//! Projection onto the vocabulary: exact nearest neighbour by cosine over every allowed row.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, D};

pub struct Projector {
    /// The embedding matrix `[V, d]` (the rows a hard prompt is made of).
    embeddings: Tensor,
    /// Row-normalised copy, transposed `[d, V]`, for the cosine scores.
    normalized_t: Tensor,
    /// Additive mask `[V]`: 0 for allowed tokens, -inf for excluded ones.
    mask: Tensor,
    allowed: usize,
}

impl Projector {
    /// `allowed[i]` says whether token `i` may appear in a prompt (special tokens, deny lists, ...).
    pub fn new(embeddings: &Tensor, allowed: &[bool]) -> Result<Self> {
        let (v, _) = embeddings.dims2()?;
        if allowed.len() != v {
            bail!("allow mask has {} entries for a vocabulary of {v}", allowed.len());
        }
        let n = allowed.iter().filter(|&&a| a).count();
        if n == 0 {
            bail!("every token is excluded: nothing to project onto");
        }
        let e32 = embeddings.to_dtype(DType::F32)?;
        let norms = e32.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let normalized_t = e32.broadcast_div(&norms)?.t()?.contiguous()?;
        let mask: Vec<f32> = allowed
            .iter()
            .map(|&a| if a { 0.0 } else { f32::NEG_INFINITY })
            .collect();
        Ok(Self {
            embeddings: embeddings.clone(),
            normalized_t,
            mask: Tensor::from_vec(mask, v, embeddings.device())?,
            allowed: n,
        })
    }

    pub fn device(&self) -> &Device {
        self.embeddings.device()
    }

    pub fn dtype(&self) -> DType {
        self.embeddings.dtype()
    }

    pub fn allowed_count(&self) -> usize {
        self.allowed
    }

    /// Index of the most cosine-similar allowed row for each row of `x: [n, d]`.
    pub fn nearest(&self, x: &Tensor) -> Result<Vec<u32>> {
        let x = x.to_dtype(DType::F32)?;
        let xn = x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?)?;
        let scores = xn.matmul(&self.normalized_t)?.broadcast_add(&self.mask)?;
        Ok(scores.argmax(D::Minus1)?.to_vec1::<u32>()?)
    }

    /// The embedding rows of `ids`: `[n, d]`.
    pub fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        Ok(self.embeddings.index_select(&Tensor::new(ids, self.device())?, 0)?)
    }
}
