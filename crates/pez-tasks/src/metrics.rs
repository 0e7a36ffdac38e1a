//! Accuracy with a 95% Wilson score interval, and per-class counts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accuracy {
    pub correct: usize,
    pub total: usize,
    pub accuracy: f64,
    pub ci95: (f64, f64),
    /// `per_class[c] = (correct, total)` by gold label.
    pub per_class: Vec<(usize, usize)>,
}

impl Accuracy {
    pub fn from_predictions(pred: &[usize], gold: &[usize], num_labels: usize) -> Self {
        let mut per_class = vec![(0, 0); num_labels];
        let mut correct = 0;
        for (&p, &g) in pred.iter().zip(gold) {
            per_class[g].1 += 1;
            if p == g {
                per_class[g].0 += 1;
                correct += 1;
            }
        }
        let total = gold.len();
        Self {
            correct,
            total,
            accuracy: correct as f64 / total.max(1) as f64,
            ci95: wilson(correct, total, 1.959964),
            per_class,
        }
    }
}

/// Wilson score interval for a binomial proportion.
pub fn wilson(k: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p) = (n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}
