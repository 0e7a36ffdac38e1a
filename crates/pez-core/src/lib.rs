//! The PEZ step and nothing else (Wen et al. 2023, "Hard Prompts Made Easy").
//!
//! Keep a continuous prompt `P` (`[len, d]`). Each step: project every row to its nearest vocabulary embedding by
//! cosine, evaluate the loss and its gradient *at the projected point*, clip, and apply the gradient to `P`.
//! Baselines share the loop and differ in where the gradient is taken and what is kept (see `Method`).

pub mod optim;
pub mod project;

use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

pub use optim::{Adafactor, AdamW, Optimizer, OptimizerKind};
pub use project::Projector;

/// What a task supplies: the loss at a prompt (rows of the vocabulary embedding, or free vectors for `soft`) and
/// its gradient with respect to those rows.
pub trait Objective {
    fn loss_and_grad(&mut self, prompt: &Tensor, ids: &[u32]) -> Result<(f32, Tensor)>;
}

/// How the prompt is optimised. Names (kebab-case) are the same in flags, files and text.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display, strum::EnumString, strum::VariantNames,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Method {
    /// Gradient at the projection, applied to the continuous prompt.
    Pez,
    /// AutoPrompt-style projected SGD: gradient at the current point, update, then snap to the projection.
    AutopromptSgd,
    /// FluentPrompt: projected Langevin dynamics; Gaussian noise sqrt(2 lr beta) with beta decaying 1 -> 1e-4.
    Fluentprompt,
    /// No projection at all: a soft prompt (reported with its nearest tokens for reading only).
    Soft,
}

/// Everything needed to resume a run exactly: the continuous prompt, optimizer moments, step, RNG.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PezState {
    pub step: usize,
    pub len: usize,
    pub dim: usize,
    pub soft: Vec<f32>,
    pub optimizer: Optimizer,
    pub rng: ChaCha8Rng,
}

#[derive(Debug, Clone)]
pub struct StepReport {
    pub loss: f32,
    /// The hard prompt the loss was evaluated at (nearest tokens of the evaluated point).
    pub ids: Vec<u32>,
    pub grad_norm: f32,
    /// Where the step's time went, when `Pez::profile` is on.
    pub phases: Option<Phases>,
}

/// Seconds one step spent in each phase, measured when `Pez::profile` is on: the device is synchronised at the end
/// of each phase, so a GPU's queued work counts in the phase that issued it (and the step is slower for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// The soft prompt's nearest vocabulary rows (the ids read back to the host).
    pub project_s: f64,
    /// The objective: forward and backward passes, the loss and the gradient.
    pub loss_and_grad_s: f64,
    /// The gradient read back, clipped, and the optimizer's update.
    pub update_s: f64,
}

pub struct Pez {
    pub method: Method,
    pub projector: Projector,
    pub total_steps: usize,
    pub lr: f64,
    pub clip_norm: f32,
    pub state: PezState,
    /// Time each step's phases (`StepReport::phases`).
    pub profile: bool,
}

impl Pez {
    /// Starts from an initial prompt `[len, d]` (e.g. tiled verbalizer embeddings).
    pub fn new(
        method: Method,
        projector: Projector,
        init: &Tensor,
        optimizer: Optimizer,
        total_steps: usize,
        lr: f64,
        seed: u64,
    ) -> Result<Self> {
        let (len, dim) = init.dims2()?;
        let soft = init
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let state = PezState {
            step: 0,
            len,
            dim,
            soft,
            optimizer,
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        Ok(Self {
            method,
            projector,
            total_steps,
            lr,
            clip_norm: 1.0,
            state,
            profile: false,
        })
    }

    pub fn soft_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.state.soft,
            (self.state.len, self.state.dim),
            self.projector.device(),
        )?)
    }

    /// The current hard prompt (projection of the continuous prompt).
    pub fn hard_ids(&self) -> Result<Vec<u32>> {
        self.projector.nearest(&self.soft_tensor()?)
    }

    /// One optimisation step.
    pub fn step(&mut self, objective: &mut dyn Objective) -> Result<StepReport> {
        let mut clock = self.profile.then(|| (std::time::Instant::now(), Phases::default()));
        let soft = self.soft_tensor()?;
        let ids = self.projector.nearest(&soft)?;
        let at = match self.method {
            Method::Soft => soft.clone(),
            _ => self.projector.rows(&ids)?,
        };
        let at = at.to_dtype(self.projector.dtype())?;
        self.lap(&mut clock, |p| &mut p.project_s)?;
        let (loss, grad) = objective.loss_and_grad(&at, &ids)?;
        self.lap(&mut clock, |p| &mut p.loss_and_grad_s)?;
        let mut g = grad
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let norm = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !norm.is_finite() {
            bail!("non-finite gradient at step {}", self.state.step);
        }
        if norm > self.clip_norm {
            let s = self.clip_norm / (norm + 1e-6);
            g.iter_mut().for_each(|x| *x *= s);
        }
        let st = &mut self.state;
        st.step += 1;
        match self.method {
            Method::Pez | Method::Soft => st.optimizer.update(&mut st.soft, &g, st.len, st.dim, self.lr),
            Method::AutopromptSgd => {
                // Start from the hard point, take the step, keep only its projection.
                st.soft = at.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
                st.optimizer.update(&mut st.soft, &g, st.len, st.dim, self.lr);
                let snapped = self.projector.rows(&self.projector.nearest(&Tensor::from_slice(
                    &st.soft,
                    (st.len, st.dim),
                    self.projector.device(),
                )?)?)?;
                st.soft = snapped.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
            }
            Method::Fluentprompt => {
                st.optimizer.update(&mut st.soft, &g, st.len, st.dim, self.lr);
                let beta = langevin_beta(st.step, self.total_steps);
                let scale = (2.0 * self.lr * beta).sqrt() as f32;
                for x in st.soft.iter_mut() {
                    let z: f32 = StandardNormal.sample(&mut st.rng);
                    *x += scale * z;
                }
            }
        }
        self.lap(&mut clock, |p| &mut p.update_s)?;
        Ok(StepReport {
            loss,
            ids,
            grad_norm: norm,
            phases: clock.map(|(_, p)| p),
        })
    }

    /// Ends a profiled phase: waits for the device, adds the seconds since the last lap to `field`.
    fn lap(&self, clock: &mut Option<(std::time::Instant, Phases)>, field: fn(&mut Phases) -> &mut f64) -> Result<()> {
        if let Some((t, p)) = clock {
            self.projector.device().synchronize()?;
            *field(p) += t.elapsed().as_secs_f64();
            *t = std::time::Instant::now();
        }
        Ok(())
    }
}

/// Geometric decay from 1 at the first step to 1e-4 at the last.
pub fn langevin_beta(step: usize, total: usize) -> f64 {
    let t = if total <= 1 {
        1.0
    } else {
        (step.saturating_sub(1)) as f64 / (total - 1) as f64
    };
    10f64.powf(-4.0 * t.min(1.0))
}
