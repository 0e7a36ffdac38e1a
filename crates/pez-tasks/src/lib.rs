//! Classification tasks: where the data is, how a row becomes (text, label), the template and verbalizers, and
//! how predictions are scored. Also the `prompt.json` artifact every other part reads.

pub mod artifact;
pub mod data;
pub mod metrics;
pub mod sources;
pub mod spec;
pub mod tune_config;

pub use artifact::PromptArtifact;
pub use data::{Dataset, Example, RowRule};
pub use spec::{Calibration, DataSource, PromptFormat, TaskSpec};
pub use tune_config::TuneConfig;
