//! Scoring texts with a prompt: `<prompt><text><template>` on a causal LM -> scores of the verbalizer tokens.
//!
//! The tuner uses `Classifier` for its objective; everything that scores texts (tuning evaluation, `pez eval`,
//! the transfer grid, the server) goes through a `Predictor`: `Prompted` (a learned prompt bound to a model
//! in this process, its prefix run once), `Ensemble` (several of them as one classifier: a `prompt.json` or an
//! `ensemble.json`) or `endpoint::EndpointPrompt` (a model behind an HTTP endpoint).

pub mod api;
pub mod classifier;
pub mod endpoint;
pub mod ensemble;
pub mod learned;
pub mod predictor;
pub mod prompted;

pub use classifier::{best_label, calibrated, normalised, Classifier, Encoded, Prefix, CONTENT_FREE};
pub use ensemble::Ensemble;
pub use learned::LearnedPrompt;
pub use predictor::{evaluate, Evaluation, Predictor, Scored};
pub use prompted::Prompted;
