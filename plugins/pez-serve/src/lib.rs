//! `pez-serve`: learned PEZ classifiers behind an OpenAI-compatible API, on mistral.rs.
//!
//! A classifier is a `prompt.json` applied to a base model: the server builds `[bos] prompt text template`, reads
//! the next-token logits of the verbalizer tokens and answers with the label. Classification runs on pez's own
//! forward pass (the one `pez eval` uses, so labels agree), with the prompt's keys and values computed once per
//! classifier and requests batched. Plain chat and completions on a base model go to the mistral.rs engine.

pub mod api;
pub mod config;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod pool;
pub mod validate;

pub use api::{router, AppState};
pub use config::ServeConfig;
pub use pool::ClassifierPool;
