//! PEZ prompt tuning for text classification: the configuration, the objective on a batch, and the run.

pub mod objective;
pub mod run;
pub mod sweep;

pub use objective::BatchObjective;
pub use run::{allowed_tokens, tune, Checkpoint, EvalRecord, Run};
pub use sweep::{sweep, Summary};
