//! Where models come from: short names and the folders they live in (`registry`), the built-in models' files and
//! where they are fetched from (`fetch`), the cache folders and the hub's download client (`cache`), checkpoints
//! read into named weights (`checkpoint`: safetensors directories; `gguf`: llama.cpp files, their metadata and
//! tensor names), and tokenizers (`tokenizer`).

pub mod cache;
pub mod checkpoint;
pub mod fetch;
pub mod gguf;
pub mod registry;
pub mod tokenizer;

pub use cache::cache_dir;
pub use registry::{models_dir, ModelSpec};
