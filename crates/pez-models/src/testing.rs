//! For tests of the crates built on these models: the tiny random checkpoints in `tests/fixtures` (proven equal
//! to transformers), each made loadable by `load_lm` with a tokenizer.

use std::path::{Path, PathBuf};

/// This crate's test fixtures: the tiny checkpoints, and under `transfer/` ones with tokenizers and a task.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The directory of tiny checkpoint `name` with a tokenizer: the transfer fixtures have their own; the others
/// (vocabulary 64) are copied into `tmp` with tiny GPT-2's 26-token tokenizer beside them.
pub fn tiny_lm(tmp: &Path, name: &str) -> PathBuf {
    let own = fixtures().join("transfer").join(name);
    if own.join("tokenizer.json").exists() {
        return own;
    }
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join(name).join(f), dir.join(f)).unwrap();
    }
    std::fs::copy(
        fixtures().join("transfer/gpt2/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    dir
}
