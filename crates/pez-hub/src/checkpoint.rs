//! Hugging Face checkpoints: every `*.safetensors` file of a model directory (sharded or not) and its
//! `config.json`.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use pez_nn::weights::storage_dtype;
use pez_nn::Weights;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Every tensor of a model directory's `*.safetensors` files, converted to `dtype` on `device`.
pub fn safetensors_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Weights> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading model directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.safetensors files in {}", dir.display());
    }
    let mut tensors = HashMap::new();
    for f in &files {
        let loaded = candle_core::safetensors::load(f, device)
            .with_context(|| format!("reading safetensors file {}", f.display()))?;
        for (name, t) in loaded {
            tensors.insert(name, t.to_dtype(storage_dtype(dtype, device))?);
        }
    }
    Ok(Weights::new(tensors, dir.display().to_string(), dtype, device.clone()))
}

/// A model directory's `config.json`.
pub fn read_config<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<T> {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}
