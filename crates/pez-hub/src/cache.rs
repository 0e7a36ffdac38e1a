//! Where downloads are kept: pez's folder in the user's cache and the Hugging Face hub's cache, and the hub's
//! download client that writes into it.

use anyhow::Result;
use std::path::PathBuf;

/// pez's folder in the user's cache: `$XDG_CACHE_HOME/pez`, default `~/.cache/pez`.
pub fn cache_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    cache.unwrap_or_else(|| PathBuf::from(".")).join("pez")
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, `$HF_HOME/hub`, or `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> Option<PathBuf> {
    std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub")))
}

/// The hub's download client, writing into `hub_cache_dir` (where `hub_snapshot` looks).
pub fn hub_api() -> Result<hf_hub::api::sync::Api> {
    let mut b = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true);
    if let Some(d) = hub_cache_dir() {
        b = b.with_cache_dir(d);
    }
    Ok(b.build()?)
}
