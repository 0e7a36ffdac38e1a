//! PEZ prompt tuning for text classification: the objective on a batch, the run, best-of-N seeds (`sweep`) and
//! grids of runs for job arrays (`grid`).

pub mod grid;
pub mod objective;
pub mod run;
pub mod sweep;

pub use objective::BatchObjective;
pub use run::{extend, tune, tune_observed, Checkpoint, EvalRecord, Report, Run, RunDir};
pub use sweep::{sweep, Summary};
