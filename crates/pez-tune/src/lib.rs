//! PEZ prompt tuning for text classification.

pub mod classifier;
pub mod learned;
pub mod run;

pub use classifier::{Classifier, Prefix};
pub use learned::LearnedPrompt;
pub use run::{tune, TuneConfig};
