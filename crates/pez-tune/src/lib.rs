//! PEZ prompt tuning for text classification.

pub mod classifier;
pub mod run;

pub use classifier::Classifier;
pub use run::{tune, TuneConfig};
