//! What a tuning run is asked to do, and what it did:
//!
//! - `TuneSettings`: the settings a user gives, every one optional (`pez tune`'s flags, a sweep file's cells, a
//!   tuning job's hyperparameters), declared once from the list in `settings.rs`;
//! - `TuneSettings::resolve`: the one place defaults are filled in, from the task and the device;
//! - `TuneConfig`: the resolved configuration, checked, written into every checkpoint and `prompt.json`;
//! - `PromptArtifact`: `prompt.json`, the contract between the tuner, the evaluator, the transfer grid and the
//!   server;
//! - `EnsembleArtifact`: `ensemble.json`, several prompts scored as one classifier.

pub mod artifact;
pub mod config;
pub mod ensemble;
pub mod settings;

pub use artifact::{write_atomic, PromptArtifact};
pub use config::{Init, Invalid, TuneConfig};
pub use ensemble::{is_ensemble, Combine, EnsembleArtifact, Member, ENSEMBLE_FILE};
pub use settings::TuneSettings;

// The settings' own types, named by `for_each_setting!` wherever it is expanded.
pub use pez_core::{Method, OptimizerKind};
pub use pez_hub::tokenizer::TokenSet;
pub use pez_tasks::{Calibration, RowRule};
