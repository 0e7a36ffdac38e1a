//! Inference with a prompt: `<prompt><text><template>` on a causal LM -> scores of the verbalizer tokens.
//!
//! The tuner uses `Classifier` for its objective and holdout; `pez eval`, the transfer grid and the server
//! classify through `Prompted` (a learned prompt bound to a model with its prefix run once).

pub mod api;
pub mod classifier;
pub mod learned;

pub use classifier::{best_label, calibrated, Classifier, Prefix, Predictions, Prompted, CONTENT_FREE};
pub use pez_tasks::Calibration;
pub use learned::LearnedPrompt;
