//! Where models come from: short names and the folders they live in, the Hugging Face hub cache and downloads
//! (`registry`), checkpoints read into named weights (`checkpoint`: safetensors directories; `gguf`: llama.cpp
//! files, their metadata and tensor names), and tokenizers (`tokenizer`).

pub mod checkpoint;
pub mod fetch;
pub mod gguf;
pub mod registry;
pub mod tokenizer;

pub use registry::{cache_dir, models_dir, ModelSpec};
