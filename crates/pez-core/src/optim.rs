//! Optimizers for the continuous prompt, as PyTorch/transformers define them (checked against their numbers).

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display, strum::EnumString, strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum OptimizerKind {
    Adafactor,
    Adamw,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Optimizer {
    Adafactor(Adafactor),
    AdamW(AdamW),
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, weight_decay: f64) -> Self {
        match kind {
            OptimizerKind::Adafactor => Self::Adafactor(Adafactor::default()),
            OptimizerKind::Adamw => Self::AdamW(AdamW {
                weight_decay,
                ..AdamW::default()
            }),
        }
    }

    /// One update of `p` (`[rows, cols]`, row-major) with gradient `g`.
    pub fn update(&mut self, p: &mut [f32], g: &[f32], rows: usize, cols: usize, lr: f64) {
        match self {
            Self::Adafactor(o) => o.update(p, g, rows, cols, lr),
            Self::AdamW(o) => o.update(p, g, lr),
        }
    }
}

/// transformers' `Adafactor` with `relative_step=False, scale_parameter=False, warmup_init=False, beta1=None`:
/// factored second moments for a 2-D parameter, update clipped to RMS <= `clip_threshold`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Adafactor {
    pub eps1: f64,
    pub clip_threshold: f64,
    pub decay_rate: f64,
    pub step: usize,
    pub row: Vec<f64>,
    pub col: Vec<f64>,
}

impl Default for Adafactor {
    fn default() -> Self {
        Self {
            eps1: 1e-30,
            clip_threshold: 1.0,
            decay_rate: -0.8,
            step: 0,
            row: vec![],
            col: vec![],
        }
    }
}

impl Adafactor {
    pub fn update(&mut self, p: &mut [f32], g: &[f32], rows: usize, cols: usize, lr: f64) {
        if self.row.is_empty() {
            self.row = vec![0.0; rows];
            self.col = vec![0.0; cols];
        }
        self.step += 1;
        let beta2t = 1.0 - (self.step as f64).powf(self.decay_rate);
        // Running means of grad^2 + eps over columns (per row) and over rows (per column).
        for r in 0..rows {
            let m = (0..cols)
                .map(|c| (g[r * cols + c] as f64).powi(2) + self.eps1)
                .sum::<f64>()
                / cols as f64;
            self.row[r] = beta2t * self.row[r] + (1.0 - beta2t) * m;
        }
        for c in 0..cols {
            let m = (0..rows)
                .map(|r| (g[r * cols + c] as f64).powi(2) + self.eps1)
                .sum::<f64>()
                / rows as f64;
            self.col[c] = beta2t * self.col[c] + (1.0 - beta2t) * m;
        }
        let row_mean = self.row.iter().sum::<f64>() / rows as f64;
        let mut u: Vec<f64> = vec![0.0; rows * cols];
        for r in 0..rows {
            let rf = (self.row[r] / row_mean).sqrt().recip();
            for c in 0..cols {
                u[r * cols + c] = rf * self.col[c].sqrt().recip() * g[r * cols + c] as f64;
            }
        }
        let rms = (u.iter().map(|x| x * x).sum::<f64>() / u.len() as f64).sqrt();
        let denom = (rms / self.clip_threshold).max(1.0);
        for (pi, ui) in p.iter_mut().zip(&u) {
            *pi -= (lr * ui / denom) as f32;
        }
    }
}

/// PyTorch's `AdamW` (decoupled weight decay), betas (0.9, 0.999), eps 1e-8.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: usize,
    pub m: Vec<f64>,
    pub v: Vec<f64>,
}

impl Default for AdamW {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step: 0,
            m: vec![],
            v: vec![],
        }
    }
}

impl AdamW {
    pub fn update(&mut self, p: &mut [f32], g: &[f32], lr: f64) {
        if self.m.is_empty() {
            self.m = vec![0.0; p.len()];
            self.v = vec![0.0; p.len()];
        }
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        for i in 0..p.len() {
            let gi = g[i] as f64;
            self.m[i] = self.beta1 * self.m[i] + (1.0 - self.beta1) * gi;
            self.v[i] = self.beta2 * self.v[i] + (1.0 - self.beta2) * gi * gi;
            let mut x = p[i] as f64 * (1.0 - lr * self.weight_decay);
            x -= lr * (self.m[i] / bc1) / ((self.v[i] / bc2).sqrt() + self.eps);
            p[i] = x as f32;
        }
    }
}
