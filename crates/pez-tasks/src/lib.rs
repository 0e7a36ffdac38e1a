//! Classification tasks: where the data is, how a row becomes (text, label), the template and verbalizers, and
//! how predictions are scored.

pub mod data;
pub mod metrics;
pub mod sources;
pub mod spec;

pub use data::{Dataset, Example, RowRule};
pub use spec::{Calibration, DataSource, PromptFormat, TaskSpec};
